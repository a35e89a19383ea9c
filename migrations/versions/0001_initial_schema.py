"""Initial schema: calls, participants, emotion_samples, call_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written by hand to match confbot/store/models.py; tests/confbot/store/test_migrations.py
compares the two. Types are spelled out here rather than imported from the models, so this
file keeps meaning what it meant when the models change.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements an INTEGER PRIMARY KEY.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("connector", sa.JSON(), nullable=False),
        sa.Column("sample_fps", sa.Float(), nullable=False),
        sa.Column("consent", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("host_token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("ended_at", UTC_DATETIME, nullable=True),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", UTC_DATETIME, nullable=True),
        sa.CheckConstraint("status IN ('connecting', 'live', 'failed', 'ended')",
                           name=op.f("ck_calls_status")),
        sa.CheckConstraint("consent IN ('all', 'opt-in')", name=op.f("ck_calls_consent")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    op.create_table(
        "participants",
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("consent_given", sa.Boolean(), nullable=False),
        sa.Column("consent_at", UTC_DATETIME, nullable=True),
        sa.Column("joined_at", UTC_DATETIME, nullable=False),
        sa.Column("left_at", UTC_DATETIME, nullable=True),
        sa.CheckConstraint("source IN ('whip', 'janus')", name=op.f("ck_participants_source")),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE",
                                name=op.f("fk_participants_call_id_calls")),
        sa.PrimaryKeyConstraint("call_id", "id", name=op.f("pk_participants")),
    )
    op.create_table(
        "emotion_samples",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("participant_id", sa.String(64), nullable=False),
        sa.Column("face_index", sa.Integer(), nullable=False),
        sa.Column("t_ms", sa.BigInteger(), nullable=False),
        sa.Column("wall_time", sa.BigInteger(), nullable=False),
        sa.Column("angry", sa.Float(), nullable=False),
        sa.Column("disgust", sa.Float(), nullable=False),
        sa.Column("fear", sa.Float(), nullable=False),
        sa.Column("happy", sa.Float(), nullable=False),
        sa.Column("sad", sa.Float(), nullable=False),
        sa.Column("surprise", sa.Float(), nullable=False),
        sa.Column("neutral", sa.Float(), nullable=False),
        sa.Column("top_emotion", sa.String(16), nullable=False),
        sa.Column("valence", sa.Float(), nullable=False),
        sa.Column("arousal", sa.Float(), nullable=False),
        sa.Column("attention", sa.Float(), nullable=False),
        sa.Column("box_x", sa.Integer(), nullable=False),
        sa.Column("box_y", sa.Integer(), nullable=False),
        sa.Column("box_w", sa.Integer(), nullable=False),
        sa.Column("box_h", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["call_id", "participant_id"], ["participants.call_id", "participants.id"],
                                ondelete="CASCADE",
                                name=op.f("fk_emotion_samples_call_id_participant_id_participants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emotion_samples")),
    )
    op.create_index(op.f("ix_emotion_samples_call_id_t_ms"), "emotion_samples", ["call_id", "t_ms"])
    op.create_index(op.f("ix_emotion_samples_call_id_participant_id_t_ms"), "emotion_samples",
                    ["call_id", "participant_id", "t_ms"])
    op.create_table(
        "call_events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("t_ms", sa.BigInteger(), nullable=False),
        sa.Column("wall_time", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("participant_id", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE",
                                name=op.f("fk_call_events_call_id_calls")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_events")),
    )
    op.create_index(op.f("ix_call_events_call_id_t_ms"), "call_events", ["call_id", "t_ms"])


def downgrade() -> None:
    op.drop_index(op.f("ix_call_events_call_id_t_ms"), table_name="call_events")
    op.drop_table("call_events")
    op.drop_index(op.f("ix_emotion_samples_call_id_participant_id_t_ms"), table_name="emotion_samples")
    op.drop_index(op.f("ix_emotion_samples_call_id_t_ms"), table_name="emotion_samples")
    op.drop_table("emotion_samples")
    op.drop_table("participants")
    op.drop_table("calls")
