"""`SampleWriter`: batched inserts of emotion samples that never hold up the media path.

    pipeline --submit()--> bounded buffer --(every flush_interval_ms, or batch_size pending)-->
        worker thread: one INSERT transaction per batch --> emotion_samples

`submit()` only appends to a buffer. When the buffer is full, the oldest pending samples are
dropped, counted and logged. A batch the database cannot take now (it is down, locked,
restarting) is kept and retried with exponential backoff; when the database answers again,
everything pending is written in the order it was submitted. Each sample is written at most
once: on PostgreSQL a commit whose outcome was lost with the connection is looked up by its
transaction id before the batch is sent again.

One writer can carry the samples of any number of calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType

from sqlalchemy import insert, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from confbot.config import StoreConfig
from confbot.pipeline.sample import EmotionSample
from confbot.store.db import Database
from confbot.store.models import EmotionSampleRow, sample_values

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S = 10.0  # at most one "dropped samples" warning this often
RETRY_INITIAL_S = 0.1
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WriterStats:
    """Counts of samples since the writer was made.

    written: committed to the database. dropped: discarded because the buffer was full (the
    oldest first) or submitted after close. rejected: refused by the database as invalid (for
    example an unknown participant), or malformed. pending: waiting, including a batch being
    written; after `close()`, what could not be written. retries: failed write attempts that
    were retried. batches: transactions committed. last_error: the latest database error.
    """

    written: int
    dropped: int
    rejected: int
    pending: int
    retries: int
    batches: int
    last_error: str | None


class _Rejected(Exception):
    """The database refused the batch for what it holds; retrying the same rows cannot help."""


class _InDoubt(Exception):
    """A commit whose outcome is not known yet."""


class _GiveUp(Exception):
    """`close()`'s deadline passed while the database was still away."""


