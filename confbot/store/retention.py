"""Retention: delete every trace of calls that ended long enough ago (`confbot purge`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from confbot.store.db import Database
from confbot.store.events import utc_now
from confbot.store.models import Call, CallEvent, EmotionSampleRow, Participant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeCounts:
    """How many rows of each table a purge deleted."""

    calls: int
    participants: int
    samples: int
    events: int


def retention_cutoff(retention_days: int, *, now: datetime | None = None) -> datetime:
    """The moment before which ended calls are past `privacy.retention_days`."""
    return (now or utc_now()) - timedelta(days=retention_days)


def purge_calls_ended_before(db: Database, cutoff: datetime) -> PurgeCounts:
    """Delete calls that failed or ended before `cutoff`, with their samples, events and participants.

    Calls still connecting or live are never touched. Everything goes in one transaction.
    """
    if cutoff.tzinfo is None:
        raise ValueError(f"cutoff {cutoff!r} is naive: pass a timezone-aware datetime")
    old = select(Call.id).where(Call.status.in_(("failed", "ended")), Call.ended_at < cutoff)
    plain = {"synchronize_session": False}
    with db.session() as session:
        # Children first: the cascades need foreign keys on, which a SQLite tool may not set.
        samples = session.execute(delete(EmotionSampleRow).where(EmotionSampleRow.call_id.in_(old)),
                                  execution_options=plain)
        events = session.execute(delete(CallEvent).where(CallEvent.call_id.in_(old)),
                                 execution_options=plain)
        participants = session.execute(delete(Participant).where(Participant.call_id.in_(old)),
                                       execution_options=plain)
        calls = session.execute(delete(Call).where(Call.id.in_(old)), execution_options=plain)
        counts = PurgeCounts(calls=_rowcount(calls), participants=_rowcount(participants),
                             samples=_rowcount(samples), events=_rowcount(events))
    log.info("purged calls that ended before %s: %s", cutoff.isoformat(), counts)
    return counts


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
