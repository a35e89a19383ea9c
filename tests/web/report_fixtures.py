"""Calls with known content in a real (SQLite) store, for the report tests.

`screening`: 3 participants with 3 faces each (9 faces), 120 seconds at 2 samples per second.
Mostly neutral with one sad face; at 00:00:42 seven of the nine faces are surprised (four from
40 to 45 s); from 80 to 94 s six faces are happy. `nobody`: a call that ran and saw no face.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from confbot.pipeline.sample import EmotionSample
from confbot.store.calls import create_call, set_call_status
from confbot.store.db import Database
from confbot.store.models import EmotionSampleRow, sample_values
from confbot.store.participants import add_participant
from face_core.emotions import CIRCUMPLEX, EMOTIONS

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
NAMES = ("Ana", "Bo <b>", "Chen")
SECONDS = 120


@dataclass(frozen=True)
class Calls:
    screening: str
    screening_token: str
    nobody: str
    nobody_token: str


def _top(face: int, t_s: int) -> str:
    if 40 <= t_s < 46 and face < (7 if t_s == 42 else 4):
        return "surprise"
    if 80 <= t_s < 95 and face < 6:
        return "happy"
    return "sad" if face == 8 else "neutral"


def _sample(call_id: str, pid: str, face_index: int, t_ms: int, top: str) -> EmotionSample:
    scores = tuple(0.7 if e == top else 0.05 for e in EMOTIONS)
    valence = sum(s * CIRCUMPLEX[e][0] for s, e in zip(scores, EMOTIONS, strict=True))
    return EmotionSample(call_id=call_id, participant_id=pid, face_index=face_index, t_ms=t_ms,
                         wall_time_ms=int(T0.timestamp() * 1000) + t_ms, scores=scores,
                         valence=valence, arousal=0.1, attention=0.9, box=(100, 50, 120, 120))


def build_calls(db: Database) -> Calls:
    """Create the two calls in `db` (already migrated)."""
    screening = create_call(db, title="Screening & <test>", connector={"type": "room"},
                            sample_fps=2.0, now=T0)
    call_id = screening.call.id
    set_call_status(db, call_id, "live", at=T0)
    for i, name in enumerate(NAMES):
        add_participant(db, call_id, f"p{i}", display_name=name, source="whip", consent_given=True, at=T0)
    rows = []
    for t_ms in range(0, SECONDS * 1000, 500):
        for face in range(9):
            sample = _sample(call_id, f"p{face // 3}", face % 3, t_ms, _top(face, t_ms // 1000))
            rows.append(sample_values(sample))
    with db.session() as session:
        session.execute(insert(EmotionSampleRow), rows)
    set_call_status(db, call_id, "ended", at=T0 + timedelta(seconds=SECONDS))

    nobody = create_call(db, title="Nobody came", connector={"type": "room"}, sample_fps=2.0, now=T0)
    set_call_status(db, nobody.call.id, "live", at=T0)
    set_call_status(db, nobody.call.id, "ended", at=T0 + timedelta(seconds=30))
    return Calls(screening=call_id, screening_token=screening.host_token,
                 nobody=nobody.call.id, nobody_token=nobody.host_token)
