"""The feed websocket: `GET /api/calls/{call_id}/feed` (docs/feed.md).

    app.include_router(feed_router(db, broker, authorize=lambda call_id, token:
                                   verify_host_token(db, call_id, token)))

The server accepts the connection, checks the host token and the query, then sends JSON text
frames: the messages since `since_ms` replayed from SQL, then the live ones. Every refusal and
every end is a close frame with a code and a reason text; no data is sent before the token
has been checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from contextlib import aclosing, suppress
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from confbot.errors import ConfbotError
from confbot.feed.broker import FeedBroker, FeedInterruptedError
from confbot.feed.replay import replay_then_live
from confbot.store.calls import get_call
from confbot.store.db import Database

log = logging.getLogger(__name__)

FEED_PATH = "/api/calls/{call_id}/feed"

CLOSE_CALL_ENDED = 1000
CLOSE_SHUTDOWN = 1001
CLOSE_SERVER_ERROR = 1011
CLOSE_LAGGED = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_NO_TOKEN = 4401
CLOSE_WRONG_TOKEN = 4403
CLOSE_NO_SUCH_CALL = 4404

MAX_SINCE_MS = 2**62
_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes
_DIGITS = re.compile(r"[0-9]{1,19}")


def feed_router(db: Database, broker: FeedBroker, *,
                authorize: Callable[[str, str | None], bool]) -> APIRouter:
    """A router with the feed websocket of every call.

    `authorize(call_id, token)` is True when `token` may read the call's feed; it runs in a
    worker thread. Close codes: 4401 no token, 4403 wrong token, 4404 no such call, 4400 a
    bad `since_ms`, 1000 the call ended, 1013 the client lagged, 1001 the server is shutting
    down, 1011 the database failed. The client should reconnect (with `since_ms`) after 1001,
    1011 and 1013, and not after the 44xx codes.
    """
    router = APIRouter()

    @router.websocket(FEED_PATH)
    async def call_feed(websocket: WebSocket, call_id: str) -> None:
        await websocket.accept()
        try:
            refusal = await _refusal(websocket, db, call_id, authorize)
        except ConfbotError as exc:
            log.warning("call %s: feed refused: %s", call_id, exc)
            await _close(websocket, CLOSE_SERVER_ERROR, f"server error: {exc}")
            return
        if isinstance(refusal, tuple):
            log.info("call %s: feed refused (%d %s)", call_id, *refusal)
            await _close(websocket, *refusal)
            return
        log.info("call %s: feed client connected, since %d ms", call_id, refusal)
        await _serve(websocket, db, broker, call_id, refusal)

    return router


async def _refusal(websocket: WebSocket, db: Database, call_id: str,
                   authorize: Callable[[str, str | None], bool]) -> tuple[int, str] | int:
    """(close code, reason) when the connection is refused; otherwise its `since_ms`."""
    token = websocket.query_params.get("token")
    header = websocket.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return CLOSE_NO_TOKEN, "the Authorization header must be 'Bearer HOST_TOKEN'"
        token = value.strip()
    if not token:
        return CLOSE_NO_TOKEN, "a host token is needed: pass ?token=HOST_TOKEN or Authorization: Bearer"
    allowed = await asyncio.to_thread(authorize, call_id, token)
    exists = await asyncio.to_thread(get_call, db, call_id) is not None
    if not exists:
        return CLOSE_NO_SUCH_CALL, f"no call with id {call_id!r}"
    if not allowed:
        return CLOSE_WRONG_TOKEN, "this host token does not open this call"
    raw = websocket.query_params.get("since_ms")
    if raw is None:
        return 0
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_SINCE_MS:
        return CLOSE_BAD_REQUEST, f"since_ms must be a whole number of milliseconds >= 0, got {raw[:40]!r}"
    return int(raw)


async def _serve(websocket: WebSocket, db: Database, broker: FeedBroker, call_id: str, since_ms: int) -> None:
    """Send the feed until it ends or the client leaves, then close with the right code."""
    sender = asyncio.create_task(_send_feed(websocket, db, broker, call_id, since_ms),
                                 name=f"feed-send-{call_id}")
    watcher = asyncio.create_task(_until_disconnect(websocket), name=f"feed-watch-{call_id}")
    try:
        done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, watcher):
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
    if watcher in done or sender.cancelled():
        log.info("call %s: feed client disconnected", call_id)
        return
    code, reason = CLOSE_CALL_ENDED, "the call has ended"
    try:
        sender.result()
    except WebSocketDisconnect:
        log.info("call %s: feed client disconnected", call_id)
        return
    except FeedInterruptedError as exc:
        code = CLOSE_LAGGED if exc.reason == "lagged" else CLOSE_SHUTDOWN
        reason = ("too slow: reconnect with since_ms" if exc.reason == "lagged"
                  else "server shutting down: reconnect with since_ms")
    except ConfbotError as exc:
        log.warning("call %s: feed failed: %s", call_id, exc)
        code, reason = CLOSE_SERVER_ERROR, f"server error: {exc}"
    except Exception:
        log.exception("call %s: feed failed", call_id)
        code, reason = CLOSE_SERVER_ERROR, "internal server error"
    log.info("call %s: feed closed (%d %s)", call_id, code, reason)
    await _close(websocket, code, reason)


async def _send_feed(websocket: WebSocket, db: Database, broker: FeedBroker, call_id: str,
                     since_ms: int) -> None:
    async with aclosing(replay_then_live(db, broker, call_id, since_ms)) as messages:
        async for message in messages:
            text = _encode(call_id, message)
            if text is not None:
                await websocket.send_text(text)


async def _until_disconnect(websocket: WebSocket) -> None:
    """Return when the client goes away; what it sends is ignored (the feed is one-way)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def _encode(call_id: str, message: dict[str, Any]) -> str | None:
    try:
        return json.dumps(message, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        log.warning("call %s: not sending a %s message that is not valid JSON: %s", call_id,
                    message.get("type"), exc)
        return None


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    data = reason.encode("utf-8")[:_CLOSE_REASON_BYTES]
    with suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close(code=code, reason=data.decode("utf-8", "ignore"))
