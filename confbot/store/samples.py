"""Emotion samples: pages for the HTTP API, replay for the live feed, and direct inserts.

The live pipeline writes through `confbot.store.writer.SampleWriter`, which batches and
survives outages; `insert_samples` is the plain synchronous insert for tools and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, insert, or_, select

from confbot.pipeline.sample import EmotionSample
from confbot.store.db import Database
from confbot.store.errors import NotFoundError
from confbot.store.models import EmotionSampleRow, sample_values
from face_core.emotions import EMOTIONS

MAX_PAGE = 10_000
_T = EmotionSampleRow


@dataclass(frozen=True)
class SamplePage:
    """One page of samples, ordered by (t_ms, id); `next_after_id` is None on the last page."""

    rows: list[EmotionSampleRow]
    next_after_id: int | None


def insert_samples(db: Database, samples: Sequence[EmotionSample]) -> None:
    """Insert the samples in one transaction (all or none); `StoreError` if the database refuses."""
    if not samples:
        return
    rows = [sample_values(s) for s in samples]
    with db.session() as session:
        session.execute(insert(EmotionSampleRow), rows)


def page_samples(db: Database, call_id: str, participant_id: str | None = None, *,
                 since_ms: int | None = None, until_ms: int | None = None, limit: int = 500,
                 after_id: int | None = None) -> SamplePage:
    """Up to `limit` samples of the call with `since_ms <= t_ms < until_ms`, by (t_ms, id).

    Pass the returned `next_after_id` back as `after_id`, with the same filters, for the next
    page. Raises `NotFoundError` if `after_id` is not a sample of this call, and ValueError if
    `limit` is not in 1..10000.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be in 1..{MAX_PAGE}, got {limit}")
    conditions = [_T.call_id == call_id]
    if participant_id is not None:
        conditions.append(_T.participant_id == participant_id)
    if since_ms is not None:
        conditions.append(_T.t_ms >= since_ms)
    if until_ms is not None:
        conditions.append(_T.t_ms < until_ms)
    with db.session() as session:
        if after_id is not None:
            after_t = session.scalar(select(_T.t_ms).where(_T.id == after_id, _T.call_id == call_id))
            if after_t is None:
                raise NotFoundError(f"after_id={after_id} is not a sample of call {call_id!r}")
            conditions.append(or_(_T.t_ms > after_t, and_(_T.t_ms == after_t, _T.id > after_id)))
        query = select(_T).where(*conditions).order_by(_T.t_ms, _T.id).limit(limit + 1)
        rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return SamplePage(rows=rows, next_after_id=rows[-1].id if more else None)


def samples_since(db: Database, call_id: str, since_ms: int = 0, *,
                  limit: int | None = None) -> list[EmotionSample]:
    """Samples of the call with `t_ms >= since_ms`, ordered by (t_ms, id), for feed replay.

    The bound is inclusive, so a client replaying "since t" misses nothing; it may get again
    the samples at exactly t.
    """
    columns = [_T.call_id, _T.participant_id, _T.face_index, _T.t_ms, _T.wall_time,
               *(getattr(_T, name) for name in EMOTIONS), _T.valence, _T.arousal, _T.attention,
               _T.box_x, _T.box_y, _T.box_w, _T.box_h]
    query = (select(*columns).where(_T.call_id == call_id, _T.t_ms >= since_ms)
             .order_by(_T.t_ms, _T.id))
    if limit is not None:
        query = query.limit(limit)
    n = len(EMOTIONS)
    with db.engine.connect() as conn:
        result = conn.execute(query).all()
    return [
        EmotionSample(call_id=r[0], participant_id=r[1], face_index=r[2], t_ms=r[3], wall_time_ms=r[4],
                      scores=tuple(r[5:5 + n]), valence=r[5 + n], arousal=r[6 + n],
                      attention=r[7 + n], box=(r[8 + n], r[9 + n], r[10 + n], r[11 + n]))
        for r in result
    ]
