"""The feed websocket under a real uvicorn server on 127.0.0.1, with real `websockets` clients."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from confbot.api.feed import feed_router
from confbot.feed.broker import FeedBroker
from confbot.feed.client import format_message, run_feed_client
from confbot.feed.messages import call_message
from confbot.store.calls import create_call, set_call_status, verify_host_token
from confbot.store.db import Database
from confbot.store.events import call_t_ms, epoch_ms
from confbot.store.participants import add_participant
from confbot.store.samples import insert_samples
from tests.confbot.store.builders import T0, make_sample

pytestmark = pytest.mark.timeout(30)


@asynccontextmanager
async def serving(db: Database, broker: FeedBroker, *, ws: str = "websockets-sansio") -> AsyncIterator[str]:
    """The feed router in a real server (uvicorn's websocket implementation `ws`); yields its ws:// URL."""
    app = FastAPI()
    app.include_router(feed_router(db, broker, authorize=lambda call_id, token:
                                   verify_host_token(db, call_id, token)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws=ws,
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"
    finally:
        await broker.close()
        server.should_exit = True
        await task


def new_live_call(db: Database) -> tuple[str, str]:
    """A live call with participant p1, and its host token."""
    created = create_call(db, title="feed test", connector={"type": "room"}, sample_fps=2.0, now=T0)
    set_call_status(db, created.call.id, "live", at=T0)
    add_participant(db, created.call.id, "p1", display_name="Ada", source="whip", at=T0)
    return created.call.id, created.host_token


def end(db: Database, broker: FeedBroker, call_id: str, at_s: float) -> None:
    at = T0 + timedelta(seconds=at_s)
    call = set_call_status(db, call_id, "ended", at=at)
    broker.publish(call_id, call_message(call_id=call_id, status="ended", reason=None,
                                         t_ms=call_t_ms(call, at), wall_time_ms=epoch_ms(at)))
    broker.end_call(call_id)


def pipeline_step(db: Database, broker: FeedBroker, call_id: str, t_ms_values: range) -> None:
    """What the pipeline and its writer do: publish the samples, then store them."""
    samples = [make_sample(call_id, "p1", t, top="happy") for t in t_ms_values]
    broker.publish_samples(call_id, samples)
    insert_samples(db, samples)


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what


async def close_of(url: str, **kwargs: Any) -> tuple[int, str]:
    """The close code and reason of a connection, asserting that no data came before the close."""
    async with connect(url, **kwargs) as websocket:
        with pytest.raises(ConnectionClosed) as closed:
            frame = await asyncio.wait_for(websocket.recv(), 5)
            raise AssertionError(f"data before the close: {frame!r}")
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


# `confbot serve` runs uvicorn with ws="websockets"; "websockets-sansio" is what "auto" picks.
WS_IMPLEMENTATIONS = pytest.mark.parametrize("ws", ["websockets-sansio", "websockets"])


@WS_IMPLEMENTATIONS
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_refusals_close_with_a_code_and_reason_before_any_data(db: Database, ws: str) -> None:
    call_id, token = new_live_call(db)
    broker = FeedBroker()
    async with serving(db, broker, ws=ws) as base:
        feed = f"{base}/api/calls/{call_id}/feed"
        code, reason = await close_of(f"{feed}?token=wrong-token")
        assert (code, reason) == (4403, "this host token does not open this call")
        code, reason = await close_of(feed, additional_headers={"Authorization": "Bearer wrong"})
        assert code == 4403
        code, reason = await close_of(feed)
        assert code == 4401 and "host token is needed" in reason
        code, reason = await close_of(f"{base}/api/calls/no-such-call/feed?token={token}")
        assert code == 4404 and "no-such-call" in reason
        for bad in ("abc", "-5", "1.5"):
            code, reason = await close_of(f"{feed}?token={token}&since_ms={bad}")
            assert code == 4400 and "since_ms" in reason
        assert broker.stats().subscribers == 0


@WS_IMPLEMENTATIONS
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_replay_then_live_then_close_when_the_call_ends(db: Database, ws: str) -> None:
    call_id, token = new_live_call(db)
    broker = FeedBroker()
    pipeline_step(db, broker, call_id, range(0, 1500, 500))
    async with serving(db, broker, ws=ws) as base:
        url = f"{base}/api/calls/{call_id}/feed?token={token}&since_ms=500"
        async with connect(url) as websocket:
            replayed = [json.loads(await asyncio.wait_for(websocket.recv(), 5)) for _ in range(2)]
            assert [(m["type"], m["t_ms"]) for m in replayed] == [("sample", 500), ("sample", 1000)]
            assert replayed[0] == make_sample(call_id, "p1", 500, top="happy").to_message()
            await until(lambda: broker.stats().subscribers == 1, "the live subscription")
            pipeline_step(db, broker, call_id, range(1500, 2500, 500))
            end(db, broker, call_id, 3)
            rest = [json.loads(frame) async for frame in websocket]  # until a normal close
            assert websocket.close_code == 1000 and websocket.close_reason == "the call has ended"
        assert [(m["type"], m["t_ms"]) for m in rest] == [("sample", 1500), ("sample", 2000), ("call", 3000)]
        assert rest[-1]["status"] == "ended"
        async with connect(url) as websocket:  # an ended call: the replay, then a normal close
            again = [json.loads(frame) async for frame in websocket]
            assert websocket.close_code == 1000
        assert [m["t_ms"] for m in again] == [500, 1000, 1500, 2000, 3000]
        assert broker.stats().subscribers == 0


async def test_a_client_that_leaves_releases_its_subscription(db: Database) -> None:
    call_id, token = new_live_call(db)
    broker = FeedBroker()
    async with serving(db, broker) as base:
        async with connect(f"{base}/api/calls/{call_id}/feed?token={token}") as websocket:
            await asyncio.wait_for(websocket.recv(), 5)
            await until(lambda: broker.stats().subscribers == 1, "the live subscription")
        await until(lambda: broker.stats().subscribers == 0, "the subscription to be released")
        pipeline_step(db, broker, call_id, range(0, 100, 100))  # publishing to nobody is fine


async def test_a_client_that_falls_behind_is_closed_with_1013(db: Database) -> None:
    call_id, token = new_live_call(db)
    broker = FeedBroker(client_queue_max=3)
    async with serving(db, broker) as base:
        async with connect(f"{base}/api/calls/{call_id}/feed",
                           additional_headers={"Authorization": f"Bearer {token}"}) as websocket:
            for _ in range(3):  # connecting, live, joined
                await asyncio.wait_for(websocket.recv(), 5)
            await until(lambda: broker.stats().subscribers == 1, "the live subscription")
            pipeline_step(db, broker, call_id, range(0, 1000, 100))  # 10 at once, in one loop step
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(websocket.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert "since_ms" in closed.value.rcvd.reason
        assert broker.stats().lagged == 1


async def test_feed_client_reconnects_after_lagging_and_prints_each_message_once(db: Database) -> None:
    call_id, token = new_live_call(db)
    broker = FeedBroker(client_queue_max=5)
    out, err = io.StringIO(), io.StringIO()
    async with serving(db, broker) as base:
        http_base = base.replace("ws://", "http://")
        client = asyncio.create_task(asyncio.to_thread(
            run_feed_client, http_base, call_id, token, since_ms=None, output=out, errors=err,
            json_lines=True, max_backoff_s=0.2))
        await until(lambda: broker.stats().subscribers == 1, "the client's subscription")
        pipeline_step(db, broker, call_id, range(0, 300, 100))
        await until(lambda: out.getvalue().count('"type":"sample"') == 3, "the first samples")
        pipeline_step(db, broker, call_id, range(300, 1300, 100))  # a burst the client cannot take
        await until(lambda: broker.stats().lagged == 1 and broker.stats().subscribers == 1,
                    "the client to reconnect")
        await until(lambda: out.getvalue().count('"type":"sample"') == 13, "the replayed samples")
        pipeline_step(db, broker, call_id, range(1300, 1500, 100))
        end(db, broker, call_id, 2)
        assert await asyncio.wait_for(client, 10) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["t_ms"] for m in lines if m["type"] == "sample"] == list(range(0, 1500, 100))
    assert [(m["type"], m.get("status") or m.get("event")) for m in lines if m["type"] != "sample"] == [
        ("call", "connecting"), ("call", "live"), ("participant", "joined"), ("call", "ended")]
    assert "reconnecting" in err.getvalue() and "1013" in err.getvalue()
    assert "the call has ended" in err.getvalue()


async def test_feed_client_refused_token_unreachable_server_and_readable_lines(db: Database) -> None:
    call_id, token = new_live_call(db)
    broker = FeedBroker()
    pipeline_step(db, broker, call_id, range(0, 200, 100))
    end(db, broker, call_id, 1)
    async with serving(db, broker) as base:
        http_base = base.replace("ws://", "http://")
        err = io.StringIO()
        status = await asyncio.to_thread(run_feed_client, http_base, call_id, "wrong", since_ms=None,
                                         output=io.StringIO(), errors=err, json_lines=False)
        assert status == 1
        assert "refused" in err.getvalue() and "4403" in err.getvalue()
        out = io.StringIO()
        status = await asyncio.to_thread(run_feed_client, http_base, call_id, token, since_ms=100,
                                         output=out, errors=io.StringIO(), json_lines=False)
        assert status == 0
        assert out.getvalue().splitlines() == [
            "00:00.1  sample       p1#0  happy    0.70  valence +0.00  arousal +0.00  attention 1.00",
            "00:01.0  call         ended",
        ]
    err = io.StringIO()
    assert run_feed_client(http_base, call_id, token, errors=err) == 1  # the server is gone
    assert "cannot connect" in err.getvalue()
    assert run_feed_client("ftp://x", call_id, token, errors=io.StringIO()) == 2


def test_readable_lines_for_every_message_type() -> None:
    assert format_message({"type": "participant", "participant_id": "p1", "display_name": "Ada",
                           "event": "consent_withdrawn", "t_ms": 3_725_000}) == (
        "1:02:05.0  participant  p1 (Ada) consent withdrawn")
    assert format_message({"type": "call", "status": "failed", "reason": "janus gone", "t_ms": 0}) == (
        "00:00.0  call         failed: janus gone")
    assert format_message({"type": "audience", "t_ms": 61_500, "faces": 4, "participants": 3,
                           "mean_valence": 0.25, "mean_arousal": -0.1,
                           "shares": {"happy": 0.5, "neutral": 0.25, "sad": 0.25, "angry": 0.0}}) == (
        "01:01.5  audience     4 faces, 3 participants  valence +0.25  arousal -0.10  "
        "happy 50%, sad 25%, neutral 25%")  # ties in EMOTIONS order
