"""Test parts for the pipeline: real aiortc tracks that produce real av frames, and a stub analyzer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from face_core.analyzer import FaceStream
from face_core.emotions import EMOTIONS
from face_core.smooth import ScoreSmoother
from face_core.track import FaceTracker
from face_core.types import Box, FaceResult

TIME_BASE = Fraction(1, 90_000)


def video_frame(value: int, *, width: int = 64, height: int = 48, pts: int = 0) -> av.VideoFrame:
    """A uniform bgr24 frame whose pixels all equal `value` (so a stub can tell frames apart)."""
    frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), value, np.uint8), format="bgr24")
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


def photo_frame(bgr: np.ndarray, *, pts: int = 0) -> av.VideoFrame:
    """A photo as a decoder would hand it over: yuv420p."""
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class QueueTrack(MediaStreamTrack):
    """A video track whose frames the test pushes one by one; `end()` ends it."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def push(self, frame: Any) -> None:
        self._queue.put_nowait(frame)

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        if isinstance(item, Exception):
            raise item
        return item


class GeneratedTrack(MediaStreamTrack):
    """A video track producing `make(i)` for i = 0, 1, ... every `interval_s` (0: as fast as it
    is read), ending after `count` frames (None: never)."""

    kind = "video"

    def __init__(self, make: Callable[[int], Any], *, count: int | None = None,
                 interval_s: float = 0.0) -> None:
        super().__init__()
        self._make = make
        self._count = count
        self._interval_s = interval_s
        self.produced = 0

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self._count is not None and self.produced >= self._count:
            self.stop()
            raise MediaStreamError
        await asyncio.sleep(self._interval_s)
        frame = self._make(self.produced)
        self.produced += 1
        return frame


class SilentTrack(MediaStreamTrack):
    """A participant's track that never carries a frame; only `stop()` ends it."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        self._stopped.set()
        super().stop()


def one_hot(name: str) -> tuple[float, ...]:
    return tuple(1.0 if e == name else 0.0 for e in EMOTIONS)


class StubAnalyzer:
    """Stands in for FaceAnalyzer: one `happy` face per frame, in the middle half of the image it
    was given. Records each batch as (stream, first pixel value, image shape, thread name)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[FaceStream | None, int, tuple[int, ...], str]]] = []
        self.gate: threading.Event | None = None  # set: batches wait until it is set
        self.entered = threading.Event()
        self.poison: int | None = None  # a batch holding a frame of this value raises

    def new_stream(self) -> FaceStream:
        return FaceStream(FaceTracker(), ScoreSmoother(0.5))

    def analyze_batch(self, items: Sequence[tuple[FaceStream | None, np.ndarray]]) -> list[list[FaceResult]]:
        name = threading.current_thread().name
        self.batches.append([(s, int(img[0, 0, 0]), img.shape, name) for s, img in items])
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.poison is not None and any(int(img[0, 0, 0]) == self.poison for _, img in items):
            raise ValueError("poisoned frame")
        out = []
        for stream, img in items:
            h, w = img.shape[:2]
            if stream is not None:
                stream.frames += 1
            out.append([FaceResult(face_index=0, box=Box(w // 4, h // 4, w // 2, h // 2),
                                   scores=one_hot("happy"), valence=0.8, arousal=0.5, attention=1.0)])
        return out

    def analyze_image(self, image: np.ndarray) -> list[FaceResult]:
        return self.analyze_batch([(None, image)])[0]

    @property
    def frames(self) -> int:
        return sum(len(b) for b in self.batches)

    def values(self) -> Iterator[int]:
        for batch in self.batches:
            for _, value, _, _ in batch:
                yield value


async def until(condition: Callable[[], bool], *, timeout_s: float = 5.0, what: str = "condition") -> None:
    """Wait (polling the loop) until `condition()` holds; fail the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)
