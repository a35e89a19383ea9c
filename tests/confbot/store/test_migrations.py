"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from confbot.config import REPO_ROOT, DatabaseConfig, Settings
from confbot.store.db import Database, alembic_config, upgrade_database
from confbot.store.models import Base

TABLES = {"calls", "participants", "emotion_samples", "call_events"}


def test_upgrade_creates_the_tables_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "confbot.db"  # the directory does not exist yet
    with Database.from_url(f"sqlite:///{path}") as db:
        db.upgrade()
        names = set(inspect(db.engine).get_table_names())
        db.upgrade()  # a second run is a no-op
    assert names == TABLES | {"alembic_version"}


def test_models_and_migrations_agree(db: Database) -> None:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                 Base.metadata)
    assert diffs == []


def test_constraint_names_follow_the_naming_convention(db: Database) -> None:
    insp = inspect(db.engine)
    assert insp.get_pk_constraint("emotion_samples")["name"] in ("pk_emotion_samples", None)  # None: SQLite
    fks = {fk["name"] for fk in insp.get_foreign_keys("emotion_samples")}
    assert fks == {"fk_emotion_samples_call_id_participant_id_participants"}
    indexes = {ix["name"] for ix in insp.get_indexes("emotion_samples")}
    assert indexes == {"ix_emotion_samples_call_id_t_ms", "ix_emotion_samples_call_id_participant_id_t_ms"}


def test_downgrade_to_base_and_up_again(tmp_path: Path) -> None:
    with Database.from_url(f"sqlite:///{tmp_path / 'c.db'}") as db:
        db.upgrade()
        cfg = alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(db.engine).get_table_names()) == {"alembic_version"}
        db.upgrade()
        assert TABLES <= set(inspect(db.engine).get_table_names())


def test_upgrade_database_uses_the_settings_url(tmp_path: Path) -> None:
    path = tmp_path / "from-settings.db"
    upgrade_database(Settings(database=DatabaseConfig(url=f"sqlite:///{path}")))
    with Database.from_url(f"sqlite:///{path}") as db:
        assert TABLES <= set(inspect(db.engine).get_table_names())


def test_alembic_command_line_takes_the_url_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    env = {**os.environ, "CONFBOT_DATABASE_URL": f"sqlite:///{path}"}
    res = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    with Database.from_url(f"sqlite:///{path}") as db:
        assert TABLES <= set(inspect(db.engine).get_table_names())
