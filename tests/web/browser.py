"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and a real `confbot serve`.

Import the fixtures into a test module (`from tests.web.browser import ...  # noqa: F401`):

- `chromium`: one headless Chromium (Debian's /usr/bin/chromium, or $CONFBOT_CHROMIUM) for the
  session. Its fake camera plays `fake_camera_y4m` (a real smiling face). No page gets the camera
  unless its context was made with `camera=True`; every other permission prompt is refused, which
  is what a participant who says "no" looks like. Skips, saying why, without Chromium or Playwright.
- `web_server`: `confbot serve` in its own process on 127.0.0.1 with a temporary SQLite database
  and config (tests/support/server.py), for the whole session.
- `screenshots`: the folder screenshots go to: $CONFBOT_SCREENSHOT_DIR, or a pytest temp folder.
- `open_page(context_kind, url)`: see `PageOpener`.

Network: every page talks HTTP and websocket to 127.0.0.1 only. For WebRTC, Chromium runs with the
`default_public_interface_only` IP handling policy, under which it binds its ICE socket to the any
address and lists no interface address in its offer; `PIN_ICE_SCRIPT` then puts the single local
test address (10.231.0.1 on the veth of tests/support/ice.py) into the offer the page POSTs. Both
sides thus exchange media over that address only, and no packet is ever sent to the host's real
interfaces (aiortc would otherwise answer checks from every address Chromium offers).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ConfbotServer

CHROMIUM = Path(os.environ.get("CONFBOT_CHROMIUM", "/usr/bin/chromium"))
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
SERVER_START_TIMEOUT_S = 90.0

# Keeps the page's own ICE candidates out of the WHIP offer and lists the test's one address
# instead, on the port of Chromium's any-address UDP socket (read from getStats()). The page's
# code is unchanged: the offer is rewritten in fetch() on its way out.
PIN_ICE_SCRIPT = """
(() => {
  const ICE_ADDRESS = %s;
  const NativePC = window.RTCPeerConnection;
  const created = [];
  window.RTCPeerConnection = class extends NativePC {
    constructor(...args) { super(...args); created.push(this); }
  };
  async function pinned(sdp) {
    const pc = created[created.length - 1];
    let port = null;
    (await pc.getStats()).forEach((r) => {
      const address = String(r.address || r.ip || "");
      if (r.type === "local-candidate" && r.protocol === "udp" && r.candidateType === "host"
          && !address.includes(":")) port = r.port;
    });
    if (port === null) throw new Error("test harness: Chromium has no IPv4 UDP host candidate");
    const lines = sdp.split("\\r\\n").filter((l) => l && !l.startsWith("a=candidate:")
      && l !== "a=end-of-candidates");
    lines.push(`a=candidate:1 1 udp 2122260223 ${ICE_ADDRESS} ${port} typ host`, "a=end-of-candidates");
    return lines.join("\\r\\n") + "\\r\\n";
  }
  const nativeFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    if (init && init.method === "POST" && typeof init.body === "string" && init.body.startsWith("v=0")) {
      init = { ...init, body: await pinned(init.body) };
    }
    return nativeFetch(input, init);
  };
})();
"""

def browser_skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install chromium, "
                f"listed in .ci/apt-packages.txt) or set CONFBOT_CHROMIUM")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[test]')"
    return None


def launch_args(fake_camera: Path) -> list[str]:
    """Chromium's command line for the tests (never Playwright's own browser download)."""
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--webrtc-ip-handling-policy=default_public_interface_only",
        # Contexts get the camera through grant_permissions(); any other prompt is refused.
        "--deny-permission-prompts",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={fake_camera}",
    ]


@pytest.fixture(scope="session")
def fake_camera_y4m(media_cache_dir: Path) -> Path:
    """The fake camera's video: a real smiling face (see tests/support/y4m.py)."""
    pytest.importorskip("skimage", reason="scikit-image supplies the face of the fake camera")
    from tests.support.y4m import astronaut_y4m

    return astronaut_y4m(media_cache_dir)


