"""The call manager records, with each call, what scores its faces; the services are the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from confbot.api.app import build_services, run_services
from confbot.config import load_settings
from confbot.errors import StoreError
from confbot.store.db import Database
from confbot.store.events import ANALYSIS, events_since
from confbot.store.reports import report_json
from tests.support.server import auto_model_file

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database.from_url(f"sqlite:///{tmp_path / 'calls.db'}")
    database.upgrade()
    return database


async def test_a_call_records_the_model_and_detector_that_score_it_when_it_goes_live(
        db: Database) -> None:
    svc = build_services(load_settings(None, env={}), db=db)
    async with run_services(svc, close_db=True):
        new = await svc.manager.create_call(title="t", connector={"type": "room"}, sample_fps=2.0,
                                            consent="all")
        assert new.call.status == "live"
        events = [e for e in events_since(db, new.call.id) if e.kind == ANALYSIS]
        assert len(events) == 1 and events[0].data == svc.worker.analysis
        assert events[0].data["model"] == auto_model_file() == svc.worker.model_name
        assert events[0].data["detector"] == svc.worker.detector_name
        await svc.manager.end_call(new.call.id)
        # Ending (or any later status) records nothing more; the report carries the record.
        assert [e.kind for e in events_since(db, new.call.id)].count(ANALYSIS) == 1
        assert report_json(db, new.call.id)["call"]["analysis"] == events[0].data


async def test_a_database_that_refuses_the_record_costs_only_the_record(
        db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import confbot.calls

    def refuse(*args: object, **kwargs: object) -> None:
        raise StoreError("database is locked")

    monkeypatch.setattr(confbot.calls, "add_event", refuse)
    svc = build_services(load_settings(None, env={}), db=db)
    async with run_services(svc, close_db=True):
        with caplog.at_level("WARNING", logger="confbot.calls"):
            new = await svc.manager.create_call(title="t", connector={"type": "room"},
                                                sample_fps=2.0, consent="all")
        assert new.call.status == "live" and new.call.id in svc.manager.active
        assert "could not record which model scores it: database is locked" in caplog.text
        assert report_json(db, new.call.id)["call"]["analysis"] is None
