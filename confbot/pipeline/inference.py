"""`InferenceWorker`: runs the one `FaceAnalyzer` in one worker thread, batching across calls.

    CallPipeline --analyze()--> queue --(one batch at a time, up to max_batch_frames)--> thread
                                                                      FaceAnalyzer.analyze_batch

`FaceAnalyzer` is not thread-safe and is CPU-bound, so every use of it, including the frame
conversion from `av.VideoFrame` to a BGR array, happens in the worker's single thread and never
on the event loop. Requests that arrive while a batch runs are gathered into the next batch, so
the classifier sees the faces of all tracks of all calls together.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from confbot.errors import ConfbotError
from face_core.analyzer import FaceAnalyzer, FaceStream
from face_core.errors import ImageError
from face_core.image import to_bgr8
from face_core.types import Box, FaceResult

log = logging.getLogger(__name__)


class InferenceClosedError(ConfbotError):
    """The inference worker was closed before it analyzed the frames."""


@dataclass(frozen=True)
class AnalyzedFrame:
    """One frame's faces. Boxes are in the pixels of the frame as it was submitted (`width` x
    `height`), whatever size it was analyzed at. `error` says why a frame that could not be
    analyzed has no faces (None when it was analyzed)."""

    faces: list[FaceResult]
    width: int
    height: int
    error: str | None = None


@dataclass(frozen=True)
class InferenceStats:
    """Counters since the worker started; `*_ms` are wall milliseconds spent per batch."""

    batches: int
    frames: int
    faces: int
    frame_errors: int
    batch_failures: int  # batches that raised and were redone frame by frame
    pending_frames: int
    batch_ms_last: float
    batch_ms_max: float
    batch_ms_total: float

    @property
    def batch_ms_mean(self) -> float:
        return self.batch_ms_total / self.batches if self.batches else 0.0


Item = tuple[FaceStream | None, Any]
_Outcome = AnalyzedFrame | Exception


@dataclass(eq=False)
class _Request:
    items: list[Item]
    future: asyncio.Future[list[_Outcome]]
    outcomes: list[_Outcome | None]
    remaining: int
    next_item: int = 0  # items before this one are in a batch already


@dataclass(frozen=True)
class _Converted:
    image: np.ndarray  # BGR, possibly scaled down
    width: int  # the submitted frame's size
    height: int


class InferenceWorker:
    """Owns one FaceAnalyzer in one worker thread; batches the frames of all callers.

    Frames of the calls that arrive while a batch is running go into the next
    `analyze_batch` call, at most `max_batch_frames` frames each. `av.VideoFrame`s are
    converted to BGR in the worker thread, scaled down so their long side is at most
    `max_convert_side_px`; ndarrays are used as given. Inference never runs on the event loop.
    """

    def __init__(self, analyzer: FaceAnalyzer, *, max_batch_frames: int = 32,
                 max_convert_side_px: int = 1280, close_timeout_s: float = 30.0) -> None:
        if max_batch_frames < 1:
            raise ValueError(f"max_batch_frames must be at least 1, got {max_batch_frames}")
        if max_convert_side_px < 16:
            raise ValueError(f"max_convert_side_px must be at least 16, got {max_convert_side_px}")
        self._analyzer = analyzer
        self._max_batch_frames = max_batch_frames
        self._max_convert_side_px = max_convert_side_px
        self._close_timeout_s = close_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confbot-inference")
        self._queue: collections.deque[_Request] = collections.deque()
        self._drain_task: asyncio.Task[None] | None = None
        self._closed = False
        self._batches = 0
        self._frames = 0
        self._faces = 0
        self._frame_errors = 0
        self._batch_failures = 0
        self._batch_ms_last = 0.0
        self._batch_ms_max = 0.0
        self._batch_ms_total = 0.0

    def new_stream(self) -> FaceStream:
        """Fresh per-stream state (face indices, smoothing) for one participant's track."""
        return self._analyzer.new_stream()

    @property
    def detector_name(self) -> str:
        """The face detector's kind ("blazeface", "haar" or "yunet")."""
        return self._analyzer.detector.name

    @property
    def model_name(self) -> str:
        """The emotion model's file (the one "auto" chose, where it chose)."""
        return self._analyzer.classifier.manifest.file

    @property
    def analysis(self) -> dict[str, Any]:
        """What scores the faces, as a call's "analysis" event records it."""
        classifier = self._analyzer.classifier
        standardize = classifier.manifest.standardize
        return {"model": self.model_name, "model_sha256": classifier.manifest.sha256,
                "standardize": None if standardize is None else list(standardize),
                "tta": classifier.tta, "tta_margin": classifier.tta_margin,
                "detector": self.detector_name}

    @property
    def stats(self) -> InferenceStats:
        return InferenceStats(
            batches=self._batches, frames=self._frames, faces=self._faces,
            frame_errors=self._frame_errors, batch_failures=self._batch_failures,
            pending_frames=sum(len(r.items) - r.next_item for r in self._queue),
            batch_ms_last=self._batch_ms_last, batch_ms_max=self._batch_ms_max,
            batch_ms_total=self._batch_ms_total,
        )

    async def analyze(self, frames: Sequence[tuple[FaceStream, Any]]) -> list[AnalyzedFrame]:
        """The faces of each frame, in order. Items are (stream, av.VideoFrame or BGR ndarray).

        A frame that cannot be converted or analyzed gets an `AnalyzedFrame` with no faces and
        its `error` set; the others are unaffected. Raises `InferenceClosedError` once closed.
        """
        outcomes = await self._submit(list(frames))
        return [o if isinstance(o, AnalyzedFrame) else _failed(item[1], o)
                for item, o in zip(frames, outcomes, strict=True)]

    async def analyze_still(self, image: np.ndarray) -> list[FaceResult]:
        """The faces of a still photo (indexed left to right, no smoothing). Raises the
        analyzer's error (`face_core.ImageError`) for an image it cannot use."""
        outcome = (await self._submit([(None, image)]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome.faces

    async def close(self) -> None:
        """Refuse new work, fail what has not started, and wait (at most `close_timeout_s`) for
        the batch that is running. Idempotent."""
        self._closed = True
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(InferenceClosedError("the inference worker was closed"))
        if self._drain_task is not None:
            # A running batch cannot be interrupted; it normally takes milliseconds.
            _, running = await asyncio.wait([self._drain_task], timeout=self._close_timeout_s)
            if running:
                log.warning("an inference batch still runs %.0f s after close(); not waiting for it",
                            self._close_timeout_s)
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> InferenceWorker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ on the event loop

    async def _submit(self, items: list[Item]) -> list[_Outcome]:
        if self._closed:
            raise InferenceClosedError("the inference worker is closed")
        if not items:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(items=items, future=loop.create_future(), outcomes=[None] * len(items),
                           remaining=len(items))
        self._queue.append(request)
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = loop.create_task(self._drain(), name="confbot-inference-drain")
        return await request.future

    def _next_batch(self) -> list[tuple[_Request, int]]:
        batch: list[tuple[_Request, int]] = []
        while self._queue and len(batch) < self._max_batch_frames:
            request = self._queue[0]
            if request.future.done():  # its caller gave up (cancelled)
                self._queue.popleft()
                continue
            take = min(len(request.items) - request.next_item, self._max_batch_frames - len(batch))
            batch += [(request, k) for k in range(request.next_item, request.next_item + take)]
            request.next_item += take
            if request.next_item == len(request.items):
                self._queue.popleft()
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            batch = self._next_batch()
            if not batch:
                return
            items = [request.items[k] for request, k in batch]
            started = time.perf_counter()
            try:
                outcomes, failed = await loop.run_in_executor(self._executor, self._run_batch, items)
            except Exception as exc:  # the executor itself failed (shut down): fail these callers
                log.exception("inference batch of %d frames could not run", len(items))
                outcomes, failed = [exc] * len(items), False
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self._count(outcomes, failed, elapsed_ms)
            for (request, k), outcome in zip(batch, outcomes, strict=True):
                request.outcomes[k] = outcome
                request.remaining -= 1
                if request.remaining == 0 and not request.future.done():
                    request.future.set_result(request.outcomes)  # type: ignore[arg-type]

    def _count(self, outcomes: list[_Outcome], failed: bool, elapsed_ms: float) -> None:
        self._batches += 1
        self._frames += len(outcomes)
        self._faces += sum(len(o.faces) for o in outcomes if isinstance(o, AnalyzedFrame))
        self._frame_errors += sum(isinstance(o, Exception) for o in outcomes)
        self._batch_failures += failed
        self._batch_ms_last = elapsed_ms
        self._batch_ms_max = max(self._batch_ms_max, elapsed_ms)
        self._batch_ms_total += elapsed_ms

    # ------------------------------------------------------------------ in the worker thread

    def _run_batch(self, items: list[Item]) -> tuple[list[_Outcome], bool]:
        """Convert and analyze `items`; returns per item an AnalyzedFrame or the exception, and
        whether the batch as a whole failed and was redone frame by frame."""
        converted: list[_Converted | Exception] = []
        for _, frame in items:
            try:
                converted.append(self._convert(frame))
            except Exception as exc:
                log.debug("could not convert a %s for analysis: %r", type(frame).__name__, exc)
                converted.append(exc)
        ready = [(i, c) for i, c in enumerate(converted) if isinstance(c, _Converted)]
        faces: list[list[FaceResult] | Exception]
        failed = False
        try:
            faces = list(self._analyzer.analyze_batch([(items[i][0], c.image) for i, c in ready]))
        except Exception as exc:
            # One bad frame must not cost the others their analysis. (Streams whose frames were
            # already tracked see the same frame twice; their tracker keeps the same indices.)
            failed = True
            if self._batch_failures == 0:
                log.warning("an inference batch failed; analyzing its frames one by one", exc_info=exc)
            else:
                log.debug("an inference batch failed: %r", exc)
            faces = []
            for i, c in ready:
                try:
                    faces.append(self._analyzer.analyze_batch([(items[i][0], c.image)])[0])
                except Exception as one_exc:
                    faces.append(one_exc)
        found_by_item = dict(zip((i for i, _ in ready), faces, strict=True))
        outcomes: list[_Outcome] = []
        for i, conv in enumerate(converted):
            if isinstance(conv, Exception):
                outcomes.append(conv)
                continue
            found = found_by_item[i]
            outcomes.append(found if isinstance(found, Exception) else _to_frame_pixels(found, conv))
        return outcomes, failed

    def _convert(self, frame: Any) -> _Converted:
        if isinstance(frame, av.VideoFrame):
            width, height = int(frame.width), int(frame.height)
            if width <= 0 or height <= 0:
                raise ImageError(f"empty {width}x{height} video frame")
            scale = min(1.0, self._max_convert_side_px / max(width, height))
            out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
            image = frame.reformat(width=out_w, height=out_h, format="bgr24").to_ndarray()
            return _Converted(image=image, width=width, height=height)
        if isinstance(frame, np.ndarray):
            image = to_bgr8(frame)  # raises ImageError naming what is wrong with it
            return _Converted(image=image, width=int(image.shape[1]), height=int(image.shape[0]))
        raise ImageError(f"expected an av.VideoFrame or a BGR numpy array, got {type(frame).__name__}")


def _to_frame_pixels(faces: list[FaceResult], conv: _Converted) -> AnalyzedFrame:
    """Faces found in the (possibly scaled) image, with boxes in the submitted frame's pixels."""
    sy = conv.height / conv.image.shape[0]
    sx = conv.width / conv.image.shape[1]
    if sx != 1.0 or sy != 1.0:
        faces = [dataclasses.replace(f, box=_scale_box(f.box, sx, sy, conv.width, conv.height))
                 for f in faces]
    return AnalyzedFrame(faces=faces, width=conv.width, height=conv.height)


def _scale_box(box: Box, sx: float, sy: float, width: int, height: int) -> Box:
    x0, y0 = round(box.x * sx), round(box.y * sy)
    x1, y1 = round((box.x + box.w) * sx), round((box.y + box.h) * sy)
    x0, y0 = min(max(0, x0), width), min(max(0, y0), height)
    x1, y1 = min(max(x0, x1), width), min(max(y0, y1), height)
    return Box(x0, y0, x1 - x0, y1 - y0)


def _failed(frame: Any, exc: Exception) -> AnalyzedFrame:
    width = height = 0
    if isinstance(frame, av.VideoFrame):
        width, height = int(frame.width), int(frame.height)
    elif isinstance(frame, np.ndarray) and frame.ndim >= 2:
        height, width = int(frame.shape[0]), int(frame.shape[1])
    return AnalyzedFrame(faces=[], width=width, height=height, error=f"{type(exc).__name__}: {exc}")
