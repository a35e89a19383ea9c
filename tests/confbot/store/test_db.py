"""`Database`: URLs it refuses, unreachable servers, and SQLite's settings."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import text

from confbot.errors import StoreError
from confbot.store.db import Database, mask_url


@pytest.mark.parametrize(("url", "expected"), [
    ("not a url", "bad database URL"),
    ("mysql://root@localhost/confbot", "unsupported database URL"),
    ("postgresql+asyncpg://u@localhost/db", "unsupported database URL"),
    ("postgresql+psycopg://u@localhost", "names no database"),
])
def test_bad_urls_are_refused_with_a_clear_message(url: str, expected: str) -> None:
    with pytest.raises(StoreError, match=expected) as info:
        Database.from_url(url)
    assert "sqlite:///" in str(info.value)  # says what is expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_postgresql_gives_a_store_error_naming_it_without_the_password() -> None:
    url = f"postgresql://bot:s3cret@127.0.0.1:{free_port()}/confbot"
    with Database.from_url(url) as db:
        expected = r"cannot use the database at postgresql\+psycopg://bot:\*\*\*@"
        with pytest.raises(StoreError, match=expected) as info:
            db.ping()
        assert "s3cret" not in str(info.value)
        with pytest.raises(StoreError, match="cannot use the database"):
            db.upgrade()
        with pytest.raises(StoreError, match="cannot use the database"), db.session() as session:
            session.execute(text("SELECT 1"))


def test_sqlite_directory_that_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the directory"):
        Database.from_url(f"sqlite:///{blocker}/sub/confbot.db")


def test_sqlite_uses_wal_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    with Database.from_url(f"sqlite:///{tmp_path / 'x' / 'c.db'}", sqlite_busy_timeout_ms=1234) as db:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "x" / "c.db").is_file()


def test_in_memory_sqlite_is_shared_across_threads() -> None:
    import threading

    with Database.from_url("sqlite://") as db:
        db.upgrade()
        seen: list[int] = []

        def count_tables() -> None:
            with db.engine.connect() as conn:
                seen.append(len(conn.exec_driver_sql("SELECT name FROM sqlite_master").all()))

        thread = threading.Thread(target=count_tables)
        thread.start()
        thread.join()
        assert seen and seen[0] > 0


def test_pool_reuses_the_most_recently_returned_connection(db_url: str) -> None:
    # One warm connection (and its page cache) serves sequential work; a FIFO pool would
    # rotate through all of them and fill a cache in each.
    with Database.from_url(db_url) as db:
        held = [db.engine.connect() for _ in range(3)]
        ids = [id(conn.connection.dbapi_connection) for conn in held]
        for conn in held:
            conn.close()
        for _ in range(3):
            with db.engine.connect() as conn:
                assert id(conn.connection.dbapi_connection) == ids[-1]


def test_mask_url_hides_passwords() -> None:
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
