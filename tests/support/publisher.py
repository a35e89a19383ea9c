"""A publisher in its own process: sends a video file, looped, into a Janus room or a WHIP endpoint.

    .venv/bin/python -m tests.support.publisher --janus http://127.0.0.1:8088/janus --room 1234 \\
        --display "Alice" [--pin PIN] [--ice-address IP] [--silent] VIDEO
    .venv/bin/python -m tests.support.publisher --whip http://127.0.0.1:8000/whip/CALL \\
        [--bearer TOKEN] [--ice-address IP] [--silent] VIDEO

It prints `READY <id>` on stdout once its PeerConnection is connected (`<id>` is the Janus feed
id, or the WHIP resource URL), and leaves cleanly on SIGTERM or SIGINT: a Janus `leave` plus
session destroy, or a WHIP `DELETE` of the resource. Errors go to stderr with exit status 1.

VP8 or H.264 files (IVF, WebM, MP4) are sent as they are, packet by packet, without decoding
or re-encoding, so a publisher costs almost no CPU; other files (y4m, ...) are decoded once into
memory and encoded by aiortc. `aiortc.contrib.media.MediaPlayer(loop=True)` is not used because
its timestamps restart at zero on every loop, after which it sends as fast as it can read.

With `--silent` it connects and publishes a video track but never sends a frame (a camera that
is on but delivers nothing). Its PeerConnections use no STUN server: host candidates only
(with `--ice-address`, on that one address).

Tests start it with `PublisherProcess.janus(...)` or `PublisherProcess.whip(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

REPO = Path(__file__).resolve().parents[2]
VIDEO_CLOCK = 90_000
PASSTHROUGH_CODECS = ("vp8", "h264")
MAX_DECODED_FRAMES = 600


# --------------------------------------------------------------------------- the media track


def _load_media(path: Path) -> tuple[list[Any], float, bool]:
    """(packets or frames, frames per second, is_packets) read from a video file."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise SystemExit(f"error: {path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.codec_context.framerate
        fps = float(rate) if rate else 15.0
        if stream.codec_context.name in PASSTHROUGH_CODECS:
            items: list[Any] = [bytes(p) for p in container.demux(stream) if p.size]
            return items, fps, True
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.reformat(format="yuv420p"))
            if len(frames) >= MAX_DECODED_FRAMES:
                break
        return frames, fps, False


def looped_track(path: Path) -> Any:
    """A video MediaStreamTrack that plays `path` forever at its frame rate, with timestamps
    that keep increasing across loops."""
    import av
    from aiortc.mediastreams import MediaStreamTrack

    items, fps, is_packets = _load_media(path)
    if not items:
        raise SystemExit(f"error: {path}: no video frames")
    time_base = fractions.Fraction(1, VIDEO_CLOCK)
    step = VIDEO_CLOCK / fps

    class LoopedVideoTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self._index = 0
            self._start: float | None = None

        async def recv(self) -> Any:
            if self._start is None:
                self._start = time.monotonic()
            due = self._start + self._index / fps
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            item = items[self._index % len(items)]
            pts = round(self._index * step)
            self._index += 1
            out: Any
            if is_packets:
                out = av.Packet(item)
            else:
                out = av.VideoFrame.from_ndarray(item.to_ndarray(), format="yuv420p")
            out.pts = pts
            out.time_base = time_base
            return out

    return LoopedVideoTrack()


def silent_track() -> Any:
    """A video MediaStreamTrack that never delivers a frame (until it is stopped)."""
    from tests.confbot.pipeline.support import SilentTrack

    return SilentTrack()


def _video_track(args: argparse.Namespace) -> Any:
    return silent_track() if args.silent else looped_track(Path(args.video))


