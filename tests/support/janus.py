"""A real Janus for tests: its own configuration in a temporary folder, bound to 127.0.0.1.

Janus comes from Debian's package (`apt-get install janus`). The stock configuration in
/etc/janus listens on every interface, so `JanusServer` writes its own: only the HTTP transport
(on a free port of 127.0.0.1), only the VideoRoom plugin, ICE restricted to one local address,
no event handlers, no admin API. Rooms are written into the VideoRoom configuration.

Janus (libnice) gathers no ICE candidate on the loopback interface, so its media uses the
local veth address the `ice_address` fixture provides (10.231.0.1 on `cbice0`, see
tests/support/ice.py); that traffic never leaves the kernel. The aiortc side of a test must
gather that same address only (the `pinned_ice` fixture, or `--ice-address` for the publisher
process).

Use it through the `janus_server` fixture (a fresh Janus per test), or directly:

    server = JanusServer(tmp_path, ice_address=ice_address, rooms={1234: JanusRoom(pin="s3cret")})
    server.start()        # waits until GET /janus/info answers
    ... server.url ...    # "http://127.0.0.1:PORT/janus"
    server.kill()         # SIGKILL, as in a crash; server.start() again reuses the same port
    server.stop()

To use the fixtures in another test folder, import them in that folder's conftest.py:
`from tests.support.ice import ice_address, pinned_ice` and
`from tests.support.janus import janus_server` (janus_server needs ice_address).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

JANUS_BIN = Path("/usr/bin/janus")  # CONFBOT_JANUS_BIN overrides it
JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
DEFAULT_ROOM = 1234
PIN_ROOM = 4321
PIN = "letmein"

# Everything shipped in /usr/lib/.../janus that we do not want loaded.
_DISABLED_PLUGINS = [
    "libjanus_audiobridge.so", "libjanus_duktape.so", "libjanus_echotest.so", "libjanus_lua.so",
    "libjanus_nosip.so", "libjanus_recordplay.so", "libjanus_sip.so", "libjanus_streaming.so",
    "libjanus_textroom.so", "libjanus_videocall.so", "libjanus_voicemail.so",
]
_DISABLED_TRANSPORTS = [
    "libjanus_websockets.so", "libjanus_pfunix.so", "libjanus_mqtt.so", "libjanus_nanomsg.so",
    "libjanus_rabbitmq.so",
]
_DISABLED_EVENTS = [
    "libjanus_gelfevh.so", "libjanus_mqttevh.so", "libjanus_nanomsgevh.so",
    "libjanus_rabbitmqevh.so", "libjanus_sampleevh.so", "libjanus_wsevh.so",
]


@dataclass(frozen=True, kw_only=True)
class JanusRoom:
    description: str = "confbot test room"
    pin: str | None = None
    publishers: int = 20
    bitrate: int = 512_000
    videocodec: str = "vp8"
    fir_freq: int = 2  # keyframe requests every 2 s, so late subscribers start quickly


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def janus_bin() -> Path:
    """The Janus executable: $CONFBOT_JANUS_BIN, else Debian's /usr/bin/janus."""
    return Path(os.environ.get("CONFBOT_JANUS_BIN") or JANUS_BIN)


def janus_available() -> str | None:
    """None when Janus can run here, else the reason it cannot."""
    binary = janus_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"janus not installed ({binary} missing): apt-get install janus"
    if not (JANUS_LIB / "plugins" / "libjanus_videoroom.so").is_file():
        return f"janus VideoRoom plugin missing under {JANUS_LIB}: apt-get install janus"
    return None


def _list(names: list[str]) -> str:
    return ",".join(names)


