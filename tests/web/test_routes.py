"""The web routes in-process: pages, static files, the report's token checks and exports."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from confbot.store.db import Database
from confbot.web.routes import RedactTokens, mount_web
from tests.web.report_fixtures import Calls


@pytest.fixture
def client(report_db: Database) -> Iterator[TestClient]:
    app = FastAPI()
    mount_web(app, report_db)
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(("path", "marker"), [
    ("/calls/abc", 'src="/static/dashboard.js"'),
    ("/room/abc", 'src="/static/room.js"'),
    ("/analyze", 'src="/static/analyze.js"'),
])
def test_live_pages_are_served_with_a_strict_policy(client: TestClient, path: str, marker: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"


def test_static_files_are_served(client: TestClient) -> None:
    for name in ("style.css", "dashboard.js", "room.js", "analyze.js", "charts.js", "emotions.js",
                 "token.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name


def test_report_with_the_host_token_has_plots_and_export_links(
        client: TestClient, report_calls: Calls) -> None:
    response = client.get(f"/calls/{report_calls.screening}/report",
                          params={"token": report_calls.screening_token})
    assert response.status_code == 200
    assert response.text.count("<svg") == 4
    assert "00:00:42 surprise peaked: 7 of 9 faces" in response.text
    assert f"/calls/{report_calls.screening}/report.csv?token=" in response.text


def test_report_exports_need_the_token_too(client: TestClient, report_calls: Calls) -> None:
    base = f"/calls/{report_calls.screening}/report"
    good = {"token": report_calls.screening_token}
    csv_response = client.get(f"{base}.csv", params=good)
    assert csv_response.status_code == 200 and csv_response.text.startswith("# audience_curve")
    assert "attachment" in csv_response.headers["content-disposition"]
    assert client.get(f"{base}.json", params=good).json()["facts"]["faces"] == 9
    assert client.get(f"{base}.json", params={"token": "wrong"}).status_code == 403
    assert client.get(f"{base}.pdf", params=good).status_code == 404


@pytest.mark.parametrize(("token", "status", "title"), [
    (None, 401, "A host token is needed"),
    ("not-the-token", 403, "This token does not open this call"),
])
def test_report_without_the_right_token_explains(client: TestClient, report_calls: Calls, token: str | None,
                                                  status: int, title: str) -> None:
    params = {"token": token} if token else {}
    response = client.get(f"/calls/{report_calls.screening}/report", params=params)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert title in response.text and "Traceback" not in response.text


def test_report_of_an_unknown_call_explains(client: TestClient) -> None:
    response = client.get("/calls/nope/report", params={"token": "x"})
    assert response.status_code == 404
    assert "There is no call with the id “nope”." in response.text


def test_another_calls_token_does_not_open_a_report(client: TestClient, report_calls: Calls) -> None:
    response = client.get(f"/calls/{report_calls.screening}/report",
                          params={"token": report_calls.nobody_token})
    assert response.status_code == 403


def test_report_of_a_call_without_samples_says_so(client: TestClient, report_calls: Calls) -> None:
    response = client.get(f"/calls/{report_calls.nobody}/report", params={"token": report_calls.nobody_token})
    assert response.status_code == 200
    assert "This call has no samples." in response.text


def test_tokens_are_redacted_from_access_log_lines() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/calls/a/report?token=s3cret&x=1", "1.1", 200), None)
    RedactTokens().filter(record)
    assert "s3cret" not in record.getMessage()
    assert "/calls/a/report?token=***&x=1" in record.getMessage()
