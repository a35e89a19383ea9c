"""The post-call report, as plain SQL that runs unchanged on SQLite and PostgreSQL.

Each query is a module constant taking one parameter, `:call_id`; `docs/reports.md` shows them
and explains them for analysts (a test checks that the docs show exactly these queries).

Portability notes: `t_ms / 1000` is integer division on both backends because `t_ms` is an
integer column (and never negative), so it is the whole second. Averages of 1.0/0.0 come back
as NUMERIC from PostgreSQL; `report_json` turns every number into a Python int or float.

Seconds and faces: a face is one (participant_id, face_index). Within a second a face usually
has several samples (2 at the default sample_fps); it counts once, with the emotion it showed
most often in that second (a tie goes to its latest sample).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from confbot.store.calls import require_call
from confbot.store.db import Database
from confbot.store.events import ANALYSIS, latest_event_data, utc_now
from face_core.emotions import EMOTIONS

PARTICIPANT_SUMMARY_SQL = """\
WITH per_participant AS (
    SELECT participant_id,
           COUNT(*) AS samples,
           COUNT(DISTINCT face_index) AS faces,
           MIN(t_ms) AS first_t_ms,
           MAX(t_ms) AS last_t_ms,
           AVG(angry) AS mean_angry,
           AVG(disgust) AS mean_disgust,
           AVG(fear) AS mean_fear,
           AVG(happy) AS mean_happy,
           AVG(sad) AS mean_sad,
           AVG(surprise) AS mean_surprise,
           AVG(neutral) AS mean_neutral,
           AVG(valence) AS mean_valence,
           AVG(arousal) AS mean_arousal,
           AVG(attention) AS mean_attention,
           AVG(CASE WHEN top_emotion = 'angry' THEN 1.0 ELSE 0.0 END) AS share_angry,
           AVG(CASE WHEN top_emotion = 'disgust' THEN 1.0 ELSE 0.0 END) AS share_disgust,
           AVG(CASE WHEN top_emotion = 'fear' THEN 1.0 ELSE 0.0 END) AS share_fear,
           AVG(CASE WHEN top_emotion = 'happy' THEN 1.0 ELSE 0.0 END) AS share_happy,
           AVG(CASE WHEN top_emotion = 'sad' THEN 1.0 ELSE 0.0 END) AS share_sad,
           AVG(CASE WHEN top_emotion = 'surprise' THEN 1.0 ELSE 0.0 END) AS share_surprise,
           AVG(CASE WHEN top_emotion = 'neutral' THEN 1.0 ELSE 0.0 END) AS share_neutral
    FROM emotion_samples
    WHERE call_id = :call_id
    GROUP BY participant_id
)
SELECT p.id AS participant_id,
       p.display_name,
       p.source,
       p.consent_given,
       COALESCE(a.samples, 0) AS samples,
       COALESCE(a.faces, 0) AS faces,
       a.first_t_ms, a.last_t_ms,
       a.mean_angry, a.mean_disgust, a.mean_fear, a.mean_happy, a.mean_sad, a.mean_surprise,
       a.mean_neutral, a.mean_valence, a.mean_arousal, a.mean_attention,
       a.share_angry, a.share_disgust, a.share_fear, a.share_happy, a.share_sad,
       a.share_surprise, a.share_neutral
FROM participants AS p
LEFT JOIN per_participant AS a ON a.participant_id = p.id
WHERE p.call_id = :call_id
ORDER BY p.joined_at, p.id
"""

AUDIENCE_CURVE_SQL = """\
WITH face_votes AS (
    -- how many samples of each face showed each top emotion, per second
    SELECT t_ms / 1000 AS second,
           participant_id, face_index, top_emotion,
           COUNT(*) AS votes,
           MAX(t_ms) AS last_t_ms
    FROM emotion_samples
    WHERE call_id = :call_id
    GROUP BY t_ms / 1000, participant_id, face_index, top_emotion
),
face_seconds AS (
    -- each face's emotion for the second: the one it showed most, a tie going to the latest
    SELECT second, participant_id, face_index, top_emotion,
           ROW_NUMBER() OVER (PARTITION BY second, participant_id, face_index
                              ORDER BY votes DESC, last_t_ms DESC) AS pick
    FROM face_votes
),
signals AS (
    SELECT t_ms / 1000 AS second,
           COUNT(*) AS samples,
           AVG(valence) AS mean_valence,
           AVG(arousal) AS mean_arousal
    FROM emotion_samples
    WHERE call_id = :call_id
    GROUP BY t_ms / 1000
)
SELECT g.second,
       g.mean_valence,
       g.mean_arousal,
       g.samples,
       COUNT(*) AS faces,
       SUM(CASE WHEN f.top_emotion = 'angry' THEN 1 ELSE 0 END) AS angry,
       SUM(CASE WHEN f.top_emotion = 'disgust' THEN 1 ELSE 0 END) AS disgust,
       SUM(CASE WHEN f.top_emotion = 'fear' THEN 1 ELSE 0 END) AS fear,
       SUM(CASE WHEN f.top_emotion = 'happy' THEN 1 ELSE 0 END) AS happy,
       SUM(CASE WHEN f.top_emotion = 'sad' THEN 1 ELSE 0 END) AS sad,
       SUM(CASE WHEN f.top_emotion = 'surprise' THEN 1 ELSE 0 END) AS surprise,
       SUM(CASE WHEN f.top_emotion = 'neutral' THEN 1 ELSE 0 END) AS neutral
