"""The SQL schema as SQLAlchemy 2 models: calls, participants, emotion samples, call events.

`docs/schema.md` describes the tables for analysts. Every change here comes with a migration
in `migrations/versions/`; `tests/confbot/store/test_migrations.py` fails when the two disagree.

Times of day are timezone-aware UTC datetimes (`UTCDateTime`). Times within a call are integer
milliseconds: `t_ms` since the call started and `wall_time` since the Unix epoch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from confbot.pipeline.sample import EmotionSample
from face_core.emotions import EMOTIONS

# Stable constraint names, so that later migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CALL_STATUSES = ("connecting", "live", "failed", "ended")
CONSENT_MODES = ("all", "opt-in")
PARTICIPANT_SOURCES = ("whip", "janus")
CONNECTOR_TYPES = ("room", "janus")

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid); BIGINT there would not.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

ID_LEN = 32  # call ids
PARTICIPANT_ID_LEN = 64
SHORT_LEN = 16  # status, consent, source, top emotion
EVENT_KIND_LEN = 32


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored and returned in UTC on every backend.

    SQLite has no time zone type: values are stored as UTC and come back tagged as UTC.
    A naive datetime is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Call(Base):
    """One call the bot was invited to."""

    __tablename__ = "calls"
    __table_args__ = (
        CheckConstraint(_one_of("status", CALL_STATUSES), name="status"),
        CheckConstraint(_one_of("consent", CONSENT_MODES), name="consent"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    # {"type": "room"} or {"type": "janus", "url": ..., "room": ..., "pin"?: ...}
    connector: Mapped[dict[str, Any]] = mapped_column(JSON)
    sample_fps: Mapped[float] = mapped_column(Float)
    consent: Mapped[str] = mapped_column(String(SHORT_LEN))
    status: Mapped[str] = mapped_column(String(SHORT_LEN))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # sha256 hex of the host token; the token itself is never stored.
    host_token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # For multi-worker deployments: which worker runs the call, and until when its claim holds.
    worker_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"Call(id={self.id!r}, status={self.status!r}, title={self.title!r})"


class Participant(Base):
    """Someone in a call; `id` is unique within the call (a WHIP session, a Janus feed id)."""

    __tablename__ = "participants"
    __table_args__ = (CheckConstraint(_one_of("source", PARTICIPANT_SOURCES), name="source"),)

    call_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(PARTICIPANT_ID_LEN), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(SHORT_LEN))
    consent_given: Mapped[bool] = mapped_column(Boolean)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"Participant(call_id={self.call_id!r}, id={self.id!r}, name={self.display_name!r})"


class EmotionSampleRow(Base):
    """One face of one participant at one moment: 7 scores, derived signals and the face box."""

    __tablename__ = "emotion_samples"
    __table_args__ = (
        ForeignKeyConstraint(["call_id", "participant_id"], ["participants.call_id", "participants.id"],
                             ondelete="CASCADE"),
        Index("ix_emotion_samples_call_id_t_ms", "call_id", "t_ms"),
        Index("ix_emotion_samples_call_id_participant_id_t_ms", "call_id", "participant_id", "t_ms"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(ID_LEN))
    participant_id: Mapped[str] = mapped_column(String(PARTICIPANT_ID_LEN))
    face_index: Mapped[int] = mapped_column(Integer)
    t_ms: Mapped[int] = mapped_column(BigInteger)  # since the call started
    wall_time: Mapped[int] = mapped_column(BigInteger)  # Unix epoch milliseconds
    angry: Mapped[float] = mapped_column(Float)
    disgust: Mapped[float] = mapped_column(Float)
    fear: Mapped[float] = mapped_column(Float)
    happy: Mapped[float] = mapped_column(Float)
    sad: Mapped[float] = mapped_column(Float)
    surprise: Mapped[float] = mapped_column(Float)
    neutral: Mapped[float] = mapped_column(Float)
    top_emotion: Mapped[str] = mapped_column(String(SHORT_LEN))
    valence: Mapped[float] = mapped_column(Float)
    arousal: Mapped[float] = mapped_column(Float)
    attention: Mapped[float] = mapped_column(Float)
    box_x: Mapped[int] = mapped_column(Integer)
    box_y: Mapped[int] = mapped_column(Integer)
    box_w: Mapped[int] = mapped_column(Integer)
    box_h: Mapped[int] = mapped_column(Integer)

    def to_sample(self) -> EmotionSample:
        """The stored row as the pipeline's `EmotionSample` (whose `to_message()` is the feed format)."""
        return EmotionSample(
            call_id=self.call_id, participant_id=self.participant_id, face_index=self.face_index,
            t_ms=self.t_ms, wall_time_ms=self.wall_time,
            scores=tuple(getattr(self, name) for name in EMOTIONS),
            valence=self.valence, arousal=self.arousal, attention=self.attention,
            box=(self.box_x, self.box_y, self.box_w, self.box_h),
        )


def sample_values(sample: EmotionSample) -> dict[str, Any]:
    """The column values of `emotion_samples` for one sample (everything but `id`)."""
    if len(sample.scores) != len(EMOTIONS):
        raise ValueError(f"sample of call {sample.call_id}: expected {len(EMOTIONS)} scores, "
                         f"got {len(sample.scores)}")
    values: dict[str, Any] = {
        "call_id": sample.call_id, "participant_id": sample.participant_id,
        "face_index": int(sample.face_index), "t_ms": int(sample.t_ms),
        "wall_time": int(sample.wall_time_ms), "top_emotion": sample.top_emotion,
        "valence": float(sample.valence), "arousal": float(sample.arousal),
        "attention": float(sample.attention),
    }
    values.update(zip(EMOTIONS, (float(s) for s in sample.scores), strict=True))
    values.update(zip(("box_x", "box_y", "box_w", "box_h"), (int(v) for v in sample.box), strict=True))
    return values


class CallEvent(Base):
    """Something that happened in a call: a participant joined or left, the status changed, consent."""

    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_call_id_t_ms", "call_id", "t_ms"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("calls.id", ondelete="CASCADE"))
    t_ms: Mapped[int] = mapped_column(BigInteger)
    wall_time: Mapped[int] = mapped_column(BigInteger)
    # "participant_joined", "participant_left", "status", "consent", ...
    kind: Mapped[str] = mapped_column(String(EVENT_KIND_LEN))
    participant_id: Mapped[str | None] = mapped_column(String(PARTICIPANT_ID_LEN))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"CallEvent(call_id={self.call_id!r}, t_ms={self.t_ms}, kind={self.kind!r})"
