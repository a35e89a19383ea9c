"""Server-side commands of the `confbot` CLI: serve, join, feed, db, purge, report.

Registered on the app defined in `confbot.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from confbot.errors import ConfbotError

log = logging.getLogger(__name__)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings TOML.")]


def _settings(config: Path | None) -> Any:
    from confbot.config import load_settings

    return load_settings(config)


def _fail(exc: BaseException) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def serve(
    config: ConfigOpt = None,
    host: Annotated[Optional[str], typer.Option(help="Override server.host.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Override server.port.")] = None,
) -> None:
    """Run the API, the built-in room, the feed, the pages and the bot (SQLite by default)."""
    import dataclasses

    import uvicorn

    from confbot.api.app import create_app, public_url
    from confbot.config import validate_settings
    from confbot.store.db import upgrade_database

    _configure_logging()
    try:
        settings = _settings(config)
        if host is not None or port is not None:
            server = dataclasses.replace(settings.server, host=host or settings.server.host,
                                         port=port or settings.server.port)
            settings = dataclasses.replace(settings, server=server)
            validate_settings(settings)
        upgrade_database(settings)  # zero setup: a new SQLite file gets its tables here
        app = create_app(settings)
    except ConfbotError as exc:
        _fail(exc)
    base = public_url(settings)
    typer.echo(f"confbot serving on {base}  (API docs: {base}/docs, photo analyzer: {base}/analyze)")
    typer.echo(f"invite the bot: curl -X POST {base}/api/calls -H 'Content-Type: application/json' "
               "-d '{\"title\": \"My call\"}'")
    uvicorn.run(app, host=settings.server.host, port=settings.server.port, ws="websockets-sansio",
                log_level="warning", proxy_headers=False)


def join(
    kind: Annotated[str, typer.Argument(help="Connector: janus.")],
    url: Annotated[str, typer.Argument(help="Janus HTTP API root, e.g. http://127.0.0.1:8088/janus")],
    room: Annotated[int, typer.Option(help="VideoRoom id.")],
    pin: Annotated[Optional[str], typer.Option(help="Room PIN.")] = None,
    title: Annotated[str, typer.Option(help="Call title in the database.")] = "",
    sample_fps: Annotated[Optional[float], typer.Option(help="Samples per second per track.")] = None,
    seconds: Annotated[Optional[float], typer.Option(help="Leave after this long (default: Ctrl-C).")] = None,
    print_samples: Annotated[bool, typer.Option("--print/--no-print",
                                                help="Print the feed as JSON lines.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Run the bot in one Janus room without the API; samples go to the database (and stdout)."""
    if kind != "janus":
        _fail(ConfbotError(f"unknown connector {kind!r}: expected 'janus'"))
    _configure_logging()
    try:
        settings = _settings(config)
        code = asyncio.run(_join(settings, url=url, room=room, pin=pin,
                                 title=title or f"Janus room {room}", sample_fps=sample_fps,
                                 seconds=seconds, print_samples=print_samples))
    except ConfbotError as exc:
        _fail(exc)
    raise typer.Exit(code)


async def _join(settings: Any, *, url: str, room: int, pin: str | None, title: str,
                sample_fps: float | None, seconds: float | None, print_samples: bool) -> int:
    import json

    from confbot.api.app import build_services, run_services
    from confbot.feed.broker import FeedInterruptedError
    from confbot.store.db import upgrade_database

    await asyncio.to_thread(upgrade_database, settings)
    svc = build_services(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with run_services(svc, close_db=True):
        connector: dict[str, Any] = {"type": "janus", "url": url, "room": room}
        if pin:
            connector["pin"] = pin
        new = await svc.manager.create_call(
            title=title, connector=connector,
            sample_fps=sample_fps or settings.pipeline.sample_fps, consent="all")
        call_id = new.call.id
        typer.echo(f"call {call_id}: joining Janus room {room} at {url}", err=True)
        subscription = svc.broker.subscribe(call_id)
        status = "ended"

        async def pump() -> None:
            nonlocal status
            try:
                await follow()
            except FeedInterruptedError as exc:  # lagged: the database still has every sample
                typer.echo(f"call {call_id}: stopped printing the feed ({exc.reason})", err=True)

        async def follow() -> None:
            nonlocal status
            async for message in subscription:
                if print_samples:
                    sys.stdout.write(json.dumps(message) + "\n")
                    sys.stdout.flush()
                if message.get("type") == "call" and message.get("status") in ("failed", "ended"):
                    status = message["status"]
                    if message.get("reason"):
                        typer.echo(f"call {call_id} {status}: {message['reason']}", err=True)
                    stop.set()
                    return

        pump_task = asyncio.create_task(pump())
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            pass
        if call_id in svc.manager.active:
            await svc.manager.end_call(call_id)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(pump_task, timeout=2.0)
        pump_task.cancel()
    return 1 if status == "failed" else 0


def feed(
    call_id: Annotated[str, typer.Argument(help="The call id.")],
    token: Annotated[str, typer.Option(help="The call's host token.", envvar="CONFBOT_HOST_TOKEN")],
    url: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    since_ms: Annotated[Optional[int], typer.Option(help="Replay from this call time (ms).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON lines.")] = False,
) -> None:
    """Follow a call's live feed in the terminal (reconnects without gaps)."""
    from confbot.feed.client import run_feed_client

    try:
        code = run_feed_client(url, call_id, token, since_ms=since_ms, json_lines=as_json)
    except ConfbotError as exc:
        _fail(exc)
    raise typer.Exit(code)


db_app = typer.Typer(no_args_is_help=True, help="The SQL database.")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply the migrations (create or update the tables)."""
    from confbot.store.db import mask_url, upgrade_database

    try:
        settings = _settings(config)
        upgrade_database(settings)
    except ConfbotError as exc:
        _fail(exc)
    typer.echo(f"database {mask_url(settings.database.url)} is at the newest schema")


def purge(
    config: ConfigOpt = None,
    days: Annotated[Optional[int], typer.Option(help="Override privacy.retention_days.")] = None,
) -> None:
    """Delete calls that ended more than `privacy.retention_days` ago, with all their data."""
    from confbot.store.db import Database
    from confbot.store.retention import purge_calls_ended_before, retention_cutoff

    try:
        settings = _settings(config)
        keep = settings.privacy.retention_days if days is None else days
        if keep < 0:
            raise ConfbotError("--days must be >= 0")
        with Database.from_settings(settings) as db:
            counts = purge_calls_ended_before(db, retention_cutoff(keep))
    except ConfbotError as exc:
        _fail(exc)
    typer.echo(f"purged {counts.calls} call(s) that ended over {keep} day(s) ago: "
               f"{counts.participants} participant(s), {counts.samples} sample(s), {counts.events} event(s)")


def report(
    call_id: Annotated[str, typer.Argument(help="The call id.")],
    format: Annotated[str, typer.Option("--format", help="html, csv or json.")] = "html",
    out: Annotated[Optional[Path], typer.Option(help="Output file; '-' or absent: stdout.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a call's post-call report."""
    from confbot.report_render import report_command

    try:
        report_command(_settings(config), call_id, format, out)
    except ConfbotError as exc:
        _fail(exc)


def _configure_logging() -> None:
    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("aioice", "aiortc", "httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def register(app: typer.Typer) -> None:
    """Add the server commands to `app`."""
    app.command()(serve)
    app.command()(join)
    app.command()(feed)
    app.command()(purge)
    app.command()(report)
    app.add_typer(db_app, name="db")