FROM signals AS g
JOIN face_seconds AS f ON f.second = g.second AND f.pick = 1
GROUP BY g.second, g.mean_valence, g.mean_arousal, g.samples
ORDER BY g.second
"""

PEAK_MOMENTS_SQL = """\
WITH face_votes AS (
    SELECT t_ms / 1000 AS second,
           participant_id, face_index, top_emotion,
           COUNT(*) AS votes,
           MAX(t_ms) AS last_t_ms
    FROM emotion_samples
    WHERE call_id = :call_id
    GROUP BY t_ms / 1000, participant_id, face_index, top_emotion
),
face_seconds AS (
    SELECT second, participant_id, face_index, top_emotion,
           ROW_NUMBER() OVER (PARTITION BY second, participant_id, face_index
                              ORDER BY votes DESC, last_t_ms DESC) AS pick
    FROM face_votes
),
per_second AS (
    -- per second: how many faces showed each emotion, and how many faces there were
    SELECT second, top_emotion,
           COUNT(*) AS faces_showing,
           SUM(COUNT(*)) OVER (PARTITION BY second) AS faces
    FROM face_seconds
    WHERE pick = 1
    GROUP BY second, top_emotion
),
ranked AS (
    -- for each emotion, its seconds from most faces showing it (then largest share, earliest)
    SELECT top_emotion AS emotion, second, faces_showing, faces,
           ROW_NUMBER() OVER (PARTITION BY top_emotion
                              ORDER BY faces_showing DESC, faces_showing * 1.0 / faces DESC,
                                       second) AS peak_rank
    FROM per_second
)
SELECT emotion, second, faces_showing, faces
FROM ranked
WHERE peak_rank = 1
ORDER BY emotion
"""

CALL_FACTS_SQL = """\
SELECT (SELECT COUNT(*) FROM participants WHERE call_id = :call_id) AS participants,
       (SELECT COUNT(*) FROM emotion_samples WHERE call_id = :call_id) AS samples,
       (SELECT COUNT(*)
          FROM (SELECT DISTINCT participant_id, face_index
                  FROM emotion_samples
                 WHERE call_id = :call_id) AS distinct_faces) AS faces,
       (SELECT MIN(t_ms) FROM emotion_samples WHERE call_id = :call_id) AS first_t_ms,
       (SELECT MAX(t_ms) FROM emotion_samples WHERE call_id = :call_id) AS last_t_ms
