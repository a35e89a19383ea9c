"""A real `confbot serve` in its own process, on 127.0.0.1, with a temporary SQLite database.

    server = ConfbotServer(tmp_path, ice_address="127.0.0.1")
    server.start()               # waits until /healthz answers
    server.url                   # "http://127.0.0.1:PORT"
    server.create_call(...)      # POST /api/calls; returns the JSON answer
    server.stop()                # SIGTERM: the server ends its calls and flushes its writer

The `ice_address` is the one local address the bot's WebRTC gathers (see tests/support/ice.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def auto_model_file() -> str:
    """The emotion model file a server with the default `[model] manifest = "auto"` runs on
    this machine: the lite model where the CPU is known to lack an 8-bit dot product, the micro
    one where the lite one is timed over budget here."""
    from confbot.vision import configured_manifest

    return configured_manifest("auto").with_suffix(".tflite").name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ConfbotServer:
    def __init__(self, workdir: Path, *, ice_address: str, sample_fps: float = 2.0,
                 extra_toml: str = "", database_url: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = workdir / "confbot.db"
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.config_path = workdir / "confbot.toml"
        self.config_path.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n\n'
            f'[database]\nurl = "{self.database_url}"\n\n'
            f'[pipeline]\nsample_fps = {sample_fps}\n\n'
            f'[rtc]\nice_host_addresses = ["{ice_address}"]\n\n{extra_toml}'
        )
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "confbot", "serve", "--config", str(self.config_path)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"confbot serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"confbot serve did not answer /healthz in {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def create_call(self, **body: Any) -> dict[str, Any]:
        body.setdefault("title", "test call")
        response = httpx.post(f"{self.url}/api/calls", json=body, timeout=15)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def api(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=15, **kwargs)


class FeedRecorder:
    """Collects a call's feed messages in a background thread (a real `websockets` client)."""

    def __init__(self, ws_url: str, token: str, *, since_ms: int | None = None) -> None:
        self.url = f"{ws_url}?token={token}" + (f"&since_ms={since_ms}" if since_ms is not None else "")
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        try:
            with connect(self.url, open_timeout=10, close_timeout=2) as ws:
                while not self._stop.is_set():
                    try:
                        raw = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    with self._lock:
                        self.messages.append(json.loads(raw))
                ws.close()
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
        except BaseException as exc:  # reported by the test
            self.error = exc

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: Any, timeout_s: float) -> list[dict[str, Any]]:
        """Wait until `predicate(messages)` is true; returns the messages, or raises with a summary."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            if self.error is not None or not self._thread.is_alive():
                break
            time.sleep(0.25)
        messages = self.snapshot()
        kinds: dict[str, int] = {}
        for m in messages:
            kinds[m.get("type", "?")] = kinds.get(m.get("type", "?"), 0) + 1
        raise AssertionError(f"feed condition not met in {timeout_s} s; got {kinds}, "
                             f"close={self.close_code} {self.close_reason!r}, error={self.error!r}")

    def join(self, timeout_s: float) -> None:
        """Wait for the server to close the connection."""
        self._thread.join(timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def top_emotions(messages: list[dict[str, Any]], participant_id: str) -> dict[str, int]:
    """How often each emotion was on top in the participant's sample messages."""
    counts: dict[str, int] = {}
    for m in messages:
        if m.get("type") == "sample" and m.get("participant_id") == participant_id:
            counts[m["top_emotion"]] = counts.get(m["top_emotion"], 0) + 1
    return counts
