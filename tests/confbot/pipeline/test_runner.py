"""CallPipeline: sampling, consent gating, bad frames and tracks, batching, and the real model."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, cast

import av
import numpy as np
import pytest

from confbot.pipeline.inference import InferenceWorker
from confbot.pipeline.runner import CallPipeline
from confbot.pipeline.sample import EmotionSample
from face_core.analyzer import FaceAnalyzer
from tests.confbot.pipeline.support import (
    GeneratedTrack,
    QueueTrack,
    SilentTrack,
    StubAnalyzer,
    photo_frame,
    until,
    video_frame,
)

STARTED_WALL_MS = 1_700_000_000_000


class Harness:
    """A pipeline on a stub analyzer, collecting what it emits."""

    def __init__(self, *, sample_fps: float = 2.0, call_id: str = "c1",
                 worker: InferenceWorker | None = None, stub: StubAnalyzer | None = None,
                 **options: Any) -> None:
        self.stub = stub or StubAnalyzer()
        self.worker = worker or InferenceWorker(cast(FaceAnalyzer, self.stub))
        self.emitted: list[list[EmotionSample]] = []
        self.pipeline = CallPipeline(call_id=call_id, started_wall_ms=STARTED_WALL_MS, worker=self.worker,
                                     sample_fps=sample_fps, on_samples=self.emitted.append, **options)

    @property
    def samples(self) -> list[EmotionSample]:
        return [s for batch in self.emitted for s in batch]

    async def close(self) -> None:
        await self.pipeline.close()
        await self.worker.close()


@pytest.fixture
async def h() -> Any:
    harness = Harness()
    yield harness
    await asyncio.wait_for(harness.close(), 10)


async def push_and_wait(h: Harness, track: QueueTrack, *frames: Any) -> None:
    before = h.pipeline.stats.frames_received
    for frame in frames:
        track.push(frame)
    await until(lambda: h.pipeline.stats.frames_received == before + len(frames), what="the frames")


async def test_a_tick_turns_each_face_into_a_sample() -> None:
    wall = iter([STARTED_WALL_MS / 1000 + 1.5])
    h = Harness(clock=lambda: 42.0, wall_clock=lambda: next(wall))
    try:
        track = QueueTrack()
        h.pipeline.add_track("alice", track, analyzed=True)
        await push_and_wait(h, track, video_frame(9, width=640, height=360))
        assert await h.pipeline.tick()
        [[sample]] = h.emitted
        assert (sample.call_id, sample.participant_id, sample.face_index) == ("c1", "alice", 0)
        assert sample.t_ms == 1500 and sample.wall_time_ms == STARTED_WALL_MS + 1500
        assert sample.frame_received_monotonic == 42.0
        assert sample.top_emotion == "happy" and sample.box == (160, 90, 320, 180)
        latest = h.pipeline.latest("alice")
        assert latest is not None and latest.samples == [sample]
        assert (latest.frame_width, latest.frame_height, latest.t_ms) == (640, 360, 1500)
        # No new frame: the next tick analyzes nothing and emits nothing.
        await h.pipeline.tick()
        assert len(h.emitted) == 1 and h.stub.frames == 1
        stats = h.pipeline.stats
        assert (stats.frames_received, stats.frames_sampled, stats.samples) == (1, 1, 1)
    finally:
        await h.close()


async def test_a_frame_from_before_the_call_started_gets_t_ms_zero() -> None:
    h = Harness(wall_clock=lambda: STARTED_WALL_MS / 1000 - 5)
    try:
        track = QueueTrack()
        h.pipeline.add_track("alice", track, analyzed=True)
        await push_and_wait(h, track, video_frame(1))
        await h.pipeline.tick()
        assert h.samples[0].t_ms == 0
    finally:
        await h.close()


async def test_the_sampler_runs_at_sample_fps_with_a_fast_producer() -> None:
    h = Harness(sample_fps=10.0)
    try:
        track = GeneratedTrack(lambda i: video_frame(i % 256), interval_s=0.002)  # up to 500 fps
        h.pipeline.add_track("alice", track, analyzed=True)
        await h.pipeline.start()
        await asyncio.sleep(1.0)
        stats = h.pipeline.stats
        await h.pipeline.close()
    finally:
        await h.close()
    assert 7 <= h.stub.frames <= 12, h.stub.frames  # 10 per second
    assert all(len(batch) == 1 for batch in h.stub.batches)
    assert stats.frames_received > 3 * stats.frames_sampled  # the rest were dropped, not queued
    assert stats.frames_dropped >= stats.frames_received - stats.frames_sampled - 1
    assert len(h.samples) == h.stub.frames


async def test_a_tick_is_skipped_while_the_previous_analysis_runs(h: Harness) -> None:
    h.stub.gate = threading.Event()
    track = QueueTrack()
    h.pipeline.add_track("alice", track, analyzed=True)
    await push_and_wait(h, track, video_frame(1))
    first = asyncio.create_task(h.pipeline.tick())
    await until(h.stub.entered.is_set, what="the analysis to start")
    await push_and_wait(h, track, video_frame(2))
    assert not await h.pipeline.tick()  # skipped: never piles up
    assert h.pipeline.stats.ticks_skipped == 1
    h.stub.gate.set()
    assert await first
    assert await h.pipeline.tick()  # the frame that waited is analyzed now
    assert list(h.stub.values()) == [1, 2]


async def test_frames_of_a_participant_without_consent_are_never_classified(h: Harness) -> None:
    track = QueueTrack()
    h.pipeline.add_track("bob", track, analyzed=False)
    await push_and_wait(h, track, video_frame(1), video_frame(2))
    await h.pipeline.tick()
    assert h.stub.batches == [] and h.emitted == []
    assert h.pipeline.latest("bob") is None
    # Consent given: a frame received before it is still never analyzed, only newer ones.
    h.pipeline.set_analyzed("bob", True)
    await h.pipeline.tick()
    assert h.stub.batches == []
    await push_and_wait(h, track, video_frame(3))
    await h.pipeline.tick()
    assert list(h.stub.values()) == [3]
    first_stream = h.stub.batches[0][0][0]
    # Consent withdrawn: nothing more is classified, the overlay is cleared, the stream reset.
    h.pipeline.set_analyzed("bob", False)
    assert h.pipeline.latest("bob") is None
    await push_and_wait(h, track, video_frame(4))
    await h.pipeline.tick()
    assert list(h.stub.values()) == [3]
    h.pipeline.set_analyzed("bob", True)
    await push_and_wait(h, track, video_frame(5))
    await h.pipeline.tick()
    assert list(h.stub.values()) == [3, 5]
    assert h.stub.batches[1][0][0] is not first_stream  # a fresh face stream
    assert h.pipeline.stats.frames_received == 5


@pytest.mark.parametrize("given_again", [False, True])
async def test_results_in_flight_when_consent_is_withdrawn_are_thrown_away(
        h: Harness, given_again: bool) -> None:
    h.stub.gate = threading.Event()
    track = QueueTrack()
    h.pipeline.add_track("bob", track, analyzed=True)
    await push_and_wait(h, track, video_frame(1))
    tick = asyncio.create_task(h.pipeline.tick())
    await until(h.stub.entered.is_set, what="the analysis to start")
    h.pipeline.set_analyzed("bob", False)
    if given_again:  # the frame was still taken while consent was withdrawn
        h.pipeline.set_analyzed("bob", True)
    h.stub.gate.set()
    await tick
    assert h.emitted == [] and h.pipeline.latest("bob") is None
    assert h.pipeline.stats.samples_discarded == 1


async def test_a_huge_frame_is_refused_and_never_analyzed(h: Harness) -> None:
    track = QueueTrack()
    h.pipeline.add_track("alice", track, analyzed=True)
    await push_and_wait(h, track, av.VideoFrame(4096, 2304, "yuv420p"))
    await h.pipeline.tick()
    assert h.stub.batches == []
    assert h.pipeline.stats.frames_refused == 1


async def test_the_pixel_limit_comes_from_the_pipeline() -> None:
    h = Harness(max_frame_pixels=320 * 240)
    try:
        track = QueueTrack()
        h.pipeline.add_track("alice", track, analyzed=True)
        await push_and_wait(h, track, video_frame(1, width=640, height=480))
        await h.pipeline.tick()
        assert h.pipeline.stats.frames_refused == 1 and h.stub.batches == []
    finally:
        await h.close()


async def test_a_track_that_ends_and_a_participant_who_never_sends(h: Harness) -> None:
    ending = GeneratedTrack(lambda i: video_frame(7), count=3)
    h.pipeline.add_track("alice", ending, analyzed=True)
    h.pipeline.add_track("mute", SilentTrack(), analyzed=True)
    await until(lambda: h.pipeline.stats.frames_received == 3, what="alice's frames")
    await asyncio.sleep(0.01)  # alice's reader sees the end
    await h.pipeline.tick()
    await h.pipeline.tick()
    assert [p for s in h.samples for p in [s.participant_id]] == ["alice"]  # her last frame, once
    assert h.pipeline.latest("mute") is None
    await asyncio.wait_for(h.pipeline.remove_participant("alice"), 5)
    await asyncio.wait_for(h.pipeline.remove_participant("mute"), 5)  # its recv() never returned
    await h.pipeline.remove_participant("nobody")  # unknown ids are ignored
    assert h.pipeline.stats.participants == 0
    assert h.pipeline.stats.frames_received == 3  # counts outlive the readers


async def test_a_new_track_replaces_the_old_one(h: Harness) -> None:
    old, new = QueueTrack(), QueueTrack()
    h.pipeline.add_track("alice", old, analyzed=True)
    await push_and_wait(h, old, video_frame(1))
    h.pipeline.add_track("alice", new, analyzed=True)
    assert old.readyState == "ended"
    await h.pipeline.tick()
    assert h.stub.batches == []  # the old track's frame went with it
    await push_and_wait(h, new, video_frame(2))
    await h.pipeline.tick()
    assert list(h.stub.values()) == [2]
    assert h.pipeline.stats.participants == 1
    h.pipeline.add_track("alice", new, analyzed=True)  # the same track again: still read
    assert new.readyState == "live"
    await push_and_wait(h, new, video_frame(3))
    await h.pipeline.tick()
    assert list(h.stub.values()) == [2, 3]


async def test_one_participants_bad_frame_is_skipped_and_logged_with_ids(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    good, bad = QueueTrack(), QueueTrack()
    h.pipeline.add_track("alice", good, analyzed=True)
    h.pipeline.add_track("bob", bad, analyzed=True)
    await push_and_wait(h, good, video_frame(1))
    await push_and_wait(h, bad, np.zeros((48, 64, 3), np.int32))  # not an image face_core takes
    with caplog.at_level(logging.WARNING, logger="confbot.pipeline.runner"):
        await h.pipeline.tick()
    assert [s.participant_id for s in h.samples] == ["alice"]
    assert h.pipeline.stats.frame_errors == 1
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "c1" in record.getMessage() and "bob" in record.getMessage()


async def test_a_failing_consumer_does_not_stop_the_pipeline(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def explode(samples: list[EmotionSample]) -> None:
        calls.append(samples)
        raise RuntimeError("consumer broke")

    stub = StubAnalyzer()
    worker = InferenceWorker(cast(FaceAnalyzer, stub))
    pipeline = CallPipeline(call_id="c1", started_wall_ms=0, worker=worker, sample_fps=2,
                            on_samples=explode)
    try:
        track = QueueTrack()
        pipeline.add_track("alice", track, analyzed=True)
        for value in (1, 2):
            track.push(video_frame(value))
            await until(lambda v=value: pipeline.stats.frames_received == v)  # type: ignore[misc]
            await pipeline.tick()
        assert len(calls) == 2
    finally:
        await pipeline.close()
        await worker.close()


async def test_two_calls_share_one_analyze_batch() -> None:
    stub = StubAnalyzer()
    worker = InferenceWorker(cast(FaceAnalyzer, stub))
    one = Harness(call_id="one", worker=worker, stub=stub)
    two = Harness(call_id="two", worker=worker, stub=stub)
    try:
        a, b = QueueTrack(), QueueTrack()
        one.pipeline.add_track("alice", a, analyzed=True)
        two.pipeline.add_track("bob", b, analyzed=True)
        await push_and_wait(one, a, video_frame(11))
        await push_and_wait(two, b, video_frame(22))
        await asyncio.gather(one.pipeline.tick(), two.pipeline.tick())
        assert [[v for _, v, _, _ in batch] for batch in stub.batches] == [[11, 22]]
        assert [(s.call_id, s.participant_id) for s in one.samples] == [("one", "alice")]
        assert [(s.call_id, s.participant_id) for s in two.samples] == [("two", "bob")]
    finally:
        await one.pipeline.close()
        await two.pipeline.close()
        await worker.close()


async def test_close_is_quick_and_idempotent_with_analysis_in_flight() -> None:
    h = Harness(sample_fps=20)
    h.stub.gate = threading.Event()
    h.pipeline.add_track("alice", GeneratedTrack(lambda i: video_frame(1), interval_s=0.001), analyzed=True)
    h.pipeline.add_track("mute", SilentTrack(), analyzed=True)
    await h.pipeline.start()
    await until(h.stub.entered.is_set, what="an analysis to start")
    await asyncio.wait_for(h.pipeline.close(), 5)
    await h.pipeline.close()
    h.stub.gate.set()
    await asyncio.wait_for(h.worker.close(), 5)
    assert h.emitted == []  # the call is over: the cancelled tick emits nothing
    h.pipeline.add_track("late", SilentTrack(), analyzed=True)  # after close: stopped, not read
    assert h.pipeline.stats.participants == 0


async def test_the_real_model_labels_the_astronaut_happy_through_the_pipeline(
        analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    worker = InferenceWorker(analyzer)
    emitted: list[list[EmotionSample]] = []
    pipeline = CallPipeline(call_id="screening", started_wall_ms=STARTED_WALL_MS, worker=worker,
                            sample_fps=5.0, on_samples=emitted.append)
    try:
        track = GeneratedTrack(lambda i: photo_frame(face_photo_bgr, pts=i * 3000), interval_s=1 / 30)
        pipeline.add_track("astronaut", track, analyzed=True)
        await pipeline.start()
        await until(lambda: len(emitted) >= 3, timeout_s=20, what="three rounds of samples")
        latest = pipeline.latest("astronaut")
        assert latest is not None and (latest.frame_width, latest.frame_height) == (512, 512)
        assert [s.top_emotion for s in latest.samples] == ["happy"]
    finally:
        await asyncio.wait_for(pipeline.close(), 5)
        await worker.close()
    samples = [s for batch in emitted for s in batch]
    assert {s.participant_id for s in samples} == {"astronaut"}
    assert {s.face_index for s in samples} == {0}  # one face, one stable index
    assert all(s.top_emotion == "happy" for s in samples)
    x, y, w, h = samples[-1].box
    height, width = face_photo_bgr.shape[:2]
    assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 50
    assert worker.stats.faces >= 3