def _peer_connection() -> Any:
    """A PeerConnection with no STUN server: only host candidates, nothing sent off the machine."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


# --------------------------------------------------------------------------- Janus


class _JanusClient:
    """The few Janus HTTP API calls a publisher needs, written out plainly."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=45.0))
        self.session_id: int | None = None
        self.handle_id: int | None = None
        self._events: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or uuid.uuid4().hex}
        response = await self.http.post(f"{self.url}{path}", json=body)
        response.raise_for_status()
        reply: dict[str, Any] = response.json()
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus error: {reply.get('error')}")
        return reply

    async def open(self) -> None:
        reply = await self._post("", {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        reply = await self._post(
            f"/{self.session_id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        self.handle_id = int(reply["data"]["id"])
        self._tasks.append(asyncio.create_task(self._poll()))
        self._tasks.append(asyncio.create_task(self._keepalive()))

    async def _poll(self) -> None:
        while True:
            try:
                response = await self.http.get(f"{self.url}/{self.session_id}", params={"maxev": 5})
                events = response.json()
            except Exception as exc:  # Janus gone: nothing more will come
                for waiter in self._events.values():
                    if not waiter.done():
                        waiter.set_exception(RuntimeError(f"janus long-poll failed: {exc}"))
                return
            for event in events if isinstance(events, list) else [events]:
                future = self._events.get(str(event.get("transaction")))
                if future is not None and not future.done() and event.get("janus") == "event":
                    future.set_result(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(25)
            with contextlib.suppress(Exception):
                await self._post(f"/{self.session_id}", {"janus": "keepalive"})

    async def request(
        self, body: dict[str, Any], jsep: dict[str, Any] | None = None, timeout_s: float = 15.0
    ) -> dict[str, Any]:
        """Send an asynchronous VideoRoom request and return its event."""
        transaction = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._events[transaction] = future
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            await self._post(f"/{self.session_id}/{self.handle_id}", message)
            event = await asyncio.wait_for(future, timeout_s)
        finally:
            self._events.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error_code" in data:
            raise RuntimeError(f"videoroom error {data['error_code']}: {data.get('error')}")
        return event

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.session_id is not None:
            with contextlib.suppress(Exception):
                await self._post(f"/{self.session_id}", {"janus": "destroy"})
        await self.http.aclose()


async def publish_janus(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from aiortc import RTCSessionDescription

    client = _JanusClient(args.janus)
    pc = _peer_connection()
    try:
        await client.open()
        join: dict[str, Any] = {
            "request": "join", "ptype": "publisher", "room": args.room, "display": args.display,
        }
        if args.pin:
            join["pin"] = args.pin
        joined = await client.request(join)
        feed_id = joined["plugindata"]["data"]["id"]
        pc.addTransceiver(_video_track(args), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False}
        event = await client.request({"request": "publish", "audio": False, "video": True}, offer)
        answer = event.get("jsep")
        if not answer:
            raise RuntimeError(f"janus sent no SDP answer: {event}")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await _wait_connected(pc, stop)
        print(f"READY {feed_id}", flush=True)
        await stop.wait()
        with contextlib.suppress(Exception):
            await client.request({"request": "leave"}, timeout_s=3.0)
    finally:
        await pc.close()
        await client.close()


# --------------------------------------------------------------------------- WHIP


async def publish_whip(args: argparse.Namespace, stop: asyncio.Event) -> None:
    import httpx
    from aiortc import RTCSessionDescription

    headers = {"Content-Type": "application/sdp"}
    if args.bearer:
        headers["Authorization"] = f"Bearer {args.bearer}"
    pc = _peer_connection()
    location: str | None = None
    async with httpx.AsyncClient(timeout=15.0) as http:
        try:
            pc.addTransceiver(_video_track(args), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            response = await http.post(args.whip, content=pc.localDescription.sdp, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(
                    f"WHIP POST {args.whip}: expected 201, got {response.status_code}: "
                    f"{response.text[:300]}"
                )
            if "location" not in response.headers:
                raise RuntimeError(f"WHIP POST {args.whip}: 201 without a Location header")
            location = urljoin(args.whip, response.headers["location"])
            await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            await _wait_connected(pc, stop)
            print(f"READY {location}", flush=True)
            await stop.wait()
        finally:
            await pc.close()
            if location is not None:
                auth = {k: v for k, v in headers.items() if k == "Authorization"}
                with contextlib.suppress(httpx.HTTPError):
                    await http.delete(location, headers=auth)


async def _wait_connected(pc: Any, stop: asyncio.Event, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise RuntimeError(f"PeerConnection {pc.connectionState}")
        if stop.is_set():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"PeerConnection not connected after {timeout_s} s")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.publisher", description=__doc__.split("\n\n")[0]
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--janus", metavar="URL", help="Janus HTTP API root, e.g. .../janus")
    target.add_argument("--whip", metavar="URL", help="WHIP endpoint to POST the offer to")
    parser.add_argument("--room", type=int, help="Janus VideoRoom id (with --janus)")
    parser.add_argument("--pin", help="Janus room pin")
    parser.add_argument("--display", default="publisher", help="display name in the Janus room")
    parser.add_argument("--bearer", help="Bearer token for the WHIP endpoint")
    parser.add_argument(
        "--ice-address", metavar="IP", help="gather only a host ICE candidate on this address"
    )
    parser.add_argument(
        "--silent", action="store_true", help="publish a video track but never send a frame"
    )
    parser.add_argument("video", help="video file to send in a loop (VP8 IVF/WebM, y4m, ...)")
    args = parser.parse_args(argv)
    if args.janus and args.room is None:
        parser.error("--janus needs --room")
    if not Path(args.video).is_file():
        parser.error(f"video file not found: {args.video}")
    return args


async def amain(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.janus:
        await publish_janus(args, stop)
    else:
        await publish_whip(args, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ice_address:
        from tests.support.ice import pin_ice_address

        pin_ice_address(args.ice_address)
    try:
        asyncio.run(amain(args))
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


# --------------------------------------------------------------------------- for tests


class PublisherProcess:
    """A running `python -m tests.support.publisher`; started by `janus()` or `whip()`."""

    def __init__(self, argv: list[str], *, ready_timeout_s: float = 30.0) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )}
        self.argv = argv
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.publisher", *argv],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        self.ready_id = self._wait_ready(ready_timeout_s)

    @classmethod
    def janus(
        cls, url: str, room: int, display: str, video: Path, *, pin: str | None = None,
        ice_address: str | None = None, silent: bool = False, ready_timeout_s: float = 30.0,
    ) -> PublisherProcess:
        """Publish `video` (or, with `silent`, a track without frames) into Janus `room` as
        `display`; returns once connected, with the Janus feed id as `ready_id`."""
        argv = ["--janus", url, "--room", str(room), "--display", display]
        if pin:
            argv += ["--pin", pin]
        if silent:
            argv.append("--silent")
        if ice_address:
            argv += ["--ice-address", ice_address]
        return cls([*argv, str(video)], ready_timeout_s=ready_timeout_s)

    @classmethod
    def whip(
        cls, url: str, video: Path, *, bearer: str | None = None, ice_address: str | None = None,
        silent: bool = False, ready_timeout_s: float = 30.0,
    ) -> PublisherProcess:
        """POST an offer for `video` (or, with `silent`, a track without frames) to the WHIP
        endpoint `url`; returns once connected, with the resource URL as `ready_id`."""
        argv = ["--whip", url]
        if silent:
            argv.append("--silent")
        if bearer:
            argv += ["--bearer", bearer]
        if ice_address:
            argv += ["--ice-address", ice_address]
        return cls([*argv, str(video)], ready_timeout_s=ready_timeout_s)

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip())
            del self._stderr[:-50]

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr[-20:])

    def _wait_ready(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise RuntimeError(f"publisher not ready after {timeout_s} s:\n{self.stderr_tail}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait()
                time.sleep(0.1)  # let the stderr pump finish
                raise RuntimeError(f"publisher exited with {code}:\n{self.stderr_tail}")
            if line.startswith("READY "):
                return line.removeprefix("READY ")

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM (the publisher leaves cleanly) and wait; SIGKILL after `timeout_s`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> PublisherProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


if __name__ == "__main__":
    sys.exit(main())