class SampleWriter:
    """Writes `EmotionSample`s to the `emotion_samples` table in batches, off the event loop.

    Use it from one event loop: `async with SampleWriter(db, settings.store) as writer:` (or
    `await start()` ... `await close()`), and `writer.submit(samples)` from the media path.
    The participants of the samples must have been added (`add_participant`) beforehand.
    """

    def __init__(self, db: Database, config: StoreConfig | None = None, *,
                 close_timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        self._db = db
        self._config = config or StoreConfig()
        self._close_timeout_s = close_timeout_s
        self._pending: deque[EmotionSample] = deque()
        self._inflight: list[EmotionSample] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._deadline: float | None = None
        # counters
        self._submitted = 0
        self._written = 0
        self._dropped = 0
        self._rejected = 0
        self._retries = 0
        self._batches = 0
        self._last_error: str | None = None
        # outage and drop reporting
        self._outage_since: float | None = None
        self._outage_retries = 0
        self._backoff_s = 0.0
        self._drops_unlogged: Counter[str] = Counter()
        self._last_drop_log = -DROP_LOG_INTERVAL_S
        # PostgreSQL transaction id of a commit whose outcome was lost; touched only by the
        # one worker thread call in flight.
        self._in_doubt_xid: int | None = None

    # -- the media path ------------------------------------------------------------------

    def submit(self, samples: Sequence[EmotionSample]) -> None:
        """Queue samples for writing. Never blocks and never raises for a full buffer or a
        database that is away: past `buffer_max_samples`, the oldest pending samples are
        dropped, counted in `stats.dropped` and logged (at most every 10 s) with their call ids.
        """
        if not samples:
            return
        self._submitted += len(samples)
        if self._closed:
            self._drop(samples)
            return
        self._pending.extend(samples)
        overflow = len(self._pending) - self._config.buffer_max_samples
        if overflow > 0:
            self._drop(self._pending.popleft() for _ in range(overflow))
        if len(self._pending) >= self._config.batch_size:
            self._wake.set()

    @property
    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        return WriterStats(written=self._written, dropped=self._dropped, rejected=self._rejected,
                           pending=len(self._pending) + len(self._inflight), retries=self._retries,
                           batches=self._batches, last_error=self._last_error)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background flushing task."""
        if self._task is not None or self._closed:
            raise RuntimeError("SampleWriter.start() called twice or after close()")
        self._task = asyncio.create_task(self._run(), name="store-sample-writer")
        self._task.add_done_callback(self._task_done)

    async def flush(self) -> None:
        """Wait until every sample submitted so far is written, dropped or rejected.

        It waits as long as the database is away; wrap it in `asyncio.timeout()` to bound it.
        """
        if self._task is None or self._task.done():
            raise RuntimeError("SampleWriter is not running: call start() first")
        target = self._submitted
        self._wake.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._settled >= target or self._task is None
                                          or self._task.done())

    async def close(self, timeout_s: float | None = None) -> WriterStats:
        """Write what is pending, waiting at most `timeout_s` (default 10 s) for the database,
        then stop. Returns the final stats: `pending` is what could not be written, and it is
        logged as an error with the call ids. Samples submitted after this are dropped.
        """
        if self._closed:
            return self.stats
        self._closing = True
        self._deadline = time.monotonic() + (self._close_timeout_s if timeout_s is None else timeout_s)
        if self._task is None and self._pending:
            self._task = asyncio.create_task(self._run(), name="store-sample-writer")
        self._wake.set()
        if self._task is not None:
            # The task stops retrying at the deadline, after the attempt in flight; the grace
            # period bounds an attempt stuck on a dead connection.
            grace_s = max(0.0, self._deadline - time.monotonic()) + 30.0
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task
            except Exception:  # already logged by _task_done
                pass
        self._closed = True
        self._log_drops(force=True)
        stats = self.stats
        if stats.pending:
            log.error("store writer closed with %d samples not written (calls %s); last error: %s",
                      stats.pending, _call_ids([*self._inflight, *self._pending]), stats.last_error)
        else:
            log.info("store writer closed: %d samples written in %d batches, %d dropped, %d rejected",
                     stats.written, stats.batches, stats.dropped, stats.rejected)
        return stats

    async def __aenter__(self) -> SampleWriter:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- the flushing task -----------------------------------------------------------------

    async def _run(self) -> None:
        interval_s = self._config.flush_interval_ms / 1000
        while True:
            if not self._closing and len(self._pending) < self._config.batch_size:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval_s)
            self._wake.clear()
            try:
                while self._pending:
                    size = min(self._config.batch_size, len(self._pending))
                    self._inflight = [self._pending.popleft() for _ in range(size)]
                    await self._write(self._inflight)
                    self._inflight = []
                    await self._notify()
            except _GiveUp:
                self._pending.extendleft(reversed(self._inflight))
                self._inflight = []
                return
            finally:
                await self._notify()
            if self._closing:
                return

    async def _write(self, batch: list[EmotionSample]) -> None:
        try:
            await self._write_retrying(batch)
            return
        except _Rejected as exc:
            log.warning("database refused a batch of %d samples (calls %s): %s; writing them one by one",
                        len(batch), _call_ids(batch), exc)
        while batch:  # find the rows it refuses and write the rest, shrinking the batch as we go
            sample = batch[0]
            try:
                await self._write_retrying([sample])
            except _Rejected as exc:
                self._rejected += 1
                log.error("call %s: sample of participant %s at t_ms=%d refused: %s",
                          sample.call_id, sample.participant_id, sample.t_ms, exc)
            del batch[0]

    async def _write_retrying(self, batch: list[EmotionSample]) -> None:
        while True:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise _GiveUp
            try:
                await asyncio.to_thread(self._insert, batch)
            except _Rejected:
                raise
            except Exception as exc:
                if _is_row_error(exc):
                    raise _Rejected(_describe(exc)) from exc
                self._on_failure(exc, batch)
                delay = self._next_backoff()
                if self._deadline is not None:
                    delay = min(delay, max(0.0, self._deadline - time.monotonic()))
                await asyncio.sleep(delay)
                continue
            self._on_success(len(batch))
            return

    def _insert(self, batch: list[EmotionSample]) -> None:
        """One transaction for the batch. Runs in a worker thread."""
        try:
            rows = [sample_values(s) for s in batch]
        except (ValueError, TypeError) as exc:
            raise _Rejected(f"malformed sample: {exc}") from exc
        with self._db.engine.connect() as conn:
            if self._in_doubt_xid is not None:
                # Did the commit whose answer was lost go through? Ask before writing again.
                status = conn.execute(text("SELECT txid_status(:xid)"), {"xid": self._in_doubt_xid}).scalar()
                conn.rollback()
                if status == "in progress":
                    raise _InDoubt(f"transaction {self._in_doubt_xid} still in progress")
                self._in_doubt_xid = None
                if status == "committed":
                    return
            xid = None
            if conn.dialect.name == "postgresql":
                xid = conn.execute(text("SELECT txid_current()")).scalar()
            conn.execute(insert(EmotionSampleRow), rows)
            try:
                conn.commit()
            except Exception:
                self._in_doubt_xid = xid
                raise

    # -- bookkeeping -----------------------------------------------------------------------

    @property
    def _settled(self) -> int:
        return self._written + self._dropped + self._rejected

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    def _on_failure(self, exc: BaseException, batch: list[EmotionSample]) -> None:
        self._retries += 1
        self._outage_retries += 1
        self._last_error = _describe(exc)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("database %s unavailable; keeping %d pending samples (calls %s) and retrying "
                        "up to every %.1f s: %s", self._db.url, self.stats.pending,
                        _call_ids([*batch, *self._pending]), self._config.retry_max_s, self._last_error)
        else:
            log.debug("database %s still unavailable (retry %d): %s", self._db.url,
                      self._outage_retries, self._last_error)

    def _on_success(self, n: int) -> None:
        self._written += n
        self._batches += 1
        if self._outage_since is not None:
            log.info("database %s is back after %.1f s and %d retries; %d samples pending", self._db.url,
                     time.monotonic() - self._outage_since, self._outage_retries, self.stats.pending - n)
            self._outage_since = None
            self._outage_retries = 0
        self._backoff_s = 0.0

    def _next_backoff(self) -> float:
        cap = self._config.retry_max_s
        self._backoff_s = min(cap, self._backoff_s * 2 if self._backoff_s else min(RETRY_INITIAL_S, cap))
        return self._backoff_s * random.uniform(0.8, 1.0)  # jitter: workers do not retry in step

    def _drop(self, samples: Iterable[EmotionSample]) -> None:
        for sample in samples:
            self._dropped += 1
            self._drops_unlogged[sample.call_id] += 1
        self._log_drops()

    def _log_drops(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._drops_unlogged or (not force and now - self._last_drop_log < DROP_LOG_INTERVAL_S):
            return
        per_call = ", ".join(f"call {c}: {n}" for c, n in self._drops_unlogged.most_common(10))
        reason = "after close" if self._closed else f"buffer full ({self._config.buffer_max_samples} samples)"
        log.warning("store writer dropped %d samples, oldest first, %s (%s); %d dropped in total",
                    sum(self._drops_unlogged.values()), reason, per_call, self._dropped)
        self._drops_unlogged.clear()
        self._last_drop_log = now

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("store writer stopped on an unexpected error; %d samples pending",
                      self.stats.pending, exc_info=task.exception())


def _is_row_error(exc: BaseException) -> bool:
    """True when the database refused the rows themselves (a constraint, a value out of range).

    Everything else (the database is away, busy, locked, restarting, not migrated yet) says
    nothing about the rows, so the batch is kept and retried; the outage warning carries
    the message.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return False
    return isinstance(exc, IntegrityError | DataError)


def _describe(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


def _call_ids(samples: Iterable[EmotionSample], limit: int = 5) -> str:
    ids: list[str] = []
    for sample in samples:
        if sample.call_id not in ids:
            ids.append(sample.call_id)
            if len(ids) > limit:
                break
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")