@pytest.fixture(scope="session")
def chromium(fake_camera_y4m: Path) -> Iterator[Any]:
    """A headless Chromium (a Playwright `Browser`) for the session."""
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=launch_args(fake_camera_y4m))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def web_ice_address() -> str:
    """The address the bot's WebRTC uses: the test veth's when it is there, else loopback
    (enough for every page but the room's media)."""
    from tests.support.ice import IceLinkError, ensure_ice_link

    with contextlib.suppress(IceLinkError, OSError):
        return ensure_ice_link()
    return "127.0.0.1"


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory, web_ice_address: str) -> Iterator[ConfbotServer]:
    """`confbot serve` on 127.0.0.1 with a temporary SQLite database, for the session."""
    if browser_skip_reason():
        pytest.skip(browser_skip_reason() or "")
    server = ConfbotServer(tmp_path_factory.mktemp("web-server"), ice_address=web_ice_address)
    try:
        server.start(timeout_s=SERVER_START_TIMEOUT_S)
    except BaseException:
        server.stop()  # a server that never answered must not outlive the session
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save screenshots: $CONFBOT_SCREENSHOT_DIR, or a pytest temp folder."""
    chosen = os.environ.get("CONFBOT_SCREENSHOT_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class PageLog:
    """What a page reported: console errors and uncaught exceptions (CSP violations included)."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _console(self, message: Any) -> None:
        url = str((message.location or {}).get("url", ""))
        # Chromium asks every server for /favicon.ico; the pages have none, and that is fine.
        if message.type == "error" and not url.endswith("/favicon.ico"):
            self.errors.append(f"console {message.type}: {message.text} ({url})")

    def unexpected(self, *allowed: str) -> list[str]:
        """The errors that contain none of the `allowed` substrings."""
        return [e for e in self.errors if not any(a in e for a in allowed)]


@dataclass
class FeedTap:
    """Passes a page's feed websockets through, records them, and can cut them like a network would.

    Callbacks run while the test is inside a Playwright call: wait with `page.wait_for_timeout()`,
    not `time.sleep()`, so that messages keep flowing.
    """

    urls: list[str] = field(default_factory=list)
    # (connection number from 1, message type, t_ms) of every message the server sent
    received: list[tuple[int, str, int | None]] = field(default_factory=list)
    down: bool = False
    _open: list[Any] = field(default_factory=list)

    def route(self, ws: Any) -> None:
        self.urls.append(ws.url)
        number = len(self.urls)
        if self.down:
            ws.close(code=1011, reason="test: the network is down")
            return
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            with contextlib.suppress(ValueError, AttributeError):
                data = json.loads(message)
                self.received.append((number, str(data.get("type")), data.get("t_ms")))
            ws.send(message)

        server.on_message(from_server)
        ws.on_message(server.send)
        self._open.append(ws)

    def cut(self) -> None:
        """Close every open feed connection (1011) and refuse new ones until `restore()`."""
        self.down = True
        for ws in self._open:
            with contextlib.suppress(Exception):  # already closed by the page or the server
                ws.close(code=1011, reason="test: the network is down")
        self._open.clear()

    def restore(self) -> None:
        self.down = False

    def sample_times(self, connection: int) -> list[int]:
        """The t_ms of the samples connection `connection` (from 1) delivered."""
        return [t for n, kind, t in self.received if n == connection and kind == "sample" and t is not None]


@dataclass
class PageOpener:
    """Opens pages in fresh browser contexts and closes them all at the end of the test."""

    browser: Any
    server: ConfbotServer
    screenshot_dir: Path
    _contexts: list[Any] = field(default_factory=list)

    def __call__(self, url: str, *, phone: bool = False, camera: bool = False,
                 pin_ice: str | None = None, feed_tap: FeedTap | None = None) -> tuple[Any, PageLog]:
        """A new page (in its own context) at `url`, relative to the server; returns (page, log).

        `camera`: the page may use the (fake) camera; `pin_ice`: the one address its WebRTC offers
        (see PIN_ICE_SCRIPT); `feed_tap`: the page's websockets go through that tap.
        """
        options: dict[str, Any] = dict(PHONE if phone else DESKTOP)
        context = self.browser.new_context(base_url=self.server.url, **options)
        self._contexts.append(context)
        context.set_default_timeout(15_000)
        if camera:
            context.grant_permissions(["camera"], origin=self.server.url)
        if pin_ice:
            context.add_init_script(PIN_ICE_SCRIPT % json.dumps(pin_ice))
        page = context.new_page()
        log = PageLog()
        log.attach(page)
        if feed_tap is not None:
            page.route_web_socket(re.compile(r"/feed\b"), feed_tap.route)
        page.goto(url)
        return page, log

    def shot(self, page: Any, name: str, *, full_page: bool = True) -> Path:
        """Save a screenshot of `page` as NAME.png in the screenshot folder; returns its path."""
        path = self.screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        for context in self._contexts:
            with contextlib.suppress(Exception):  # a context may already be gone with its browser
                context.close()
        self._contexts.clear()


@pytest.fixture
def open_page(chromium: Any, web_server: ConfbotServer, screenshots: Path) -> Iterator[PageOpener]:
    """A `PageOpener` on the session's browser and server; its contexts close after the test."""
    opener = PageOpener(chromium, web_server, screenshots)
    try:
        yield opener
    finally:
        opener.close()


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll `predicate` until it is true or `timeout_s` passes; returns its last value."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)

