"""Calls: create one (with its secret host token), look calls up, move their status along.

Status goes connecting -> live -> ended, or to failed (with a reason) from connecting or live.
A live call may go back to connecting (the bot rejoins). `failed` and `ended` are final.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from confbot.store.db import Database
from confbot.store.errors import CallNotFoundError
from confbot.store.events import STATUS, record_event, utc_now
from confbot.store.models import CALL_STATUSES, CONNECTOR_TYPES, CONSENT_MODES, Call

log = logging.getLogger(__name__)

FINAL_STATUSES = ("failed", "ended")
CALL_ID_BYTES = 9  # 12 url-safe characters, 72 random bits
HOST_TOKEN_BYTES = 32
MAX_SAMPLE_FPS = 30.0


@dataclass(frozen=True)
class NewCall:
    """A call just created, and its host token: the only time the token is available."""

    call: Call
    host_token: str


def hash_token(token: str) -> str:
    """The sha256 hex digest stored in place of a host token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_call(db: Database, *, title: str, connector: dict[str, Any], sample_fps: float,
                consent: str = "all", now: datetime | None = None) -> NewCall:
    """Store a new call in status "connecting" and return it with its plaintext host token.

    `connector` is {"type": "room"} or {"type": "janus", "url": ..., "room": ..., "pin"?: ...};
    `consent` is "all" or "opt-in"; `sample_fps` is in (0, 30]. Raises ValueError naming the
    argument that is wrong. Only the token's sha256 is stored.
    """
    _check_new_call(title, connector, sample_fps, consent)
    now = now or utc_now()
    token = secrets.token_urlsafe(HOST_TOKEN_BYTES)
    for _attempt in range(3):  # an id collision is astronomically unlikely; retry anyway
        call = Call(id=secrets.token_urlsafe(CALL_ID_BYTES), title=title, connector=dict(connector),
                    sample_fps=float(sample_fps), consent=consent, status="connecting",
                    failure_reason=None, host_token_hash=hash_token(token), created_at=now)
        with db.session() as session:
            session.add(call)
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                continue
            record_event(session, call, STATUS, at=now, data={"status": "connecting"})
        log.info("call %s created: %r, connector %s, consent %s", call.id, title,
                 connector["type"], consent)
        return NewCall(call=call, host_token=token)
    raise RuntimeError("could not find a free call id in 3 attempts")


def get_call(db: Database, call_id: str) -> Call | None:
    """The call with this id, or None."""
    with db.session() as session:
        return session.get(Call, call_id)


def require_call(db: Database, call_id: str) -> Call:
    """The call with this id; raises `CallNotFoundError` if there is none."""
    call = get_call(db, call_id)
    if call is None:
        raise CallNotFoundError(call_id)
    return call


def list_calls(db: Database, *, status: str | None = None, limit: int = 100,
               offset: int = 0) -> list[Call]:
    """Calls, newest first, optionally only those in `status`."""
    query = select(Call).order_by(Call.created_at.desc(), Call.id).limit(limit).offset(offset)
    if status is not None:
        _check_status(status)
        query = query.where(Call.status == status)
    with db.session() as session:
        return list(session.scalars(query))


def set_call_status(db: Database, call_id: str, status: str, reason: str | None = None, *,
                    at: datetime | None = None) -> Call:
    """Move the call to `status` and record a "status" event; return the call as it now is.

    "live" sets `started_at` (to `at`, default now) the first time; "failed" and "ended" set
    `ended_at`, and "failed" stores `reason` as `failure_reason`. Setting the current status
    again changes nothing. A call that has failed or ended stays so: a later change is
    ignored and logged, and the returned row shows the real status. Raises
    `CallNotFoundError` for an unknown call and ValueError for an unknown status.
    """
    _check_status(status)
    at = at or utc_now()
    with db.session() as session:
        call = session.get(Call, call_id, with_for_update=True)
        if call is None:
            raise CallNotFoundError(call_id)
        if call.status == status:
            return call
        if call.status in FINAL_STATUSES:
            log.info("call %s is already %s; not changing it to %s", call_id, call.status, status)
            return call
        previous = call.status
        call.status = status
        if status == "live" and call.started_at is None:
            call.started_at = at
        if status in FINAL_STATUSES:
            call.ended_at = at
        if status == "failed":
            call.failure_reason = reason
        data: dict[str, Any] = {"status": status}
        if reason is not None:
            data["reason"] = reason
        record_event(session, call, STATUS, at=at, data=data)
    log.info("call %s: %s -> %s%s", call_id, previous, status, f" ({reason})" if reason else "")
    return call


def verify_host_token(db: Database, call_id: str, token: str | None) -> bool:
    """True if `token` is the host token of call `call_id`; False otherwise, or for no such call.

    The comparison takes the same time whatever the token, so timing reveals nothing.
    """
    if not token:
        return False
    digest = hash_token(token)
    with db.session() as session:
        stored = session.scalar(select(Call.host_token_hash).where(Call.id == call_id))
    if stored is None:
        hmac.compare_digest(digest, digest)  # the same work as for a real call
        return False
    return hmac.compare_digest(digest, stored)


def _check_status(status: str) -> None:
    if status not in CALL_STATUSES:
        raise ValueError(f"status must be one of {CALL_STATUSES}, got {status!r}")


def _check_new_call(title: str, connector: dict[str, Any], sample_fps: float, consent: str) -> None:
    if not isinstance(title, str):
        raise ValueError(f"title must be a string, got {type(title).__name__}")
    if not isinstance(connector, dict) or connector.get("type") not in CONNECTOR_TYPES:
        raise ValueError(f"connector must be a dict whose 'type' is one of {CONNECTOR_TYPES}, "
                         f"got {connector!r}")
    if connector["type"] == "janus" and not (connector.get("url") and connector.get("room") is not None):
        raise ValueError(f"a janus connector needs 'url' and 'room', got {connector!r}")
    if not (isinstance(sample_fps, int | float) and math.isfinite(sample_fps)
            and 0 < sample_fps <= MAX_SAMPLE_FPS):
        raise ValueError(f"sample_fps must be in (0, {MAX_SAMPLE_FPS:g}], got {sample_fps!r}")
    if consent not in CONSENT_MODES:
        raise ValueError(f"consent must be one of {CONSENT_MODES}, got {consent!r}")
