"""HTTP routes of the web pages: dashboard, room, photo analyzer, post-call report, static files.

    from confbot.web.routes import mount_web
    mount_web(app, database)      # in create_app(), after the API routes

The live pages are static files; they call the JSON API, the feed websocket and the WHIP
endpoint themselves. The report is rendered here, on the server, and checks the host token.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from confbot.errors import ConfbotError
from confbot.web.templating import STATIC_DIR, message_page

log = logging.getLogger(__name__)

PAGES_DIR = Path(__file__).parent / "pages"

# The live pages load only their own scripts and styles and talk only to this server.
LIVE_PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                 "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; object-src 'none'; "
                 "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
# The report is one document with inline CSS and SVG and no script at all.
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
              "frame-ancestors 'none'")
_COMMON_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-store"}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(PAGES_DIR / name, media_type="text/html; charset=utf-8",
                        headers={**_COMMON_HEADERS, "Content-Security-Policy": LIVE_PAGE_CSP})


@router.get("/calls/{call_id}", response_class=HTMLResponse)
def dashboard_page(call_id: str) -> FileResponse:
    """The host dashboard; the page asks for the host token itself and checks it with the API."""
    return _page("dashboard.html")


@router.get("/room/{call_id}", response_class=HTMLResponse)
def room_page(call_id: str) -> FileResponse:
    """The participant's room: consent, camera, WHIP publishing, own emotion."""
    return _page("room.html")


@router.get("/analyze", response_class=HTMLResponse)
def analyze_page() -> FileResponse:
    """The photo analyzer (FACE's web client)."""
    return _page("analyze.html")


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status,
                        headers={**_COMMON_HEADERS, "Content-Security-Policy": REPORT_CSP})


def _database(request: Request) -> Any:
    return request.app.state.confbot_web_database


def _token_problem(request: Request, call_id: str, token: str | None) -> HTMLResponse | None:
    """An explanatory page when `token` does not open `call_id`, or None when it does."""
    from confbot.store.calls import get_call, verify_host_token

    if not token:
        return _html(message_page(
            "A host token is needed", "This report belongs to the host of the call.",
            hint="Open it from the host dashboard, or add ?token=HOST_TOKEN to the address."), 401)
    database = _database(request)
    if verify_host_token(database, call_id, token):
        return None
    if get_call(database, call_id) is None:
        return _html(message_page(
            "No such call", f"There is no call with the id “{call_id}”.",
            hint="It may have been deleted when its retention period ended."), 404)
    return _html(message_page(
        "This token does not open this call",
        "The host token in the address is wrong, or it belongs to another call.",
        hint="Open the report from the host dashboard, which keeps the right token."), 403)


@router.get("/calls/{call_id}/report", response_class=HTMLResponse)
def report_page(request: Request, call_id: str, token: str | None = Query(None)) -> Response:
    """The post-call report as a page with SVG plots (host token as ?token=)."""
    problem = _token_problem(request, call_id, token)
    if problem is not None:
        return problem
    from confbot.report_render import participant_valence, render_report_html
    from confbot.store.reports import report_json

    database = _database(request)
    link = f"/calls/{quote(call_id, safe='')}/report.%s?token={quote(token or '', safe='')}"
    try:
        page = render_report_html(report_json(database, call_id), participant_valence(database, call_id),
                                  csv_href=link % "csv", json_href=link % "json")
    except ConfbotError as exc:
        log.warning("call %s: report failed: %s", call_id, exc)
        return _html(message_page("The report could not be made", str(exc)), 503)
    return _html(page)


@router.get("/calls/{call_id}/report.{fmt}")
def report_export(request: Request, call_id: str, fmt: str, token: str | None = Query(None)) -> Response:
    """The report's numbers as a CSV or JSON download, for links that cannot send a header."""
    if fmt not in ("csv", "json"):
        return _html(message_page("Unknown format", f"“{fmt}” is not a report format: use csv or json."), 404)
    problem = _token_problem(request, call_id, token)
    if problem is not None:
        return problem
    from confbot.store.reports import report_csv, report_json

    filename = f"confbot-report-{re.sub(r'[^A-Za-z0-9_-]', '_', call_id)}.{fmt}"
    headers = {**_COMMON_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'}
    try:
        if fmt == "json":
            return JSONResponse(report_json(_database(request), call_id), headers=headers)
        text = report_csv(_database(request), call_id)
    except ConfbotError as exc:
        log.warning("call %s: report export failed: %s", call_id, exc)
        return _html(message_page("The report could not be made", str(exc)), 503)
    return PlainTextResponse(text, media_type="text/csv; charset=utf-8", headers=headers)


class RedactTokens(logging.Filter):
    """Replaces the value of token-like query parameters in log records with ***.

    The pages pass the host token in a URL (the feed websocket, the report link); uvicorn's access
    log would otherwise write it to the log.
    """

    _PATTERN = re.compile(r"((?:^|[?&])(?:token|ptoken|host_token)=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(self._PATTERN.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = self._PATTERN.sub(r"\1***", record.msg)
        return True


def mount_web(app: FastAPI, database: Any) -> None:
    """Serve the pages and their static files from `app`; `database` is the store's `Database`.

    Also keeps host tokens out of uvicorn's access and error logs.
    """
    app.state.confbot_web_database = database
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
