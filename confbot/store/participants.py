"""Participants of a call: who joined and left, and who consented to analysis."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from confbot.store.db import Database
from confbot.store.errors import CallNotFoundError, ParticipantNotFoundError
from confbot.store.events import CONSENT, PARTICIPANT_JOINED, PARTICIPANT_LEFT, record_event, utc_now
from confbot.store.models import PARTICIPANT_ID_LEN, PARTICIPANT_SOURCES, Call, Participant

log = logging.getLogger(__name__)


def may_analyze(call: Call, participant: Participant) -> bool:
    """True if the participant's frames may be classified under the call's consent mode."""
    return call.consent == "all" or participant.consent_given


def add_participant(db: Database, call_id: str, participant_id: str, *, display_name: str,
                    source: str, consent_given: bool = False, at: datetime | None = None) -> Participant:
    """Record that a participant joined (at `at`, default now) and return their row.

    A participant who joins again after leaving keeps their row: `left_at` is cleared, the
    name and source are updated, `joined_at` stays the first join, and consent stays as it
    was unless `consent_given` is True. A "participant_joined" event is recorded either way.
    Raises `CallNotFoundError` for an unknown call, ValueError for a bad id or source.
    """
    if not participant_id or len(participant_id) > PARTICIPANT_ID_LEN:
        raise ValueError(f"participant id must be 1..{PARTICIPANT_ID_LEN} characters, got {participant_id!r}")
    if source not in PARTICIPANT_SOURCES:
        raise ValueError(f"source must be one of {PARTICIPANT_SOURCES}, got {source!r}")
    at = at or utc_now()
    with db.session() as session:
        call = session.get(Call, call_id)
        if call is None:
            raise CallNotFoundError(call_id)
        row = session.get(Participant, (call_id, participant_id))
        if row is None:
            row = Participant(call_id=call_id, id=participant_id, display_name=display_name,
                              source=source, consent_given=consent_given,
                              consent_at=at if consent_given else None, joined_at=at, left_at=None)
            session.add(row)
        else:
            row.display_name, row.source, row.left_at = display_name, source, None
            if consent_given and not row.consent_given:
                row.consent_given, row.consent_at = True, at
        record_event(session, call, PARTICIPANT_JOINED, at=at, participant_id=participant_id,
                     data={"display_name": display_name, "source": source})
    log.info("call %s: participant %s (%r) joined via %s", call_id, participant_id, display_name, source)
    return row


def mark_participant_left(db: Database, call_id: str, participant_id: str, *,
                          at: datetime | None = None) -> Participant:
    """Record that the participant left (at `at`, default now) with a "participant_left" event.

    Leaving twice changes nothing the second time. Raises `ParticipantNotFoundError`.
    """
    at = at or utc_now()
    with db.session() as session:
        row = _require(session, call_id, participant_id)
        if row.left_at is not None:
            return row
        row.left_at = at
        call = session.get(Call, call_id)
        assert call is not None  # the participant's foreign key guarantees it
        record_event(session, call, PARTICIPANT_LEFT, at=at, participant_id=participant_id)
    log.info("call %s: participant %s left", call_id, participant_id)
    return row


def set_consent(db: Database, call_id: str, participant_id: str, given: bool, *,
                at: datetime | None = None) -> Participant:
    """Record that the participant gave (True) or withdrew (False) consent, with a "consent" event.

    `consent_at` is the time of the latest change. Raises `ParticipantNotFoundError`.
    """
    at = at or utc_now()
    with db.session() as session:
        row = _require(session, call_id, participant_id)
        if row.consent_given == given and row.consent_at is not None:
            return row
        row.consent_given, row.consent_at = given, at
        call = session.get(Call, call_id)
        assert call is not None
        record_event(session, call, CONSENT, at=at, participant_id=participant_id, data={"given": given})
    log.info("call %s: participant %s %s consent", call_id, participant_id,
             "gave" if given else "withdrew")
    return row


def get_participant(db: Database, call_id: str, participant_id: str) -> Participant | None:
    """The participant, or None."""
    with db.session() as session:
        return session.get(Participant, (call_id, participant_id))


def list_participants(db: Database, call_id: str) -> list[Participant]:
    """The call's participants in the order they first joined (empty for an unknown call)."""
    query = (select(Participant).where(Participant.call_id == call_id)
             .order_by(Participant.joined_at, Participant.id))
    with db.session() as session:
        return list(session.scalars(query))


def _require(session: Session, call_id: str, participant_id: str) -> Participant:
    row = session.get(Participant, (call_id, participant_id), with_for_update=True)
    if row is None:
        raise ParticipantNotFoundError(call_id, participant_id)
    return row