"""

REPORT_QUERIES: Mapping[str, str] = {
    "participant_summary": PARTICIPANT_SUMMARY_SQL,
    "audience_curve": AUDIENCE_CURVE_SQL,
    "peak_moments": PEAK_MOMENTS_SQL,
    "call_facts": CALL_FACTS_SQL,
}

DIGITS = 4  # floats in the report are rounded to this many decimals

CURVE_COLUMNS = ("second", "mean_valence", "mean_arousal", "samples", "faces", *EMOTIONS)
SUMMARY_COLUMNS = (
    "participant_id", "display_name", "source", "consent_given", "samples", "faces",
    "first_t_ms", "last_t_ms", *(f"mean_{e}" for e in EMOTIONS), "mean_valence", "mean_arousal",
    "mean_attention", *(f"share_{e}" for e in EMOTIONS),
)


def run_report_query(db: Database, sql: str, call_id: str) -> list[dict[str, Any]]:
    """Rows of one report query for the call, as dicts of plain Python values."""
    with db.session() as session:
        result = session.execute(text(sql), {"call_id": call_id})
        return [{key: _plain(value) for key, value in row.items()} for row in result.mappings()]


def participant_summary(db: Database, call_id: str) -> list[dict[str, Any]]:
    """One row per participant (`SUMMARY_COLUMNS`); means and shares are None without samples."""
    return run_report_query(db, PARTICIPANT_SUMMARY_SQL, call_id)


def audience_curve(db: Database, call_id: str) -> list[dict[str, Any]]:
    """One row per second that has samples (`CURVE_COLUMNS`), in order."""
    return run_report_query(db, AUDIENCE_CURVE_SQL, call_id)


def peak_moments(db: Database, call_id: str) -> list[dict[str, Any]]:
    """For each emotion some face showed, the second the most faces showed it, in EMOTIONS order."""
    rows = run_report_query(db, PEAK_MOMENTS_SQL, call_id)
    order = {e: i for i, e in enumerate(EMOTIONS)}
    return sorted(rows, key=lambda r: order.get(r["emotion"], len(order)))


def call_facts(db: Database, call_id: str) -> dict[str, Any]:
    """Participants, samples, distinct faces and the first and last sample time of the call."""
    return run_report_query(db, CALL_FACTS_SQL, call_id)[0]


def report_json(db: Database, call_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The whole post-call report as a JSON-ready dict (format: docs/reports.md).

    Keys: "call", "empty" (True when the call has no samples; the report is still complete,
    with an empty curve and no peaks), "facts", "participants", "curve", "peaks".
    Raises `CallNotFoundError` for an unknown call.
    """
    call = require_call(db, call_id)
    facts = call_facts(db, call_id)
    end = call.ended_at or (now or utc_now())
    facts["duration_s"] = (round((end - call.started_at).total_seconds(), 3)
                           if call.started_at is not None else None)
    participants = [_summary_json(row) for row in participant_summary(db, call_id)]
    curve = [_curve_json(row) for row in audience_curve(db, call_id)]
    peaks = [
        {"emotion": row["emotion"], "second": row["second"], "faces_showing": row["faces_showing"],
         "faces": row["faces"], "text": f"{row['faces_showing']} of {row['faces']} faces"}
        for row in peak_moments(db, call_id)
    ]
    return {
        "call": {
            "id": call.id, "title": call.title, "status": call.status, "consent": call.consent,
            "failure_reason": call.failure_reason, "created_at": _iso(call.created_at),
            "started_at": _iso(call.started_at), "ended_at": _iso(call.ended_at),
            "analysis": latest_event_data(db, call_id, ANALYSIS),
        },
        "empty": facts["samples"] == 0,
        "facts": facts,
        "participants": participants,
        "curve": curve,
        "peaks": peaks,
    }


def audience_curve_csv(db: Database, call_id: str) -> str:
    """The audience curve as CSV: a header row (`CURVE_COLUMNS`), then one row per second."""
    return _csv(CURVE_COLUMNS, audience_curve(db, call_id))


def participant_summary_csv(db: Database, call_id: str) -> str:
    """The per-participant summary as CSV: a header row (`SUMMARY_COLUMNS`), one row each."""
    return _csv(SUMMARY_COLUMNS, participant_summary(db, call_id))


def report_csv(db: Database, call_id: str) -> str:
    """Both tables in one text: a line "# audience_curve", that CSV, an empty line, a line
    "# participants", that CSV. Raises `CallNotFoundError` for an unknown call.

    Spreadsheets want one table per file: use `audience_curve_csv` and
    `participant_summary_csv` for those.
    """
    require_call(db, call_id)
    return (f"# audience_curve\n{audience_curve_csv(db, call_id)}\n"
            f"# participants\n{participant_summary_csv(db, call_id)}")


def _summary_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "participant_id": row["participant_id"], "display_name": row["display_name"],
        "source": row["source"], "consent_given": bool(row["consent_given"]),
        "samples": row["samples"], "faces": row["faces"],
        "first_t_ms": row["first_t_ms"], "last_t_ms": row["last_t_ms"],
        "mean": {e: _round(row[f"mean_{e}"]) for e in EMOTIONS},
        "valence": _round(row["mean_valence"]), "arousal": _round(row["mean_arousal"]),
        "attention": _round(row["mean_attention"]),
        "top_share": {e: _round(row[f"share_{e}"]) for e in EMOTIONS},
    }


def _curve_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "second": row["second"], "valence": _round(row["mean_valence"]),
        "arousal": _round(row["mean_arousal"]), "samples": row["samples"], "faces": row["faces"],
        "top": {e: row[e] for e in EMOTIONS},
    }


def _csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else _round(row[c]) for c in columns])
    return out.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):  # PostgreSQL's NUMERIC: sums of integers, averages of 1.0/0.0
        return int(value) if value.as_tuple().exponent == 0 else float(value)
    return value


def _round(value: Any) -> Any:
    return round(value, DIGITS) if isinstance(value, float) else value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
