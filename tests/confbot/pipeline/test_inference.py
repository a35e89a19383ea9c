"""InferenceWorker: one thread, batches across callers, converts frames off the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import numpy as np
import pytest

from confbot.pipeline.inference import InferenceClosedError, InferenceWorker
from face_core.analyzer import FaceAnalyzer
from tests.confbot.pipeline.support import StubAnalyzer, until, video_frame


def worker_of(stub: StubAnalyzer, **options: Any) -> InferenceWorker:
    return InferenceWorker(cast(FaceAnalyzer, stub), **options)


async def test_two_callers_at_once_share_one_batch() -> None:
    stub = StubAnalyzer()
    async with worker_of(stub) as worker:
        a, b = worker.new_stream(), worker.new_stream()
        first, second = await asyncio.gather(worker.analyze([(a, video_frame(10))]),
                                             worker.analyze([(b, video_frame(20))]))
    assert len(stub.batches) == 1
    assert [(s, v) for s, v, _, _ in stub.batches[0]] == [(a, 10), (b, 20)]
    assert len(first) == 1 and len(second) == 1
    assert first[0].faces[0].top_emotion == "happy"
    assert (first[0].width, first[0].height) == (64, 48)
    assert worker.stats.batches == 1 and worker.stats.frames == 2 and worker.stats.faces == 2


async def test_callers_arriving_while_a_batch_runs_go_into_the_next_one() -> None:
    stub = StubAnalyzer()
    stub.gate = threading.Event()
    worker = worker_of(stub)
    try:
        first = asyncio.create_task(worker.analyze([(worker.new_stream(), video_frame(1))]))
        await until(stub.entered.is_set, what="the first batch to start")
        later = [asyncio.create_task(worker.analyze([(worker.new_stream(), video_frame(v))]))
                 for v in (2, 3, 4)]
        await asyncio.sleep(0.02)
        assert worker.stats.pending_frames == 3
        stub.gate.set()
        results = await asyncio.wait_for(asyncio.gather(first, *later), 5)
    finally:
        await worker.close()
    assert [[v for _, v, _, _ in batch] for batch in stub.batches] == [[1], [2, 3, 4]]
    assert all(len(r) == 1 and r[0].error is None for r in results)


async def test_batches_are_bounded_by_max_batch_frames() -> None:
    stub = StubAnalyzer()
    async with worker_of(stub, max_batch_frames=2) as worker:
        s = worker.new_stream()
        results = await worker.analyze([(s, video_frame(v)) for v in range(5)])
    assert [len(b) for b in stub.batches] == [2, 2, 1]
    assert list(stub.values()) == [0, 1, 2, 3, 4]  # in order
    assert len(results) == 5


async def test_frames_are_scaled_in_the_worker_thread_and_boxes_come_back_in_frame_pixels() -> None:
    stub = StubAnalyzer()
    async with worker_of(stub, max_convert_side_px=640) as worker:
        [result] = await worker.analyze([(worker.new_stream(), video_frame(50, width=1920, height=1080))])
    [(_, _, shape, thread)] = stub.batches[0]
    assert shape == (360, 640, 3)  # long side scaled down to 640 for analysis
    assert thread.startswith("confbot-inference") and thread != threading.current_thread().name
    assert (result.width, result.height) == (1920, 1080)
    # the stub puts the face in the middle half of what it sees; in frame pixels that is:
    assert result.faces[0].box.as_list() == [480, 270, 960, 540]


async def test_bgr_arrays_are_used_as_given() -> None:
    stub = StubAnalyzer()
    async with worker_of(stub) as worker:
        [result] = await worker.analyze([(worker.new_stream(), np.full((100, 200, 3), 7, np.uint8))])
    assert stub.batches[0][0][2] == (100, 200, 3)
    assert result.faces[0].box.as_list() == [50, 25, 100, 50]


async def test_a_frame_that_cannot_be_converted_fails_alone() -> None:
    stub = StubAnalyzer()
    async with worker_of(stub) as worker:
        s = worker.new_stream()
        results = await worker.analyze([(s, video_frame(1)), (s, np.zeros((4, 4, 3), np.int32)),
                                        (s, "not a frame")])
    good, bad_dtype, not_frame = results
    assert good.error is None and len(good.faces) == 1
    assert bad_dtype.faces == [] and bad_dtype.error is not None and "int32" in bad_dtype.error
    assert (bad_dtype.width, bad_dtype.height) == (4, 4)
    assert not_frame.faces == [] and not_frame.error is not None and "str" in not_frame.error
    assert worker.stats.frame_errors == 2
    assert list(stub.values()) == [1]  # only the good frame reached the analyzer


async def test_a_batch_that_raises_is_redone_frame_by_frame() -> None:
    stub = StubAnalyzer()
    stub.poison = 66
    async with worker_of(stub) as worker:
        s, t = worker.new_stream(), worker.new_stream()
        ok, poisoned = await worker.analyze([(s, video_frame(1)), (t, video_frame(66))])
    assert ok.error is None and len(ok.faces) == 1
    assert poisoned.error is not None and "poisoned" in poisoned.error
    assert worker.stats.batch_failures == 1


async def test_close_fails_waiting_callers_and_refuses_new_ones() -> None:
    stub = StubAnalyzer()
    stub.gate = threading.Event()
    worker = worker_of(stub)
    running = asyncio.create_task(worker.analyze([(worker.new_stream(), video_frame(1))]))
    await until(stub.entered.is_set, what="the first batch to start")
    waiting = asyncio.create_task(worker.analyze([(worker.new_stream(), video_frame(2))]))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(worker.close())
    await asyncio.sleep(0.01)
    with pytest.raises(InferenceClosedError):
        await waiting
    stub.gate.set()  # the running batch finishes; close() waits for it
    await asyncio.wait_for(closing, 5)
    assert len((await running)[0].faces) == 1
    with pytest.raises(InferenceClosedError):
        await worker.analyze([(worker.new_stream(), video_frame(3))])
    await worker.close()  # idempotent


async def test_a_cancelled_caller_does_not_break_the_worker() -> None:
    stub = StubAnalyzer()
    stub.gate = threading.Event()
    async with worker_of(stub) as worker:
        first = asyncio.create_task(worker.analyze([(worker.new_stream(), video_frame(1))]))
        await until(stub.entered.is_set, what="the first batch to start")
        gone = asyncio.create_task(worker.analyze([(worker.new_stream(), video_frame(2))]))
        await asyncio.sleep(0.01)
        first.cancel()
        gone.cancel()
        stub.gate.set()
        [after] = await asyncio.wait_for(worker.analyze([(worker.new_stream(), video_frame(3))]), 5)
    assert after.error is None
    assert list(stub.values()) == [1, 3]  # the cancelled, not yet started request was skipped


async def test_the_event_loop_keeps_running_while_a_batch_runs() -> None:
    stub = StubAnalyzer()
    stub.gate = threading.Event()
    async with worker_of(stub) as worker:
        task = asyncio.create_task(worker.analyze([(worker.new_stream(), video_frame(1))]))
        await until(stub.entered.is_set, what="the batch to start")
        beats = 0
        for _ in range(5):
            await asyncio.sleep(0.005)
            beats += 1
        assert beats == 5 and not task.done()
        stub.gate.set()
        await task


async def test_analyze_still_with_the_real_model(analyzer, face_photo_bgr) -> None:  # type: ignore[no-untyped-def]
    async with InferenceWorker(analyzer) as worker:
        faces = await worker.analyze_still(face_photo_bgr)
    assert len(faces) == 1 and faces[0].top_emotion == "happy"
