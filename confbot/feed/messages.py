"""The feed's JSON messages (docs/feed.md), built the same way live and when replayed from SQL.

Every message is a plain dict with a `type`, the `call_id`, `t_ms` (milliseconds since the
call started) and `wall_time_ms` (Unix epoch milliseconds):

    sample       one face of one participant at one moment (`EmotionSample.to_message()`)
    participant  a participant joined, left, gave or withdrew consent
    call         the call's status changed
    audience     an aggregate over the faces seen in the last ~2 s (live only; `FeedBroker`)

The live path and the replay build `participant` and `call` messages with the functions here,
so a message replayed from a stored `CallEvent` is equal to the one that was sent live when
both come from the same moment (same `t_ms` and `wall_time_ms`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Literal

from confbot.store.events import CONSENT, PARTICIPANT_JOINED, PARTICIPANT_LEFT, STATUS
from confbot.store.models import CallEvent

MESSAGE_TYPES = ("sample", "participant", "call", "audience")
ParticipantEvent = Literal["joined", "left", "consent_given", "consent_withdrawn"]
PARTICIPANT_EVENTS: tuple[str, ...] = ("joined", "left", "consent_given", "consent_withdrawn")


def participant_message(*, call_id: str, participant_id: str, display_name: str, event: ParticipantEvent,
                        t_ms: int, wall_time_ms: int) -> dict[str, Any]:
    """A `participant` message: the participant joined, left, gave or withdrew consent.

    Raises ValueError for an `event` that is not one of PARTICIPANT_EVENTS.
    """
    if event not in PARTICIPANT_EVENTS:
        raise ValueError(f"participant event must be one of {PARTICIPANT_EVENTS}, got {event!r}")
    return {
        "type": "participant",
        "call_id": call_id,
        "participant_id": participant_id,
        "display_name": display_name,
        "event": event,
        "t_ms": int(t_ms),
        "wall_time_ms": int(wall_time_ms),
    }


def call_message(*, call_id: str, status: str, reason: str | None, t_ms: int,
                 wall_time_ms: int) -> dict[str, Any]:
    """A `call` message: the call moved to `status` (connecting, live, failed, ended).

    `reason` says why a call failed; it is None otherwise.
    """
    return {
        "type": "call",
        "call_id": call_id,
        "status": status,
        "reason": reason,
        "t_ms": int(t_ms),
        "wall_time_ms": int(wall_time_ms),
    }


def event_message(row: CallEvent, *, display_names: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The feed message for a stored call event, or None for a kind the feed does not carry.

    participant_joined -> `participant` "joined" (the name stored with the event);
    participant_left -> "left"; consent -> "consent_given" or "consent_withdrawn";
    status -> `call`. A left or consent event takes its name from `display_names`
    (participant id -> name), or "" when it is not there.
    """
    names = display_names or {}
    data = row.data or {}
    pid = row.participant_id or ""
    if row.kind == STATUS:
        status = data.get("status")
        if not isinstance(status, str):
            return None
        reason = data.get("reason")
        return call_message(call_id=row.call_id, status=status,
                            reason=reason if isinstance(reason, str) else None,
                            t_ms=row.t_ms, wall_time_ms=row.wall_time)
    event: ParticipantEvent
    name = names.get(pid, "")
    if row.kind == PARTICIPANT_JOINED:
        event = "joined"
        stored_name = data.get("display_name")
        name = stored_name if isinstance(stored_name, str) else name
    elif row.kind == PARTICIPANT_LEFT:
        event = "left"
    elif row.kind == CONSENT:
        event = "consent_given" if data.get("given") else "consent_withdrawn"
    else:
        return None
    return participant_message(call_id=row.call_id, participant_id=pid, display_name=name, event=event,
                               t_ms=row.t_ms, wall_time_ms=row.wall_time)


def message_key(message: Mapping[str, Any]) -> Hashable | None:
    """What makes a message the same message, live or replayed; None for `audience` and others.

    sample: (participant, face, t_ms); participant: (participant, event, t_ms); call: (status, t_ms).
    """
    kind = message.get("type")
    if kind == "sample":
        return ("sample", message.get("participant_id"), message.get("face_index"), message.get("t_ms"))
    if kind == "participant":
        return ("participant", message.get("participant_id"), message.get("event"), message.get("t_ms"))
    if kind == "call":
        return ("call", message.get("status"), message.get("t_ms"))
    return None