class JanusServer:
    """One Janus process with its own configuration under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        ice_address: str,
        rooms: Mapping[int, JanusRoom] | None = None,
        http_port: int | None = None,
        rtp_port_range: tuple[int, int] = (0, 0),
        session_timeout_s: int = 60,
        debug_level: int = 4,
    ) -> None:
        self.workdir = Path(workdir)
        self.ice_address = ice_address
        self.config_dir = self.workdir / "etc"
        self.log_path = self.workdir / "janus.log"
        self.rooms = dict(rooms) if rooms is not None else {
            DEFAULT_ROOM: JanusRoom(),
            PIN_ROOM: JanusRoom(description="confbot pin room", pin=PIN),
        }
        self.http_port = http_port or free_tcp_port()
        self.rtp_port_range = rtp_port_range
        self.session_timeout_s = session_timeout_s
        self.debug_level = debug_level
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def url(self) -> str:
        """The Janus HTTP API root, e.g. http://127.0.0.1:40123/janus."""
        return f"http://127.0.0.1:{self.http_port}/janus"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        low, high = self.rtp_port_range
        rtp_range = f'\trtp_port_range = "{low}-{high}"\n' if low and high else ""
        (self.config_dir / "janus.jcfg").write_text(
            "general: {\n"
            f'\tconfigs_folder = "{self.config_dir}"\n'
            f'\tplugins_folder = "{JANUS_LIB / "plugins"}"\n'
            f'\ttransports_folder = "{JANUS_LIB / "transports"}"\n'
            f'\tevents_folder = "{JANUS_LIB / "events"}"\n'
            f'\tloggers_folder = "{JANUS_LIB / "loggers"}"\n'
            f"\tdebug_level = {self.debug_level}\n"
            "\tdebug_colors = false\n"
            "\tdebug_timestamps = true\n"
            f"\tsession_timeout = {self.session_timeout_s}\n"
            '\tinterface = "127.0.0.1"\n'
            '\tserver_name = "confbot-test-janus"\n'
            "}\n"
            "certificates: {\n}\n"
            f"media: {{\n\tipv6 = false\n{rtp_range}}}\n"
            # Host candidates on one local address only; no STUN, no mDNS.
            f'nat: {{\n\tice_enforce_list = "{self.ice_address}"\n\tignore_mdns = true\n}}\n'
            f'plugins: {{\n\tdisable = "{_list(_DISABLED_PLUGINS)}"\n}}\n'
            f'transports: {{\n\tdisable = "{_list(_DISABLED_TRANSPORTS)}"\n}}\n'
            'loggers: {\n\tdisable = "libjanus_jsonlog.so"\n}\n'
            f'events: {{\n\tbroadcast = false\n\tdisable = "{_list(_DISABLED_EVENTS)}"\n}}\n'
        )
        (self.config_dir / "janus.transport.http.jcfg").write_text(
            "general: {\n"
            '\tjson = "plain"\n'
            '\tbase_path = "/janus"\n'
            "\thttp = true\n"
            f"\tport = {self.http_port}\n"
            '\tip = "127.0.0.1"\n'
            "\thttps = false\n"
            "}\n"
            "admin: {\n\tadmin_http = false\n\tadmin_https = false\n}\n"
            "cors: {\n}\n"
        )
        rooms = []
        for room_id, room in self.rooms.items():
            pin = f'\tpin = "{room.pin}"\n' if room.pin else ""
            rooms.append(
                f"room-{room_id}: {{\n"
                f'\tdescription = "{room.description}"\n'
                f"{pin}"
                f"\tpublishers = {room.publishers}\n"
                f"\tbitrate = {room.bitrate}\n"
                f"\tfir_freq = {room.fir_freq}\n"
                f'\tvideocodec = "{room.videocodec}"\n'
                "\trecord = false\n"
                "}\n"
            )
        (self.config_dir / "janus.plugin.videoroom.jcfg").write_text(
            "general: {\n}\n" + "".join(rooms)
        )

    def start(self, timeout_s: float = 15.0) -> None:
        """Start Janus and wait until `GET /janus/info` answers; raise RuntimeError if not."""
        if self.running:
            return
        reason = janus_available()
        if reason:
            raise RuntimeError(reason)
        self.write_config()
        log = self.log_path.open("ab")
        self._log_file = log
        self._process = subprocess.Popen(
            [str(janus_bin()), "-F", str(self.config_dir), "--interface=127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"janus exited with {self._process.returncode} while starting:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.url}/info", timeout=1.0)
                if response.status_code == 200 and response.json().get("janus") == "server_info":
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"janus did not answer {self.url}/info in {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if Janus has not exited after `timeout_s`."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL, as if Janus crashed."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        self._close_log()

    def _close_log(self) -> None:
        log, self._log_file = self._log_file, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    def videoroom_request(self, body: dict[str, object]) -> dict[str, object]:
        """Send one synchronous VideoRoom request (list, listparticipants, kick, destroy, ...)
        on a throwaway session; return the plugin's data."""
        with httpx.Client(base_url=self.url, timeout=5.0) as http:
            session = http.post("", json={"janus": "create", "transaction": "t1"}).json()["data"]["id"]
            try:
                handle = http.post(
                    f"/{session}",
                    json={"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "t2"},
                ).json()["data"]["id"]
                reply = http.post(f"/{session}/{handle}", json={
                    "janus": "message", "transaction": "t3", "body": body,
                }).json()
            finally:
                http.post(f"/{session}", json={"janus": "destroy", "transaction": "t4"})
        data: dict[str, object] = reply["plugindata"]["data"]
        return data

    def list_participants(self, room: int = DEFAULT_ROOM) -> list[dict[str, object]]:
        """Janus's own list of the room's participants: id, display, publisher (bool)."""
        data = self.videoroom_request({"request": "listparticipants", "room": room})
        participants: list[dict[str, object]] = data["participants"]  # type: ignore[assignment]
        return participants

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no janus log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> JanusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def janus_server(tmp_path_factory: pytest.TempPathFactory, ice_address: str) -> Iterator[JanusServer]:
    """A fresh Janus (API on 127.0.0.1) with rooms DEFAULT_ROOM (no pin) and PIN_ROOM (pin PIN).

    Skips, saying why, when Janus is not installed or the local ICE link cannot be made.
    """
    reason = janus_available()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("janus")
    server = JanusServer(workdir, ice_address=ice_address)
    server.start()
    try:
        yield server
    finally:
        server.stop()
