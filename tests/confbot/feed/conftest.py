"""Feed fixtures: a migrated SQLite database, a live call in it, and builders of samples."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from confbot.store.db import Database


@pytest.fixture(scope="module")
def feed_db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('feed') / 'feed.db'}"
    with Database.from_url(url) as db:
        db.upgrade()
    return url


@pytest.fixture
def db(feed_db_url: str) -> Iterator[Database]:
    with Database.from_url(feed_db_url) as database:
        yield database
