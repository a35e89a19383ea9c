"""SampleWriter against real databases: batching, a full buffer, refused rows, and outages
made real (a SQLite write lock held by another connection; PostgreSQL behind a TCP proxy
that the test cuts, and one that loses the reply to a COMMIT)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, make_url, select

from confbot.config import StoreConfig
from confbot.store.db import Database
from confbot.store.models import EmotionSampleRow
from confbot.store.writer import SampleWriter
from tests.confbot.store.builders import make_live_call, make_sample
from tests.support.tcp_proxy import TcpProxy

FAST = StoreConfig(batch_size=20, flush_interval_ms=50, buffer_max_samples=10_000, retry_max_s=0.3)


def stored_t_ms(db: Database, call_id: str) -> list[int]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(EmotionSampleRow.t_ms).where(EmotionSampleRow.call_id == call_id)
                            .order_by(EmotionSampleRow.id))
        return [r[0] for r in rows]


def count_rows(db: Database, call_id: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EmotionSampleRow)
                                .where(EmotionSampleRow.call_id == call_id)).scalar_one())


async def test_writes_every_sample_in_submission_order(db: Database) -> None:
    call = make_live_call(db, ["p1", "p2"])
    samples = [make_sample(call.id, f"p{1 + i % 2}", t_ms=i * 100) for i in range(95)]
    async with SampleWriter(db, FAST) as writer:
        for start in range(0, len(samples), 7):
            writer.submit(samples[start:start + 7])
        await asyncio.wait_for(writer.flush(), 10)
        stats = writer.stats
    assert stats.written == 95 and stats.dropped == 0 and stats.rejected == 0 and stats.pending == 0
    assert stats.batches >= 95 // FAST.batch_size
    assert stored_t_ms(db, call.id) == [s.t_ms for s in samples]


async def test_full_buffer_drops_the_oldest_counts_and_logs_them(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    call = make_live_call(db)
    writer = SampleWriter(db, StoreConfig(batch_size=100, flush_interval_ms=50, buffer_max_samples=10))
    caplog.set_level(logging.WARNING, logger="confbot.store.writer")
    writer.submit([make_sample(call.id, "p1", t_ms=i) for i in range(30)])  # not started yet
    assert writer.stats.dropped == 20 and writer.stats.pending == 10
    assert any("dropped 20 samples" in r.getMessage() and call.id in r.getMessage()
               for r in caplog.records)
    await writer.start()
    await asyncio.wait_for(writer.flush(), 10)
    final = await writer.close()
    assert final.written == 10 and final.dropped == 20
    assert stored_t_ms(db, call.id) == list(range(20, 30))  # the newest ten survived


async def test_a_refused_row_does_not_take_its_batch_with_it(db: Database) -> None:
    call = make_live_call(db, ["p1"])
    good = [make_sample(call.id, "p1", t_ms=i * 10) for i in range(12)]
    stranger = make_sample(call.id, "nobody", t_ms=55)  # no such participant: FK violation
    async with SampleWriter(db, FAST) as writer:
        writer.submit([*good[:6], stranger, *good[6:]])
        await asyncio.wait_for(writer.flush(), 10)
        stats = writer.stats
    assert stats.rejected == 1 and stats.written == 12 and stats.pending == 0
    assert stored_t_ms(db, call.id) == [s.t_ms for s in good]


async def test_sqlite_locked_by_another_writer_is_retried_until_released(sqlite_url: str) -> None:
    with Database.from_url(sqlite_url, sqlite_busy_timeout_ms=50) as db:
        call = make_live_call(db)
        path = make_url(sqlite_url).database
        assert path
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")  # nobody else may write (or read) until we end it
        release = threading.Timer(1.5, blocker.execute, args=("ROLLBACK",))
        try:
            async with SampleWriter(db, FAST) as writer:
                writer.submit([make_sample(call.id, "p1", t_ms=i) for i in range(50)])
                release.start()
                await asyncio.wait_for(writer.flush(), 20)
                stats = writer.stats
        finally:
            release.join()
            blocker.close()
        assert stats.retries > 0 and "locked" in (stats.last_error or "")
        assert stats.written == 50 and stats.pending == 0
        assert stored_t_ms(db, call.id) == list(range(50))


@pytest.fixture
def pg_proxy(postgresql_url: str) -> Iterator[tuple[TcpProxy, str]]:
    url = make_url(postgresql_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


async def test_postgresql_outage_keeps_samples_and_writes_each_once(
        postgresql_url: str, pg_proxy: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture) -> None:
    proxy, proxied_url = pg_proxy
    caplog.set_level(logging.INFO, logger="confbot.store.writer")
    with Database.from_url(postgresql_url) as direct, \
            Database.from_url(proxied_url, connect_timeout_s=2) as db:
        call = make_live_call(direct, ["p1"])
        async with SampleWriter(db, FAST) as writer:
            writer.submit([make_sample(call.id, "p1", t_ms=i) for i in range(40)])
            await asyncio.wait_for(writer.flush(), 10)
            proxy.cut()  # the database goes away with a connection in the pool
            writer.submit([make_sample(call.id, "p1", t_ms=i) for i in range(40, 100)])
            await asyncio.sleep(1.5)
            during = writer.stats
            proxy.resume()
            await asyncio.wait_for(writer.flush(), 20)
            after = writer.stats
        assert during.retries > 0 and during.pending == 60 and during.written == 40
        assert after.written == 100 and after.pending == 0 and after.dropped == 0
        assert stored_t_ms(direct, call.id) == list(range(100))
        messages = [r.getMessage() for r in caplog.records]
        assert any("unavailable" in m and call.id in m for m in messages)
        assert any("is back after" in m for m in messages)


async def test_postgresql_commit_whose_reply_is_lost_is_not_written_twice(
        postgresql_url: str, pg_proxy: tuple[TcpProxy, str]) -> None:
    proxy, proxied_url = pg_proxy
    with Database.from_url(postgresql_url) as direct, \
            Database.from_url(proxied_url, connect_timeout_s=2) as db:
        call = make_live_call(direct, ["p1"])
        async with SampleWriter(db, FAST) as writer:
            proxy.drop_reply_to(b"COMMIT")
            writer.submit([make_sample(call.id, "p1", t_ms=i) for i in range(15)])
            await asyncio.wait_for(writer.flush(), 20)
            stats = writer.stats
        assert proxy.dropped_replies == 1, "the proxy never saw the COMMIT"
        assert stats.retries >= 1  # the writer did see the failure ...
        assert stats.written == 15  # ... and found that the commit had gone through
        assert count_rows(direct, call.id) == 15


async def test_close_gives_up_at_its_deadline_and_reports_what_is_left(
        postgresql_url: str, pg_proxy: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture) -> None:
    proxy, proxied_url = pg_proxy
    with Database.from_url(postgresql_url) as direct, \
            Database.from_url(proxied_url, connect_timeout_s=2) as db:
        call = make_live_call(direct, ["p1"])
        writer = SampleWriter(db, FAST)
        await writer.start()
        proxy.cut()
        writer.submit([make_sample(call.id, "p1", t_ms=i) for i in range(25)])
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        final = await writer.close(timeout_s=1.0)
        took = loop.time() - started
        assert final.pending == 25 and final.written == 0
        assert took < 10, f"close() took {took:.1f} s with a 1 s deadline"
        assert any("not written" in r.getMessage() and call.id in r.getMessage()
                   for r in caplog.records if r.levelno == logging.ERROR)
        writer.submit([make_sample(call.id, "p1", t_ms=99)])  # after close: dropped, no raise
        assert writer.stats.dropped == 1
        assert count_rows(direct, call.id) == 0
