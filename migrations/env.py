"""Alembic environment for confbot's schema.

Where the database comes from, first match wins:
  1. `config.attributes["connection"]`: an open connection (what `Database.upgrade()` passes);
  2. `config.attributes["url"]`: a URL, when alembic is driven from Python;
  3. confbot's settings: `load_settings()` with `-x config=PATH.toml` if given, so
     CONFBOT_DATABASE_URL wins over the file, and sqlite:///confbot.db is the default.
"""

from __future__ import annotations

from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection

from confbot.config import load_settings
from confbot.store.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    config_path = context.get_x_argument(as_dictionary=True).get("config")
    return load_settings(Path(config_path) if config_path else None).database.url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _run_on(connection: Connection) -> None:
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Print the SQL instead of running it (`alembic upgrade head --sql`)."""
    url = _url()
    _configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"),
               dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    from confbot.store.db import Database

    with Database.from_url(_url()) as db, db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # A batch migration drops and rebuilds tables; with foreign keys on, dropping a
            # parent table would cascade-delete its children's rows.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        _run_on(conn)
        conn.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
