"""Fixtures of the web tests: a migrated SQLite store holding calls with known content."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from confbot.store.db import Database
from tests.web.report_fixtures import Calls, build_calls


@pytest.fixture(scope="session")
def report_db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("web-store") / "confbot.db"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def report_calls(report_db_url: str) -> Calls:
    with Database.from_url(report_db_url) as db:
        db.upgrade()
        return build_calls(db)


@pytest.fixture
def report_db(report_db_url: str, report_calls: Calls) -> Iterator[Database]:
    with Database.from_url(report_db_url) as db:
        yield db
