"""Builders of calls and samples with known content, for the store tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from confbot.pipeline.sample import EmotionSample
from confbot.store.calls import create_call, set_call_status
from confbot.store.db import Database
from confbot.store.models import Call
from confbot.store.participants import add_participant
from face_core.emotions import EMOTIONS

T0 = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)


def scores_for(top: str, strength: float = 0.7) -> tuple[float, ...]:
    """Seven probabilities whose largest is `top`."""
    rest = (1 - strength) / (len(EMOTIONS) - 1)
    return tuple(strength if e == top else rest for e in EMOTIONS)


def make_sample(call_id: str, participant_id: str, t_ms: int, *, top: str = "neutral",
                face_index: int = 0, valence: float = 0.0, arousal: float = 0.0,
                attention: float = 1.0, strength: float = 0.7) -> EmotionSample:
    return EmotionSample(
        call_id=call_id, participant_id=participant_id, face_index=face_index, t_ms=t_ms,
        wall_time_ms=int(T0.timestamp() * 1000) + t_ms, scores=scores_for(top, strength),
        valence=valence, arousal=arousal, attention=attention, box=(10, 20, 64, 64),
    )


def make_live_call(db: Database, participants: Sequence[str] = ("p1",), *,
                   title: str = "screening") -> Call:
    """A live call that started at T0, with participants who joined via WHIP at T0."""
    call = create_call(db, title=title, connector={"type": "room"}, sample_fps=2.0, now=T0).call
    set_call_status(db, call.id, "live", at=T0)
    for i, pid in enumerate(participants):
        add_participant(db, call.id, pid, display_name=f"Person {pid}", source="whip",
                        at=T0 + timedelta(milliseconds=i))
    return call
