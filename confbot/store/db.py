"""`Database`: one SQLAlchemy engine (SQLite or PostgreSQL), its sessions and its migrations."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from confbot.config import REPO_ROOT
from confbot.errors import StoreError

if TYPE_CHECKING:
    from confbot.config import Settings

log = logging.getLogger(__name__)

ALEMBIC_INI = REPO_ROOT / "alembic.ini"
MIGRATIONS_DIR = REPO_ROOT / "migrations"

SUPPORTED_URLS = "sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DBNAME"
_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def mask_url(url: str | URL) -> str:
    """`url` with its password replaced by ***, safe to log and to show."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class Database:
    """A database the store writes to: an engine, a session factory and the migrations.

    Build one with `Database.from_url()`; it connects lazily, on first use. Close it with
    `close()` or use it as a context manager. Every connection problem surfaces as a
    `StoreError` whose message names the (password-masked) URL.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = mask_url(engine.url)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, *, sqlite_busy_timeout_ms: int = 5000, connect_timeout_s: int = 5,
                 echo: bool = False) -> Database:
        """A `Database` for `url` (sqlite:///PATH or postgresql+psycopg://...), not yet connected.

        SQLite: the file's directory is created, and every connection uses WAL, enforces foreign
        keys and waits up to `sqlite_busy_timeout_ms` for a lock. PostgreSQL: connecting gives up
        after `connect_timeout_s` unless the URL says otherwise. A `postgresql://` URL uses
        psycopg 3. Raises `StoreError` for a URL that cannot be parsed or names another driver.
        """
        parsed = _parse_url(url)
        # The pool hands out the most recently returned connection first, so sequential work
        # (the writer) keeps reusing one warm connection: with SQLite, one page cache (2 MB by
        # default) fills instead of one in every pooled connection in turn.
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True, "pool_use_lifo": True}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:"):
                # One shared connection: the writer's worker threads must see the same memory db.
                del kwargs["pool_use_lifo"]  # a StaticPool has no order to choose
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            elif not database.startswith("file:"):
                _make_parent_dir(Path(database), parsed)
            engine = create_engine(parsed, **kwargs)
            _configure_sqlite(engine, busy_timeout_ms=sqlite_busy_timeout_ms)
        else:
            if "connect_timeout" not in parsed.query:
                kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
            engine = create_engine(parsed, **kwargs)
        return cls(engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """A `Database` for `settings.database.url`."""
        return cls.from_url(settings.database.url)

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back when it raises.

        Database failures inside the block come out as `StoreError`.
        """
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise self.store_error(exc) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        """Return if the database answers a query; raise `StoreError` saying why otherwise."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise self.store_error(exc) from exc

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to `revision` (`alembic upgrade head`), from any directory."""
        from alembic import command

        cfg = alembic_config()
        sqlite = self.dialect == "sqlite"
        try:
            with self.engine.connect() as conn:
                if sqlite:
                    # A batch migration drops and rebuilds tables; with foreign keys on, dropping
                    # a parent table would cascade-delete its children's rows.
                    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                    conn.commit()
                try:
                    with conn.begin():
                        cfg.attributes["connection"] = conn
                        command.upgrade(cfg, revision)
                finally:
                    if sqlite:
                        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                        conn.commit()
        except SQLAlchemyError as exc:
            raise self.store_error(exc) from exc
        log.info("database %s is at revision %s", self.url, revision)

    def store_error(self, exc: SQLAlchemyError) -> StoreError:
        """A `StoreError` that says what went wrong with this database, for the user."""
        detail = _first_line(exc.orig if isinstance(exc, DBAPIError) else exc)
        if isinstance(exc, OperationalError | InterfaceError):
            return StoreError(f"cannot use the database at {self.url}: {detail}")
        return StoreError(f"database error at {self.url}: {detail}")

    def close(self) -> None:
        """Close every pooled connection. The object must not be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"


def alembic_config() -> Any:
    """Alembic's `Config` for this repository's `alembic.ini` and `migrations/`, from any cwd."""
    from alembic.config import Config

    if not ALEMBIC_INI.is_file():
        raise StoreError(f"{ALEMBIC_INI} not found: the migrations ship with the repository")
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Called from the app: leave the app's logging configuration alone.
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade_database(settings: Settings) -> None:
    """Bring the database of `settings` to the newest schema (`confbot db upgrade`).

    Raises `StoreError` when the URL is bad or the database cannot be reached.
    """
    with Database.from_settings(settings) as db:
        db.upgrade()


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"bad database URL {mask_url(url)!r}: expected {SUPPORTED_URLS}") from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StoreError(f"unsupported database URL {mask_url(parsed)!r} (driver {parsed.drivername!r}): "
                         f"expected {SUPPORTED_URLS}")
    parsed = parsed.set(drivername=driver)
    if driver.startswith("postgresql") and not parsed.database:
        raise StoreError(f"database URL {mask_url(parsed)!r} names no database: expected {SUPPORTED_URLS}")
    try:  # a missing driver package shows up here, before any connection is tried
        parsed.get_dialect()
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot load the driver for {mask_url(parsed)!r}: {exc}") from exc
    return parsed


def _make_parent_dir(path: Path, url: URL) -> None:
    try:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory for the SQLite database {mask_url(url)!r}: "
                         f"{exc}") from exc


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            # WAL lets the live feed read while the writer writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()


def _first_line(exc: BaseException | None) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
