"""Feed messages: a stored event replays as exactly the message that was sent live."""

from __future__ import annotations

from datetime import timedelta

import pytest

from confbot.feed.messages import call_message, event_message, message_key, participant_message
from confbot.store.calls import get_call, set_call_status
from confbot.store.db import Database
from confbot.store.events import add_event, call_t_ms, epoch_ms, events_since
from confbot.store.participants import add_participant, mark_participant_left, set_consent
from tests.confbot.store.builders import T0, make_live_call

pytestmark = pytest.mark.timeout(30)


def test_stored_events_replay_as_the_live_messages(db: Database) -> None:
    call = make_live_call(db, participants=())
    joined, consent, left, ended = (T0 + timedelta(seconds=s) for s in (3, 4, 60, 90))
    add_participant(db, call.id, "p1", display_name="Ada", source="whip", at=joined)
    set_consent(db, call.id, "p1", True, at=consent)
    mark_participant_left(db, call.id, "p1", at=left)
    set_call_status(db, call.id, "failed", "janus went away", at=ended)
    add_event(db, call.id, "note", data={"text": "not a feed message"})
    started = get_call(db, call.id)
    assert started is not None

    def when(at):  # type: ignore[no-untyped-def]
        return {"t_ms": call_t_ms(started, at), "wall_time_ms": epoch_ms(at)}

    live = [
        call_message(call_id=call.id, status="live", reason=None, **when(T0)),
        participant_message(call_id=call.id, participant_id="p1", display_name="Ada", event="joined",
                            **when(joined)),
        participant_message(call_id=call.id, participant_id="p1", display_name="Ada",
                            event="consent_given", **when(consent)),
        participant_message(call_id=call.id, participant_id="p1", display_name="Ada", event="left",
                            **when(left)),
        call_message(call_id=call.id, status="failed", reason="janus went away", **when(ended)),
    ]
    rows = events_since(db, call.id, 0)
    replayed = [event_message(row, display_names={"p1": "Ada"}) for row in rows]
    # connecting (t 0), live (t 0), the four above, and the "note", which the feed does not carry
    assert replayed[0] == call_message(call_id=call.id, status="connecting", reason=None,
                                       t_ms=0, wall_time_ms=epoch_ms(T0))
    assert replayed[1:-1] == live
    assert replayed[-1] is None
    assert live[3]["t_ms"] == 60_000


def test_withdrawn_consent_and_unknown_names(db: Database) -> None:
    call = make_live_call(db, participants=("p1",))
    set_consent(db, call.id, "p1", True, at=T0 + timedelta(seconds=1))
    set_consent(db, call.id, "p1", False, at=T0 + timedelta(seconds=2))
    messages = [event_message(row) for row in events_since(db, call.id, 1)]
    assert [(m["event"], m["display_name"], m["t_ms"]) for m in messages if m] == [
        ("consent_given", "", 1000), ("consent_withdrawn", "", 2000)]


def test_participant_message_refuses_an_unknown_event() -> None:
    with pytest.raises(ValueError, match="participant event must be one of"):
        participant_message(call_id="c", participant_id="p", display_name="", event="waved",  # type: ignore[arg-type]
                            t_ms=0, wall_time_ms=0)


def test_message_key_ignores_payload_but_not_identity() -> None:
    a = {"type": "sample", "participant_id": "p1", "face_index": 0, "t_ms": 500, "valence": 0.1}
    assert message_key(a) == message_key({**a, "valence": 0.9})
    assert message_key(a) != message_key({**a, "face_index": 1})
    assert message_key({"type": "audience", "t_ms": 500}) is None
    assert message_key({"type": "call", "status": "live", "t_ms": 0}) != message_key(
        {"type": "call", "status": "ended", "t_ms": 0})
