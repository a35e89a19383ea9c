"""FeedBroker: fan-out, slow subscribers, the audience aggregate (fake clock), the end of a call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from confbot.feed.broker import FeedBroker, FeedInterruptedError, FeedSubscription
from confbot.feed.messages import call_message
from tests.confbot.store.builders import make_sample

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def msg(t_ms: int, call_id: str = "c1") -> dict[str, Any]:
    return call_message(call_id=call_id, status="live", reason=None, t_ms=t_ms, wall_time_ms=t_ms)


def take(subscription: FeedSubscription) -> list[dict[str, Any]]:
    """What is queued now, consumed."""
    taken = list(subscription.pending())
    for _ in taken:
        subscription._queue.popleft()
    return taken


async def test_fan_out_to_every_subscriber_of_the_call_only() -> None:
    broker = FeedBroker()
    a, b, other = broker.subscribe("c1"), broker.subscribe("c1"), broker.subscribe("c2")
    for t in range(3):
        broker.publish("c1", msg(t))
    broker.publish("c2", msg(7, "c2"))
    assert [m["t_ms"] for m in take(a)] == [0, 1, 2]
    assert [m["t_ms"] for m in take(b)] == [0, 1, 2]
    assert [m["t_ms"] for m in take(other)] == [7]
    a.close()
    broker.publish("c1", msg(3))
    assert take(a) == [] and [m["t_ms"] for m in take(b)] == [3]
    assert broker.stats().subscribers == 2
    await broker.close()


async def test_iteration_waits_for_live_messages() -> None:
    broker = FeedBroker()
    async with broker.subscribe("c1") as subscription:
        got = asyncio.create_task(anext(subscription))
        await asyncio.sleep(0.01)
        assert not got.done()
        broker.publish("c1", msg(5))
        assert (await asyncio.wait_for(got, 1))["t_ms"] == 5
    assert subscription.end_reason == "closed"
    await broker.close()


async def test_a_stuck_subscriber_is_ended_as_lagged_without_slowing_publish() -> None:
    broker = FeedBroker(client_queue_max=50)
    stuck = broker.subscribe("c1")
    reader = broker.subscribe("c1")
    received: list[int] = []

    async def read() -> None:
        async for message in reader:
            received.append(message["t_ms"])
            if len(received) == 2000:
                return

    reading = asyncio.create_task(read())
    started = time.perf_counter()
    for t in range(2000):
        broker.publish("c1", msg(t))
        if t % 25 == 0:
            await asyncio.sleep(0)  # let the reader keep up; the stuck one never reads
    publish_s = time.perf_counter() - started
    await asyncio.wait_for(reading, 5)
    assert received == list(range(2000))
    assert stuck.end_reason == "lagged" and stuck.pending() == ()  # its backlog is freed at once
    with pytest.raises(FeedInterruptedError) as info:
        await anext(stuck)
    assert info.value.reason == "lagged" and "c1" in str(info.value)
    stats = broker.stats()
    assert stats.lagged == 1 and stats.subscribers == 1 and stats.published == 2000
    assert publish_s < 2.0
    await broker.close()


async def test_publish_never_raises_on_bad_input() -> None:
    broker = FeedBroker()
    subscription = broker.subscribe("c1")
    broker.publish("c1", {"type": "gossip"})
    broker.publish("c1", "not a dict")  # type: ignore[arg-type]
    broker.publish_samples("c1", [make_sample("c2", "p1", 0)])  # another call's sample
    assert take(subscription) == []
    assert broker.stats().invalid == 3
    await broker.close()


async def test_audience_aggregates_the_latest_sample_of_each_recent_face() -> None:
    clock = FakeClock()
    broker = FeedBroker(clock=clock, audience_window_ms=2000)
    subscription = broker.subscribe("c1")
    broker.publish_samples("c1", [make_sample("c1", "p3", 100, top="angry", valence=-0.6, arousal=0.7)])
    clock.now += 1.5
    broker.publish_samples("c1", [
        make_sample("c1", "p1", 2000, top="happy", valence=0.8, arousal=0.5, attention=1.0),
        make_sample("c1", "p1", 2000, face_index=1, top="neutral", valence=0.0, arousal=0.0,
                    attention=0.5),
        make_sample("c1", "p2", 2100, top="happy", valence=0.6, arousal=0.4),
    ])
    clock.now += 0.6  # p3's sample is now 2.1 s old: out of the window
    broker.publish_samples("c1", [make_sample("c1", "p2", 2600, top="sad", valence=-0.5, arousal=-0.3,
                                              attention=0.0)])  # replaces p2's face 0
    take(subscription)
    broker.tick()
    [audience] = take(subscription)
    assert audience == {
        "type": "audience", "call_id": "c1", "t_ms": 2600,
        "wall_time_ms": make_sample("c1", "p2", 2600).wall_time_ms,
        "faces": 3, "participants": 2,
        "mean_valence": round((0.8 + 0.0 - 0.5) / 3, 4), "mean_arousal": round((0.5 + 0.0 - 0.3) / 3, 4),
        "mean_attention": 0.5,
        "shares": {"angry": 0.0, "disgust": 0.0, "fear": 0.0, "happy": 0.3333, "sad": 0.3333,
                   "surprise": 0.0, "neutral": 0.3333},
    }
    clock.now += 2.1  # nobody seen for 2.1 s: no audience message, and the call is forgotten
    broker.tick()
    assert take(subscription) == [] and broker.audience("c1") is None
    assert broker._faces == {}
    await broker.close()


async def test_the_ticker_sends_audience_and_close_interrupts_subscribers() -> None:
    broker = FeedBroker(audience_interval_s=0.05)
    await broker.start()
    subscription = broker.subscribe("c1")
    broker.publish_samples("c1", [make_sample("c1", "p1", 0, top="happy")])
    assert (await asyncio.wait_for(anext(subscription), 1))["type"] == "sample"
    audience = await asyncio.wait_for(anext(subscription), 1)
    assert audience["type"] == "audience" and audience["faces"] == 1 and audience["shares"]["happy"] == 1.0
    await broker.close()
    with pytest.raises(FeedInterruptedError) as info:
        await anext(subscription)
    assert info.value.reason == "shutdown"
    broker.publish("c1", msg(9))
    assert broker.stats().dropped == 1


async def test_end_call_delivers_what_is_queued_then_ends() -> None:
    broker = FeedBroker()
    subscription = broker.subscribe("c1")
    broker.publish_samples("c1", [make_sample("c1", "p1", 10)])
    broker.publish("c1", call_message(call_id="c1", status="ended", reason=None, t_ms=20, wall_time_ms=0))
    broker.end_call("c1")
    assert [m["type"] async for m in subscription] == ["sample", "call"]
    assert subscription.end_reason == "call_ended"
    late = broker.subscribe("c1", since_ms=0)
    assert [m async for m in late] == []
    broker.publish("c1", msg(30))
    broker.tick()
    assert broker.stats().dropped == 1 and broker.stats().subscribers == 0
    await broker.close()


async def test_subscribe_since_starts_with_recent_messages_not_yet_in_sql() -> None:
    clock = FakeClock()
    broker = FeedBroker(clock=clock, history_ms=10_000)
    broker.publish("c1", msg(100))
    clock.now += 5
    broker.publish_samples("c1", [make_sample("c1", "p1", 5000), make_sample("c1", "p1", 5500)])
    broker.tick()  # an audience message is never part of the history
    subscription = broker.subscribe("c1", since_ms=5000)
    assert [(m["type"], m["t_ms"]) for m in subscription.pending()] == [("sample", 5000), ("sample", 5500)]
    clock.now += 6  # the first message is now 11 s old
    assert [m["t_ms"] for m in broker.subscribe("c1", since_ms=0).pending()] == [5000, 5500]
    assert broker.subscribe("c1").pending() == ()
    await broker.close()
