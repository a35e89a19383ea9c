"""Call events: joins, leaves, status changes and consent, in call time (`t_ms`) order.

The store records these itself when `set_call_status`, `add_participant`,
`mark_participant_left` and `set_consent` change something; `add_event` is for anything else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from confbot.store.db import Database
from confbot.store.errors import CallNotFoundError
from confbot.store.models import EVENT_KIND_LEN, Call, CallEvent

PARTICIPANT_JOINED = "participant_joined"
PARTICIPANT_LEFT = "participant_left"
STATUS = "status"
CONSENT = "consent"
# What scored the call's faces: the emotion model (file, sha256, test-time augmentation) and the
# face detector, recorded when the call goes live (the model differs between machines).
ANALYSIS = "analysis"


def utc_now() -> datetime:
    return datetime.now(UTC)


def epoch_ms(at: datetime) -> int:
    """Unix epoch milliseconds of an aware datetime."""
    return int(at.timestamp() * 1000)


def call_t_ms(call: Call, at: datetime) -> int:
    """Milliseconds from the call's start to `at`; 0 before the call has started."""
    if call.started_at is None or at <= call.started_at:
        return 0
    return int((at - call.started_at).total_seconds() * 1000)


def record_event(session: Session, call: Call, kind: str, *, at: datetime, t_ms: int | None = None,
                 participant_id: str | None = None, data: dict[str, Any] | None = None) -> CallEvent:
    """Add an event to `session` (the caller commits). `t_ms` defaults to `at` in call time."""
    if not kind or len(kind) > EVENT_KIND_LEN:
        raise ValueError(f"event kind must be 1..{EVENT_KIND_LEN} characters, got {kind!r}")
    row = CallEvent(call_id=call.id, t_ms=call_t_ms(call, at) if t_ms is None else int(t_ms),
                    wall_time=epoch_ms(at), kind=kind, participant_id=participant_id,
                    data=dict(data or {}))
    session.add(row)
    return row


def add_event(db: Database, call_id: str, kind: str, *, participant_id: str | None = None,
              data: dict[str, Any] | None = None, t_ms: int | None = None,
              at: datetime | None = None) -> CallEvent:
    """Store one event of call `call_id` and return it.

    `at` (default: now) gives the wall time; `t_ms` (default: `at` in call time, 0 before the
    call started) the time since the call started. `data` must be JSON-serializable.
    Raises `CallNotFoundError` if there is no such call.
    """
    at = at or utc_now()
    with db.session() as session:
        call = session.get(Call, call_id)
        if call is None:
            raise CallNotFoundError(call_id)
        return record_event(session, call, kind, at=at, t_ms=t_ms, participant_id=participant_id,
                            data=data)


def events_since(db: Database, call_id: str, since_ms: int = 0, *,
                 limit: int | None = None) -> list[CallEvent]:
    """Events of the call with `t_ms >= since_ms`, oldest first (by `t_ms`, then id).

    The bound is inclusive so that a feed client replaying "since t" misses nothing; it may
    see again what it saw at exactly t. An unknown call gives an empty list.
    """
    query = (select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.t_ms >= since_ms)
             .order_by(CallEvent.t_ms, CallEvent.id))
    if limit is not None:
        query = query.limit(limit)
    with db.session() as session:
        return list(session.scalars(query))


def latest_event_data(db: Database, call_id: str, kind: str) -> dict[str, Any] | None:
    """The data of the call's latest event of `kind`, or None when it has none."""
    query = (select(CallEvent.data).where(CallEvent.call_id == call_id, CallEvent.kind == kind)
             .order_by(CallEvent.id.desc()).limit(1))
    with db.session() as session:
        data = session.scalars(query).first()
    return data if isinstance(data, dict) else None
