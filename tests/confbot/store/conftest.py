"""Store fixtures: one migrated database per backend per test session.

PostgreSQL: CONFBOT_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
names a server and a database to connect to; the tests create a fresh database next to it
and drop it at the end. Tests skip, naming the URL, when it cannot be reached.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text

from confbot.store.db import Database, mask_url

POSTGRES_URL = os.environ.get("CONFBOT_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'store.db'}"
    with Database.from_url(url) as db:
        db.upgrade()
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    admin = make_url(POSTGRES_URL)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"confbot_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        engine.dispose()
        pytest.skip(f"PostgreSQL not usable at {mask_url(admin)} (set CONFBOT_TEST_POSTGRES_URL): "
                    f"{str(exc).strip().splitlines()[0]}")
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        with Database.from_url(url) as db:
            db.upgrade()
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    with Database.from_url(db_url) as database:
        yield database
