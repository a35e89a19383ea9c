"""Calls, participants, events, samples and purging, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from confbot.store.calls import (
    create_call,
    get_call,
    list_calls,
    require_call,
    set_call_status,
    verify_host_token,
)
from confbot.store.db import Database
from confbot.store.errors import CallNotFoundError, NotFoundError, ParticipantNotFoundError
from confbot.store.events import add_event, events_since
from confbot.store.models import Call, CallEvent, EmotionSampleRow, Participant
from confbot.store.participants import (
    add_participant,
    list_participants,
    mark_participant_left,
    may_analyze,
    set_consent,
)
from confbot.store.retention import purge_calls_ended_before, retention_cutoff
from confbot.store.samples import insert_samples, page_samples, samples_since

from .builders import T0, make_live_call, make_sample

JANUS = {"type": "janus", "url": "http://127.0.0.1:8088/janus", "room": 1234, "pin": "42"}


def test_create_call_stores_a_hash_of_the_token_and_returns_the_token(db: Database) -> None:
    new = create_call(db, title="Première ✨", connector=JANUS, sample_fps=2, consent="opt-in", now=T0)
    call = require_call(db, new.call.id)
    assert len(call.id) >= 12 and call.id.replace("-", "").replace("_", "").isalnum()
    assert (call.title, call.connector, call.sample_fps, call.consent) == (
        "Première ✨", JANUS, 2.0, "opt-in")
    assert call.status == "connecting" and call.created_at == T0 and call.created_at.tzinfo is not None
    assert call.host_token_hash == hashlib.sha256(new.host_token.encode()).hexdigest()
    assert new.host_token not in repr(call.__dict__)
    assert verify_host_token(db, call.id, new.host_token)


@pytest.mark.parametrize("token", ["", "wrong", "x" * 43, None, "\udcff"])
def test_a_wrong_token_does_not_verify(db: Database, token: str | None) -> None:
    call_id = create_call(db, title="t", connector={"type": "room"}, sample_fps=2).call.id
    assert verify_host_token(db, call_id, token) is False


def test_a_token_for_another_or_no_call_does_not_verify(db: Database) -> None:
    a = create_call(db, title="a", connector={"type": "room"}, sample_fps=2)
    b = create_call(db, title="b", connector={"type": "room"}, sample_fps=2)
    assert not verify_host_token(db, b.call.id, a.host_token)
    assert not verify_host_token(db, "no-such-call", a.host_token)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"connector": {"type": "zoom"}}, "connector"),
    ({"connector": {"type": "janus", "url": "http://x"}}, "needs 'url' and 'room'"),
    ({"sample_fps": 0}, "sample_fps"),
    ({"sample_fps": float("nan")}, "sample_fps"),
    ({"consent": "some"}, "consent"),
])
def test_create_call_refuses_bad_arguments(db: Database, kwargs: dict, message: str) -> None:
    args = {"title": "t", "connector": {"type": "room"}, "sample_fps": 2.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        create_call(db, **args)


def test_status_goes_live_then_ends_and_each_change_is_an_event(db: Database) -> None:
    call_id = create_call(db, title="t", connector={"type": "room"}, sample_fps=2, now=T0).call.id
    live = set_call_status(db, call_id, "live", at=T0 + timedelta(seconds=2))
    assert live.started_at == T0 + timedelta(seconds=2)
    assert set_call_status(db, call_id, "live").started_at == live.started_at  # no-op
    ended = set_call_status(db, call_id, "ended", at=T0 + timedelta(seconds=62))
    assert (ended.status, ended.ended_at) == ("ended", T0 + timedelta(seconds=62))
    # final: a late "live" from a worker does not resurrect it
    assert set_call_status(db, call_id, "live").status == "ended"
    events = events_since(db, call_id)
    assert [(e.kind, e.data["status"], e.t_ms) for e in events] == [
        ("status", "connecting", 0), ("status", "live", 0), ("status", "ended", 60_000)]


def test_failed_call_keeps_its_reason(db: Database) -> None:
    call_id = create_call(db, title="t", connector=JANUS, sample_fps=2).call.id
    call = set_call_status(db, call_id, "failed", "Janus at http://127.0.0.1:8088/janus unreachable")
    assert call.failure_reason == "Janus at http://127.0.0.1:8088/janus unreachable"
    assert call.ended_at is not None
    assert events_since(db, call_id)[-1].data == {"status": "failed", "reason": call.failure_reason}


def test_unknown_call_and_unknown_status(db: Database) -> None:
    assert get_call(db, "nope") is None
    with pytest.raises(CallNotFoundError, match="nope"):
        set_call_status(db, "nope", "live")
    with pytest.raises(CallNotFoundError):
        add_participant(db, "nope", "p", display_name="x", source="whip")
    call = make_live_call(db)
    with pytest.raises(ValueError, match="status must be one of"):
        set_call_status(db, call.id, "paused")


def test_list_calls_newest_first_and_by_status(db: Database) -> None:
    future = datetime(2100, 1, 1, tzinfo=UTC)  # newer than the other tests' calls in this database
    ids = [create_call(db, title=f"c{i}", connector={"type": "room"}, sample_fps=2,
                       now=future + timedelta(minutes=i)).call.id for i in range(3)]
    set_call_status(db, ids[1], "live")
    assert [c.id for c in list_calls(db, limit=3)] == ids[::-1]
    assert ids[1] in [c.id for c in list_calls(db, status="live")]
    assert ids[1] not in [c.id for c in list_calls(db, status="connecting")]


def test_participants_join_leave_rejoin_and_consent(db: Database) -> None:
    call = create_call(db, title="t", connector={"type": "room"}, sample_fps=2, consent="opt-in",
                       now=T0).call
    set_call_status(db, call.id, "live", at=T0)
    ann = add_participant(db, call.id, "ann", display_name="Ann", source="whip", at=T0 + timedelta(seconds=1))
    assert not may_analyze(call, ann)
    set_consent(db, call.id, "ann", True, at=T0 + timedelta(seconds=3))
    add_participant(db, call.id, "bob", display_name="Bob", source="whip", consent_given=True,
                    at=T0 + timedelta(seconds=2))
    mark_participant_left(db, call.id, "ann", at=T0 + timedelta(seconds=10))
    mark_participant_left(db, call.id, "ann", at=T0 + timedelta(seconds=11))  # no-op
    rejoined = add_participant(db, call.id, "ann", display_name="Ann B.", source="whip",
                               at=T0 + timedelta(seconds=20))
    assert rejoined.left_at is None and rejoined.joined_at == T0 + timedelta(seconds=1)
    assert rejoined.consent_given and may_analyze(call, rejoined)
    people = list_participants(db, call.id)
    assert [(p.id, p.display_name) for p in people] == [("ann", "Ann B."), ("bob", "Bob")]
    kinds = [(e.t_ms, e.kind, e.participant_id) for e in events_since(db, call.id) if e.kind != "status"]
    assert kinds == [(1000, "participant_joined", "ann"), (2000, "participant_joined", "bob"),
                     (3000, "consent", "ann"), (10_000, "participant_left", "ann"),
                     (20_000, "participant_joined", "ann")]
    with pytest.raises(ParticipantNotFoundError):
        set_consent(db, call.id, "carol", True)
    with pytest.raises(ValueError, match="source"):
        add_participant(db, call.id, "dan", display_name="Dan", source="zoom")


def test_add_event_and_events_since(db: Database) -> None:
    call = make_live_call(db)
    add_event(db, call.id, "note", t_ms=5000, data={"text": "scene 2"})
    add_event(db, call.id, "note", t_ms=9000, participant_id="p1", data={"n": [1, 2]})
    later = events_since(db, call.id, since_ms=5000)
    assert [(e.t_ms, e.data) for e in later] == [(5000, {"text": "scene 2"}), (9000, {"n": [1, 2]})]
    assert events_since(db, call.id, since_ms=5000, limit=1)[0].t_ms == 5000
    with pytest.raises(CallNotFoundError):
        add_event(db, "nope", "note")


def test_page_samples_walks_every_sample_once_with_filters(db: Database) -> None:
    call = make_live_call(db, ["p1", "p2"])
    # same t_ms for several faces: the cursor must still separate them
    samples = [make_sample(call.id, pid, t, face_index=f)
               for t in range(0, 5000, 500) for pid in ("p1", "p2") for f in (0, 1)]
    insert_samples(db, samples)
    seen: list[tuple[str, int, int]] = []
    after = None
    pages = 0
    while True:
        page = page_samples(db, call.id, limit=7, after_id=after)
        seen += [(r.participant_id, r.face_index, r.t_ms) for r in page.rows]
        pages += 1
        if page.next_after_id is None:
            break
        after = page.next_after_id
    assert sorted(seen) == sorted((s.participant_id, s.face_index, s.t_ms) for s in samples)
    assert len(seen) == len(set(seen)) == 40 and pages == 6
    assert [t for _, _, t in seen] == sorted(t for _, _, t in seen)
    window = page_samples(db, call.id, "p2", since_ms=1000, until_ms=2000, limit=100)
    assert {(r.participant_id, r.t_ms) for r in window.rows} == {("p2", 1000), ("p2", 1500)}
    assert window.next_after_id is None and len(window.rows) == 4
    assert window.rows[0].to_sample().to_message()["type"] == "sample"
    with pytest.raises(NotFoundError, match="after_id"):
        page_samples(db, call.id, after_id=-5)
    with pytest.raises(ValueError, match="limit"):
        page_samples(db, call.id, limit=0)


def test_samples_since_replays_in_time_order_as_emotion_samples(db: Database) -> None:
    call = make_live_call(db, ["p1", "p2"])
    written = [make_sample(call.id, "p2", 1500, top="happy", valence=0.8),
               make_sample(call.id, "p1", 500), make_sample(call.id, "p1", 1000, top="sad")]
    insert_samples(db, written)
    replay = samples_since(db, call.id, since_ms=1000)
    assert [(s.participant_id, s.t_ms, s.top_emotion) for s in replay] == [
        ("p1", 1000, "sad"), ("p2", 1500, "happy")]
    assert replay[1] == written[0]  # every stored field comes back as it went in
    assert samples_since(db, call.id, limit=1)[0].t_ms == 500


def test_purge_deletes_old_ended_calls_and_everything_they_own(db: Database) -> None:
    old = make_live_call(db, ["p1"])
    live = make_live_call(db, ["p1"])
    insert_samples(db, [make_sample(old.id, "p1", 0), make_sample(live.id, "p1", 0)])
    set_call_status(db, old.id, "ended", at=T0 + timedelta(hours=1))
    counts = purge_calls_ended_before(db, retention_cutoff(30, now=T0 + timedelta(days=29)))
    assert get_call(db, old.id) is not None  # not old enough yet
    counts = purge_calls_ended_before(db, retention_cutoff(30, now=T0 + timedelta(days=31)))
    assert counts.calls >= 1 and counts.samples >= 1 and counts.participants >= 1 and counts.events >= 3
    assert get_call(db, old.id) is None and get_call(db, live.id) is not None
    with db.session() as session:
        for model in (EmotionSampleRow, CallEvent, Participant):
            assert session.scalar(select(func.count()).select_from(model)
                                  .where(model.call_id == old.id)) == 0
        assert session.get(Call, live.id) is not None
    with pytest.raises(ValueError, match="naive"):
        purge_calls_ended_before(db, T0.replace(tzinfo=None))
