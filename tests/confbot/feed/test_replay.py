"""replay_then_live against a real SQLite store: no gap and no duplicate while samples arrive."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import aclosing
from datetime import timedelta
from typing import Any

import pytest

from confbot.feed.broker import FeedBroker, FeedInterruptedError
from confbot.feed.messages import call_message, message_key, participant_message
from confbot.feed.replay import replay_then_live
from confbot.pipeline.sample import EmotionSample
from confbot.store.calls import set_call_status
from confbot.store.db import Database
from confbot.store.events import call_t_ms, epoch_ms
from confbot.store.participants import add_participant
from confbot.store.samples import insert_samples
from tests.confbot.store.builders import T0, make_live_call, make_sample

pytestmark = pytest.mark.timeout(30)


def sample_keys(messages: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(m["participant_id"], m["face_index"], m["t_ms"]) for m in messages if m["type"] == "sample"]


def end_call(db: Database, broker: FeedBroker, call_id: str, at_s: float) -> None:
    """What the bot does when a call ends: store the status, send the `call` message, end the feed."""
    at = T0 + timedelta(seconds=at_s)
    call = set_call_status(db, call_id, "ended", at=at)
    broker.publish(call_id, call_message(call_id=call_id, status="ended", reason=None,
                                         t_ms=call_t_ms(call, at), wall_time_ms=epoch_ms(at)))
    broker.end_call(call_id)


async def collect(db: Database, broker: FeedBroker, call_id: str, since_ms: int,
                  **kwargs: Any) -> list[dict[str, Any]]:
    async with aclosing(replay_then_live(db, broker, call_id, since_ms, **kwargs)) as messages:
        return [m async for m in messages]


async def test_replay_of_an_ended_call_is_ordered_and_ends(db: Database) -> None:
    call = make_live_call(db, participants=("p1", "p2"))
    insert_samples(db, [make_sample(call.id, pid, t, face_index=f)
                        for t in range(0, 3000, 500) for pid in ("p2", "p1") for f in (0, 1)])
    set_call_status(db, call.id, "ended", at=T0 + timedelta(seconds=3))
    broker = FeedBroker()  # a fresh broker, as after a restart: it never saw the call end
    messages = await asyncio.wait_for(collect(db, broker, call.id, 1000, page_size=5), 10)
    assert [m["t_ms"] for m in messages] == sorted(m["t_ms"] for m in messages)
    assert len(sample_keys(messages)) == 4 * 4 == len(set(sample_keys(messages)))
    assert min(m["t_ms"] for m in messages) == 1000  # since_ms is inclusive
    assert messages[-1] == {"type": "call", "call_id": call.id, "status": "ended", "reason": None,
                            "t_ms": 3000, "wall_time_ms": epoch_ms(T0 + timedelta(seconds=3))}
    everything = await collect(db, broker, call.id, 0)
    assert [(m["type"], m.get("event") or m.get("status")) for m in everything[:3]] == [
        ("call", "connecting"), ("call", "live"), ("participant", "joined")]  # events first at equal t_ms
    assert broker.stats().subscribers == 0


async def test_no_gap_and_no_duplicate_while_samples_arrive_during_replay(db: Database) -> None:
    call = make_live_call(db, participants=("p1", "p2"))
    broker = FeedBroker(client_queue_max=10_000)
    published: list[EmotionSample] = []
    t = 0

    def produce(n: int) -> list[EmotionSample]:
        """n rounds of the pipeline: 2 participants x 2 faces, every 100 ms of call time."""
        nonlocal t
        batch = []
        for _ in range(n):
            batch += [make_sample(call.id, pid, t, face_index=f, top="happy") for pid in ("p1", "p2")
                      for f in (0, 1)]
            t += 100
        broker.publish_samples(call.id, batch)  # published first, written after: as the pipeline does
        published.extend(batch)
        return batch

    insert_samples(db, produce(100))  # before the client connects
    unwritten = produce(5)  # published before the client connects, still in the writer's buffer

    received: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def client() -> None:
        async with aclosing(replay_then_live(db, broker, call.id, 0, page_size=7)) as messages:
            async for message in messages:
                received.append(message)
                if len(received) % 10 == 0:
                    await asyncio.sleep(0)  # a client that takes its time
        done.set()

    reading = asyncio.create_task(client())
    # The writer writes the buffered samples while the replay runs, then keeps up with new ones.
    await asyncio.to_thread(insert_samples, db, unwritten)
    pending: list[EmotionSample] = []
    for round_ in range(60):
        batch = produce(1)
        if round_ % 3 == 2:  # the writer flushes every third round
            await asyncio.to_thread(insert_samples, db, pending)
            pending = []
        pending += batch
        if round_ == 30:  # someone joins mid-replay: stored, then published
            at = T0 + timedelta(milliseconds=t)
            add_participant(db, call.id, "p3", display_name="Late", source="whip", at=at)
            broker.publish(call.id, participant_message(call_id=call.id, participant_id="p3",
                                                        display_name="Late", event="joined",
                                                        t_ms=call_t_ms(call, at), wall_time_ms=epoch_ms(at)))
        await asyncio.sleep(0.002)
    assert not done.is_set()
    await asyncio.to_thread(insert_samples, db, pending)
    end_call(db, broker, call.id, t / 1000)
    await asyncio.wait_for(reading, 20)

    got = sample_keys(received)
    duplicates = [k for k, n in Counter(got).items() if n > 1]
    assert duplicates == []
    assert set(got) == {(s.participant_id, s.face_index, s.t_ms) for s in published}
    assert [m["display_name"] for m in received if m["type"] == "participant" and m["participant_id"] == "p3"
            ] == ["Late"]
    keys = [message_key(m) for m in received]
    assert len(keys) == len(set(keys))
    assert received[-1]["type"] == "call" and received[-1]["status"] == "ended"
    assert broker.stats().subscribers == 0


async def test_a_sample_still_in_the_writer_buffer_comes_once_from_memory(db: Database) -> None:
    call = make_live_call(db)
    broker = FeedBroker()
    insert_samples(db, [make_sample(call.id, "p1", 0)])
    broker.publish_samples(call.id, [make_sample(call.id, "p1", 500)])  # not written yet
    async with aclosing(replay_then_live(db, broker, call.id, 0)) as messages:
        first = [await asyncio.wait_for(anext(messages), 2) for _ in range(5)]
        assert sample_keys(first) == [("p1", 0, 0), ("p1", 0, 500)]
        insert_samples(db, [make_sample(call.id, "p1", 500)])  # the writer catches up
        broker.publish_samples(call.id, [make_sample(call.id, "p1", 1000)])
        assert sample_keys([await asyncio.wait_for(anext(messages), 2)]) == [("p1", 0, 1000)]
    assert broker.stats().subscribers == 0


async def test_a_lagging_live_part_raises_so_the_client_reconnects(db: Database) -> None:
    call = make_live_call(db)
    broker = FeedBroker(client_queue_max=3)
    async with aclosing(replay_then_live(db, broker, call.id, 0)) as messages:
        await anext(messages)  # the replay has started: the subscription exists
        broker.publish_samples(call.id, [make_sample(call.id, "p1", t) for t in range(0, 1000, 100)])
        with pytest.raises(FeedInterruptedError) as info:
            async for _message in messages:
                pass
    assert info.value.reason == "lagged"


async def test_negative_since_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="since_ms"):
        await collect(db, FeedBroker(), "nope", -1)
