"""`CallPipeline`: one call's track readers and sampler, feeding the shared inference worker.

    track --TrackReader (latest frame only)--+
    track --TrackReader (latest frame only)--+--sampler, every 1/sample_fps--> InferenceWorker
                                                                                    |
                             on_samples(list[EmotionSample]) <--(on the event loop)--+

Each tick takes the newest untaken frame of every analyzed participant and submits them all in
one `InferenceWorker.analyze` call. A tick that comes while the previous tick's analysis is
still running is skipped and counted, so work never piles up behind a slow worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc.mediastreams import MediaStreamTrack

from confbot.pipeline.inference import AnalyzedFrame, InferenceClosedError, InferenceWorker
from confbot.pipeline.reader import DEFAULT_MAX_FRAME_PIXELS, LatestFrame, TrackReader
from confbot.pipeline.sample import EmotionSample
from face_core.analyzer import FaceStream

log = logging.getLogger(__name__)

# How long close() and remove_participant() wait for a cancelled task before giving up on it.
TASK_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LatestFaces:
    """A participant's most recently analyzed frame: its faces as samples (empty when no face
    was found), the frame's size in pixels (the samples' boxes are in those pixels), and its
    time since the call started."""

    samples: list[EmotionSample]
    frame_width: int
    frame_height: int
    t_ms: int


@dataclass(frozen=True)
class PipelineStats:
    """Counters since the pipeline started, over every track it has read."""

    participants: int
    frames_received: int
    frames_refused: int  # too large, or not a video frame
    frames_dropped: int  # stale: replaced by a newer frame before a tick took them
    frames_sampled: int  # submitted for analysis
    frame_errors: int  # submitted but could not be analyzed
    samples: int  # handed to on_samples
    samples_discarded: int  # analyzed, but consent was withdrawn or the participant left meanwhile
    ticks: int
    ticks_skipped: int  # the previous tick's analysis was still running


@dataclass(eq=False)
class _Participant:
    participant_id: str
    analyzed: bool
    stream: FaceStream
    generation: int  # renewed when results still in flight must no longer be used
    reader: TrackReader | None = None
    task: asyncio.Task[None] | None = None
    latest: LatestFaces | None = None
    errors: int = 0


@dataclass(frozen=True)
class _Taken:
    participant_id: str
    generation: int
    frame: LatestFrame


class CallPipeline:
    """Reads every participant's video track and samples them at `sample_fps` for analysis.

    Samples go to `on_samples` (called on the event loop, only with a non-empty list). While
    a participant is not analyzed (no consent), their frames are received and dropped: never
    converted or classified. Memory is bounded: one frame and one face stream per participant.
    `clock` and `wall_clock` stamp received frames (monotonic seconds, Unix seconds); the
    sampler's schedule runs on the event loop's clock.
    """

    def __init__(self, *, call_id: str, started_wall_ms: int, worker: InferenceWorker,
                 sample_fps: float, on_samples: Callable[[list[EmotionSample]], None],
                 max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if not sample_fps > 0:
            raise ValueError(f"sample_fps must be positive, got {sample_fps}")
        self.call_id = call_id
        self._started_wall_ms = started_wall_ms
        self._worker = worker
        self._period_s = 1.0 / sample_fps
        self._on_samples = on_samples
        self._max_frame_pixels = max_frame_pixels
        self._clock = clock
        self._wall_clock = wall_clock
        self._participants: dict[str, _Participant] = {}
        self._generations = itertools.count(1)  # unique across participants, so a result never
        # lands on a participant who left and came back
        self._sampler: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # readers of replaced tracks, until they end
        self._closed = False
        # Totals of readers that are gone; live readers are added in `stats`.
        self._gone = {"received": 0, "refused": 0, "dropped": 0}
        self._frames_sampled = 0
        self._frame_errors = 0
        self._samples = 0
        self._samples_discarded = 0
        self._ticks = 0
        self._ticks_skipped = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sampler (it ticks every 1/sample_fps until `close()`). Idempotent."""
        if self._closed or self._sampler is not None:
            return
        self._sampler = asyncio.get_running_loop().create_task(
            self._sample_loop(), name=f"confbot-sampler-{self.call_id}")

    async def close(self) -> None:
        """Stop the sampler and every reader, and stop their tracks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._sampler, self._inflight) if t is not None]
        for participant in self._participants.values():
            tasks += self._retire(participant)
        self._participants.clear()
        tasks += list(self._retiring)
        await _cancel_all(tasks, f"call {self.call_id}")

    async def __aenter__(self) -> CallPipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ participants

    def add_track(self, participant_id: str, track: MediaStreamTrack, *, analyzed: bool) -> None:
        """Read `track` as the participant's video; a track they had before is stopped."""
        if self._closed:
            log.warning("call %s: track %s of participant %s arrived after the pipeline closed; "
                        "stopping it", self.call_id, track.id, participant_id)
            track.stop()
            return
        participant = self._participants.get(participant_id)
        if participant is not None and participant.reader is not None and participant.reader.track is track:
            self.set_analyzed(participant_id, analyzed)  # the same track again: keep reading it
            return
        if participant is None:
            participant = _Participant(participant_id, analyzed, self._worker.new_stream(),
                                       next(self._generations))
            self._participants[participant_id] = participant
        else:
            old = self._retire(participant)
            self._retiring.update(old)
            for task in old:
                task.add_done_callback(self._retiring.discard)
            log.info("call %s: participant %s has a new video track %s; the old one is stopped",
                     self.call_id, participant_id, track.id)
        reader = TrackReader(track, call_id=self.call_id, participant_id=participant_id,
                             max_frame_pixels=self._max_frame_pixels, clock=self._clock,
                             wall_clock=self._wall_clock, keep_frames=analyzed)
        participant.reader = reader
        participant.task = asyncio.get_running_loop().create_task(
            reader.run(), name=f"confbot-reader-{self.call_id}-{participant_id}")
        participant.task.add_done_callback(self._reader_done)
        self.set_analyzed(participant_id, analyzed)

    def set_analyzed(self, participant_id: str, analyzed: bool) -> None:
        """Start or stop analyzing a participant (consent). While stopped, their frames are
        drained but never kept, converted or classified, results still in flight are thrown
        away, and their face stream starts afresh."""
        participant = self._participants.get(participant_id)
        if participant is None:
            log.debug("call %s: set_analyzed(%s) for unknown participant %s", self.call_id, analyzed,
                      participant_id)
            return
        if participant.reader is not None:
            participant.reader.keep_frames = analyzed
        if participant.analyzed == analyzed:
            return
        participant.analyzed = analyzed
        participant.generation = next(self._generations)
        if not analyzed:
            participant.stream = self._worker.new_stream()
            participant.latest = None
        log.info("call %s: participant %s is %s", self.call_id, participant_id,
                 "analyzed" if analyzed else "no longer analyzed")

    async def remove_participant(self, participant_id: str) -> None:
        """Stop reading the participant's track and forget them. Unknown ids are ignored."""
        participant = self._participants.pop(participant_id, None)
        if participant is None:
            return
        await _cancel_all(self._retire(participant), f"call {self.call_id} participant {participant_id}")

    def latest(self, participant_id: str) -> LatestFaces | None:
        """The participant's most recently analyzed frame, or None (not analyzed, or no frame yet)."""
        participant = self._participants.get(participant_id)
        return participant.latest if participant is not None else None

    @property
    def stats(self) -> PipelineStats:
        readers = [p.reader for p in self._participants.values() if p.reader is not None]
        return PipelineStats(
            participants=len(self._participants),
            frames_received=self._gone["received"] + sum(r.frames_received for r in readers),
            frames_refused=self._gone["refused"] + sum(r.frames_refused for r in readers),
            frames_dropped=self._gone["dropped"] + sum(r.frames_dropped for r in readers),
            frames_sampled=self._frames_sampled, frame_errors=self._frame_errors,
            samples=self._samples, samples_discarded=self._samples_discarded,
            ticks=self._ticks, ticks_skipped=self._ticks_skipped,
        )

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: a track reader crashed", self.call_id, exc_info=task.exception())

    def _retire(self, participant: _Participant) -> list[asyncio.Task[None]]:
        """Detach the participant's reader: cancel its task (returned), stop its track."""
        reader, task = participant.reader, participant.task
        participant.reader = participant.task = None
        if reader is None:
            return []
        self._gone["received"] += reader.frames_received
        self._gone["refused"] += reader.frames_refused
        self._gone["dropped"] += reader.frames_dropped
        reader.keep_frames = False
        reader.track.stop()
        if task is None or task.done():
            return []
        task.cancel()
        return [task]

    # ------------------------------------------------------------------ sampling

    async def tick(self) -> bool:
        """Sample once now, as the sampler does, and wait for that analysis. Returns False if
        the tick was skipped because the previous analysis is still running."""
        task = self._tick()
        if task is None:
            return False
        await asyncio.wait([task])
        return True

    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._period_s
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                self._tick()
            except Exception:  # a bug here must not stop the call's sampling for good
                log.exception("call %s: a sampler tick failed", self.call_id)
            next_at += self._period_s
            if loop.time() > next_at + self._period_s:
                next_at = loop.time() + self._period_s  # we were held up: don't catch up in a burst

    def _tick(self) -> asyncio.Task[None] | None:
        self._ticks += 1
        if self._inflight is not None and not self._inflight.done():
            self._ticks_skipped += 1
            return None
        taken: list[_Taken] = []
        streams: list[tuple[FaceStream, Any]] = []
        for participant in self._participants.values():
            if not participant.analyzed or participant.reader is None:
                continue
            frame = participant.reader.take_latest()
            if frame is None:
                continue
            taken.append(_Taken(participant.participant_id, participant.generation, frame))
            streams.append((participant.stream, frame.frame))
        if not taken:
            return None
        self._frames_sampled += len(taken)
        self._inflight = asyncio.get_running_loop().create_task(
            self._analyze(taken, streams), name=f"confbot-analyze-{self.call_id}")
        return self._inflight

    async def _analyze(self, taken: list[_Taken], streams: list[tuple[FaceStream, Any]]) -> None:
        try:
            results = await self._worker.analyze(streams)
        except InferenceClosedError:
            log.info("call %s: the inference worker is closed; %d frame(s) not analyzed",
                     self.call_id, len(taken))
            return
        except Exception:
            log.exception("call %s: analyzing %d frame(s) failed", self.call_id, len(taken))
            self._frame_errors += len(taken)
            return
        samples: list[EmotionSample] = []
        for item, result in zip(taken, results, strict=True):
            samples += self._samples_of(item, result)
        if not samples:
            return
        self._samples += len(samples)
        try:
            self._on_samples(samples)
        except Exception:
            log.exception("call %s: the sample consumer failed on %d sample(s)", self.call_id, len(samples))

    def _samples_of(self, item: _Taken, result: AnalyzedFrame) -> list[EmotionSample]:
        participant = self._participants.get(item.participant_id)
        if participant is None or participant.generation != item.generation or not participant.analyzed:
            self._samples_discarded += len(result.faces)
            return []
        if result.error is not None:
            self._frame_errors += 1
            participant.errors += 1
            # Once at WARNING per participant; a camera that keeps sending bad frames is not news.
            level = logging.WARNING if participant.errors == 1 else logging.DEBUG
            log.log(level, "call %s participant %s: a frame (%dx%d) could not be analyzed, skipped: %s",
                    self.call_id, item.participant_id, item.frame.width, item.frame.height, result.error)
            return []
        frame = item.frame
        t_ms = max(0, frame.wall_time_ms - self._started_wall_ms)
        samples = [
            EmotionSample.from_face(face, call_id=self.call_id, participant_id=item.participant_id,
                                    t_ms=t_ms, wall_time_ms=frame.wall_time_ms,
                                    frame_received_monotonic=frame.received_monotonic)
            for face in result.faces
        ]
        participant.latest = LatestFaces(samples=samples, frame_width=result.width,
                                         frame_height=result.height, t_ms=t_ms)
        return samples


async def _cancel_all(tasks: list[asyncio.Task[Any]], what: str) -> None:
    """Cancel `tasks` and wait (bounded) until they have finished."""
    current = asyncio.current_task()
    tasks = [t for t in tasks if t is not current and not t.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=TASK_STOP_TIMEOUT_S)
    if pending:
        log.warning("%s: %d task(s) did not stop within %.0f s", what, len(pending), TASK_STOP_TIMEOUT_S)
