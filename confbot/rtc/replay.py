"""Publish pre-encoded video into a call over WHIP, without decoding or re-encoding it.

A `ReplayVideoTrack` hands aiortc the VP8 packets of a file, looped forever with timestamps
that keep increasing, so a publisher costs almost no CPU; `bench call` runs many of them.
`aiortc.contrib.media.MediaPlayer(loop=True)` is not used: its timestamps restart at zero on
every loop, after which it sends as fast as it can read.

    python -m confbot.rtc.replay --whip http://127.0.0.1:8000/whip/CALL --count 16 video.ivf
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from confbot.errors import InputError

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000


def load_vp8_packets(path: Path) -> tuple[list[bytes], float]:
    """The VP8 packets of a video file, and its frame rate; `InputError` if it holds no VP8."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.name != "vp8":
                raise InputError(f"{path}: expected VP8 video, got {stream.codec_context.name}")
            rate = stream.average_rate or stream.guessed_rate
            packets = [bytes(p) for p in container.demux(stream) if p.size]
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: cannot read the video ({exc})") from exc
    if not packets:
        raise InputError(f"{path}: no video packets")
    return packets, float(rate) if rate else 15.0


class ReplayVideoTrack(MediaStreamTrack):
    """Loops encoded packets at `fps`, in real time, with ever-increasing timestamps."""

    kind = "video"

    def __init__(self, packets: Sequence[bytes], fps: float) -> None:
        super().__init__()
        self._packets = list(packets)
        self._fps = fps
        self._index = 0
        self._start: float | None = None
        self.sent_at: dict[int, float] = {}

    async def recv(self) -> Any:
        import av

        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._index / self._fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._packets[self._index % len(self._packets)])
        packet.pts = round(self._index * VIDEO_CLOCK / self._fps)
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._index += 1
        return packet


@dataclass
class WhipPublisher:
    """One publisher: a peer connection sending a `ReplayVideoTrack` to a WHIP endpoint."""

    pc: RTCPeerConnection
    resource_url: str | None = None

    @classmethod
    async def connect(cls, client: httpx.AsyncClient, endpoint: str, packets: Sequence[bytes],
                      fps: float, *, connect_timeout_s: float = 30.0) -> WhipPublisher:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        publisher = cls(pc)
        try:
            pc.addTransceiver(ReplayVideoTrack(packets, fps), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            response = await client.post(endpoint, content=pc.localDescription.sdp,
                                         headers={"Content-Type": "application/sdp"})
            if response.status_code != 201:
                raise InputError(f"WHIP endpoint {endpoint} answered {response.status_code}: "
                                 f"{response.text[:200]}")
            location = response.headers.get("location")
            publisher.resource_url = urljoin(endpoint, location) if location else None
            await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            deadline = time.monotonic() + connect_timeout_s
            while pc.connectionState != "connected":
                if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                    raise InputError(f"WHIP publisher to {endpoint}: connection {pc.connectionState}")
                await asyncio.sleep(0.05)
        except BaseException:
            await pc.close()
            raise
        return publisher

    async def close(self, client: httpx.AsyncClient) -> None:
        if self.resource_url:
            with contextlib.suppress(httpx.HTTPError):
                await client.delete(self.resource_url)
        await self.pc.close()


async def publish_many(endpoint: str, video: Path, count: int, *, ready: asyncio.Event | None = None,
                       stop: asyncio.Event) -> None:
    """Run `count` publishers of `video` into `endpoint` until `stop` is set."""
    packets, fps = load_vp8_packets(video)
    async with httpx.AsyncClient(timeout=30) as client:
        publishers: list[WhipPublisher] = []
        try:
            for i in range(count):
                url = f"{endpoint}{'&' if '?' in endpoint else '?'}name=publisher-{i + 1}"
                publishers.append(await WhipPublisher.connect(client, url, packets, fps))
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await asyncio.gather(*(p.close(client) for p in publishers), return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish a VP8 file over WHIP, looped, without re-encoding.")
    parser.add_argument("--whip", required=True, help="WHIP endpoint URL")
    parser.add_argument("--count", type=int, default=1, help="number of publishers")
    parser.add_argument("--ice-address", action="append", default=[], help="gather only this address")
    parser.add_argument("video", type=Path)
    args = parser.parse_args(argv)
    if args.ice_address:
        from confbot.rtc.ice import restrict_host_candidates

        restrict_host_candidates(args.ice_address)

    async def run() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(publish_many(args.whip, args.video, args.count, ready=ready, stop=stop))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if ready.is_set():
            print(f"READY {args.count}", flush=True)
        await task

    try:
        asyncio.run(run())
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
