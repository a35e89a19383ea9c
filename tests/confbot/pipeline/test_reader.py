"""TrackReader: only the newest frame is kept, bad frames are refused, the end of a track ends it."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import av
import numpy as np
import pytest

from confbot.pipeline.reader import TrackReader
from tests.confbot.pipeline.support import GeneratedTrack, QueueTrack, SilentTrack, until, video_frame


def reader_of(track: object, **options: object) -> TrackReader:
    return TrackReader(track, call_id="c1", participant_id="p1", **options)  # type: ignore[arg-type]


async def test_keeps_only_the_newest_frame_and_counts_the_rest() -> None:
    track = GeneratedTrack(lambda i: video_frame(i, pts=i), count=5)
    ticks = iter(range(100))
    reader = reader_of(track, clock=lambda: float(next(ticks)), wall_clock=lambda: 1_700_000_000.5)
    await reader.run()  # returns at the track's end
    assert reader.ended
    assert (reader.frames_received, reader.frames_dropped, reader.frames_refused) == (5, 4, 0)
    latest = reader.take_latest()
    assert latest is not None
    assert latest.frame.pts == 4  # the newest one
    assert (latest.width, latest.height) == (64, 48)
    assert latest.received_monotonic == 4.0
    assert latest.wall_time_ms == 1_700_000_000_500
    assert reader.take_latest() is None  # handed out once
    assert reader.frames_taken == 1


async def test_a_frame_is_taken_once_and_a_newer_one_replaces_it() -> None:
    track = QueueTrack()
    reader = reader_of(track)
    task = asyncio.create_task(reader.run())
    track.push(video_frame(1))
    await until(lambda: reader.frames_received == 1)
    first = reader.take_latest()
    assert first is not None and first.frame.to_ndarray()[0, 0, 0] == 1
    track.push(video_frame(2))
    track.push(video_frame(3))
    await until(lambda: reader.frames_received == 3)
    latest = reader.take_latest()
    assert latest is not None and latest.frame.to_ndarray()[0, 0, 0] == 3
    assert reader.frames_dropped == 1  # frame 2 was never taken
    track.end()
    await asyncio.wait_for(task, 5)


async def test_memory_stays_bounded_however_many_frames_arrive() -> None:
    alive: list[weakref.ref[np.ndarray]] = []

    def make(i: int) -> np.ndarray:
        frame = np.full((48, 64, 3), i % 256, np.uint8)
        alive.append(weakref.ref(frame))
        return frame

    track = GeneratedTrack(make, count=2000)
    reader = reader_of(track)
    await reader.run()
    gc.collect()
    assert reader.frames_received == 2000
    assert reader.frames_dropped == 1999
    still_alive = [i for i, ref in enumerate(alive) if ref() is not None]
    assert still_alive == [1999]  # only the newest frame is held
    reader.take_latest()
    gc.collect()
    assert all(ref() is None for ref in alive)


async def test_a_frame_over_the_pixel_limit_is_refused_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    huge = av.VideoFrame(3840, 2176, "yuv420p")  # over 3840x2160, the default limit
    track = GeneratedTrack(lambda i: huge if i < 3 else video_frame(9), count=4)
    reader = reader_of(track)
    with caplog.at_level(logging.WARNING, logger="confbot.pipeline.reader"):
        await reader.run()
    assert (reader.frames_received, reader.frames_refused) == (4, 3)
    latest = reader.take_latest()
    assert latest is not None and latest.width == 64  # the small frame, not a huge one
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "3840x2176" in warnings[0].getMessage() and "c1" in warnings[0].getMessage()


async def test_the_pixel_limit_is_a_setting() -> None:
    track = GeneratedTrack(lambda i: video_frame(1, width=200, height=200), count=2)
    reader = reader_of(track, max_frame_pixels=100 * 100)
    await reader.run()
    assert reader.frames_refused == 2 and reader.take_latest() is None


async def test_a_non_video_frame_is_refused() -> None:
    track = GeneratedTrack(lambda i: b"not a frame" if i == 0 else video_frame(5), count=2)
    reader = reader_of(track)
    await reader.run()
    assert reader.frames_refused == 1
    assert reader.take_latest() is not None


async def test_a_failing_read_is_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    track = QueueTrack()
    track.push(video_frame(1))
    track.push(ValueError("corrupt frame"))
    track.push(video_frame(2))
    track.end()
    reader = reader_of(track)
    await reader.run()  # does not raise
    assert reader.recv_errors == 1 and reader.frames_received == 2
    latest = reader.take_latest()
    assert latest is not None and latest.frame.to_ndarray()[0, 0, 0] == 2
    assert any("corrupt" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_a_track_that_keeps_failing_is_given_up() -> None:
    def broken(i: int) -> object:
        raise RuntimeError("decoder broke")

    track = GeneratedTrack(broken)
    reader = reader_of(track)
    await asyncio.wait_for(reader.run(), 5)
    assert reader.ended and reader.recv_errors >= 10


async def test_frames_are_drained_but_not_kept_while_keep_frames_is_off() -> None:
    track = GeneratedTrack(lambda i: video_frame(i), count=10)
    reader = reader_of(track, keep_frames=False)
    await reader.run()
    assert reader.frames_received == 10
    assert reader.take_latest() is None


async def test_turning_keep_frames_off_forgets_the_held_frame() -> None:
    track = GeneratedTrack(lambda i: video_frame(i), count=3)
    reader = reader_of(track)
    await reader.run()
    reader.keep_frames = False
    assert reader.take_latest() is None


async def test_a_track_that_never_sends_holds_nothing_and_can_be_cancelled() -> None:
    reader = reader_of(SilentTrack())
    task = asyncio.create_task(reader.run())
    await asyncio.sleep(0.05)
    assert reader.take_latest() is None and reader.frames_received == 0
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
