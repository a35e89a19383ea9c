"""One Janus session over the Janus HTTP API: requests, the event long-poll and keepalives.

Janus answers a plugin message either at once (`success` with the plugin's data: `exists`,
`listparticipants`, ...) or with an `ack`, and then sends the real answer as an event on the
session's long-poll with the same transaction (`join`, `publish`, `start`, ...). `JanusSession`
hides that difference: `send()` returns the plugin's answer either way. Events that answer no
request (a publisher joined or left, a hangup) go to the `on_event` callback.

The session is lost for good when Janus says it does not know it (after a restart, or a timeout)
or when the long-poll fails `poll_failures_limit` times in a row; `lost` then resolves with the
reason, and every pending request fails with `JanusSessionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from confbot.errors import ConnectorError

logger = logging.getLogger(__name__)

# Janus core error code (janus/apierror.h): the session is gone.
JANUS_ERROR_SESSION_NOT_FOUND = 458

Event = dict[str, Any]


class JanusError(ConnectorError):
    """Janus or one of its plugins refused a request; `code` is Janus's error code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class JanusSessionLost(ConnectorError):
    """The Janus session is gone: Janus restarted, timed it out, or stopped answering."""


@dataclass(frozen=True)
class PluginReply:
    """A plugin's answer to a request: its `data`, and the SDP (`jsep`) that came with it."""

    data: dict[str, Any]
    jsep: dict[str, Any] | None = None


class JanusSession:
    """A Janus session on `url` (e.g. http://127.0.0.1:8088/janus), opened by `open()`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        on_event: Callable[[Event], None],
        log_prefix: str = "",
        keepalive_interval_s: float = 25.0,
        request_timeout_s: float = 10.0,
        poll_failures_limit: int = 3,
    ) -> None:
        self._http = http
        self.url = url.rstrip("/")
        self._on_event = on_event
        self._log = log_prefix
        self._keepalive_interval_s = keepalive_interval_s
        self._request_timeout_s = request_timeout_s
        self._poll_failures_limit = poll_failures_limit
        self.session_id: int | None = None
        self._pending: dict[str, asyncio.Future[Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the session and start the long-poll and keepalive tasks.

        Raises ConnectorError when Janus is unreachable or the URL is not a Janus HTTP API.
        """
        reply = await self._post(self.url, {"janus": "create"})
        try:
            self.session_id = int(reply["data"]["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConnectorError(f"{self.url}: unexpected answer to 'create': {reply!r}") from exc
        logger.debug("%sjanus session %s created", self._log, self.session_id)
        self._spawn(self._poll_loop(), "poll")
        self._spawn(self._keepalive_loop(), "keepalive")

    async def close(self, *, destroy: bool = True) -> None:
        """Stop polling; with `destroy`, ask Janus to destroy the session (best effort, quick)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_pending(JanusSessionLost("session closed"))
        if destroy and self.session_id is not None and not self.lost.done():
            with contextlib.suppress(ConnectorError):
                await self._post(f"{self.url}/{self.session_id}", {"janus": "destroy"}, timeout_s=2.0)
        if not self.lost.done():
            self.lost.set_result("closed")

    # ------------------------------------------------------------------ requests

    async def attach(self, plugin: str) -> int:
        """Attach a new handle to `plugin`; returns the handle id."""
        reply = await self._session_post({"janus": "attach", "plugin": plugin})
        return int(reply["data"]["id"])

    async def detach(self, handle_id: int) -> None:
        await self._session_post({"janus": "detach"}, handle_id=handle_id, timeout_s=2.0)

    async def send(
        self,
        handle_id: int,
        body: dict[str, Any],
        jsep: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> PluginReply:
        """Send a plugin message; return the plugin's answer, synchronous or not.

        Raises JanusError when Janus or the plugin refuses it (with the plugin's error code).
        """
        transaction = uuid.uuid4().hex
        waiter: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = waiter
        message: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            reply = await self._session_post(message, handle_id=handle_id, transaction=transaction)
            if reply.get("janus") != "ack":
                return _plugin_reply(reply)
            event = await asyncio.wait_for(waiter, timeout_s or self._request_timeout_s)
            return _plugin_reply(event)
        except TimeoutError as exc:
            raise ConnectorError(
                f"Janus did not answer {body.get('request')!r} within "
                f"{timeout_s or self._request_timeout_s} s"
            ) from exc
        finally:
            self._pending.pop(transaction, None)

    async def _session_post(
        self,
        body: dict[str, Any],
        *,
        handle_id: int | None = None,
        transaction: str | None = None,
        timeout_s: float | None = None,
    ) -> Event:
        if self.session_id is None:
            raise ConnectorError("Janus session not open")
        url = f"{self.url}/{self.session_id}" + (f"/{handle_id}" if handle_id else "")
        return await self._post(url, body, transaction=transaction, timeout_s=timeout_s)

    async def _post(
        self,
        url: str,
        body: dict[str, Any],
        *,
        transaction: str | None = None,
        timeout_s: float | None = None,
    ) -> Event:
        body = {**body, "transaction": transaction or uuid.uuid4().hex}
        timeout = timeout_s or self._request_timeout_s
        try:
            response = await self._http.post(url, json=body, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise ConnectorError(
                f"Janus at {self.url} did not answer within {timeout} s ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise ConnectorError(
                f"Janus at {self.url} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        reply = _json_or_none(response)
        if reply is None:
            raise ConnectorError(
                f"{url} answered HTTP {response.status_code} without Janus JSON: is this the "
                "Janus HTTP API root (e.g. http://host:8088/janus)?"
            )
        if reply.get("janus") == "error":
            error = reply.get("error") or {}
            code = error.get("code")
            if code == JANUS_ERROR_SESSION_NOT_FOUND:
                self._mark_lost(f"Janus no longer knows the session ({error.get('reason')})")
                raise JanusSessionLost(f"Janus session lost: {error.get('reason')}")
            raise JanusError(f"Janus refused {body.get('janus')!r}: {error.get('reason')}", code)
        return reply

    # ------------------------------------------------------------------ background tasks

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"janus-{name}-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll_loop(self) -> None:
        failures = 0
        url = f"{self.url}/{self.session_id}"
        while not self.lost.done():
            try:
                response = await self._http.get(
                    url, params={"maxev": 10}, timeout=httpx.Timeout(self._request_timeout_s, read=45.0)
                )
                events = _json_or_none(response)
                if events is None:
                    raise ValueError(f"HTTP {response.status_code} without JSON")
            except (httpx.HTTPError, ValueError) as exc:
                failures += 1
                logger.warning(
                    "%sjanus long-poll failed (%d/%d): %s",
                    self._log, failures, self._poll_failures_limit, exc or type(exc).__name__,
                )
                if failures >= self._poll_failures_limit:
                    self._mark_lost(f"Janus at {self.url} stopped answering ({exc or type(exc).__name__})")
                    return
                await asyncio.sleep(min(0.5 * failures, 2.0))
                continue
            failures = 0
            for event in events if isinstance(events, list) else [events]:
                self._dispatch(event)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_interval_s)
            try:
                await self._session_post({"janus": "keepalive"})
            except JanusSessionLost:
                return
            except ConnectorError as exc:
                logger.warning("%sjanus keepalive failed: %s", self._log, exc)

    def _dispatch(self, event: Event) -> None:
        kind = event.get("janus")
        if kind == "keepalive":
            return
        if kind == "error":
            code = (event.get("error") or {}).get("code")
            if code == JANUS_ERROR_SESSION_NOT_FOUND:
                self._mark_lost(f"Janus no longer knows the session ({event['error'].get('reason')})")
                return
        if kind == "timeout":
            self._mark_lost("Janus timed the session out")
            return
        waiter = self._pending.get(str(event.get("transaction")))
        if waiter is not None and kind in ("event", "error") and not waiter.done():
            waiter.set_result(event)
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("%serror handling janus event %s", self._log, kind)

    def _mark_lost(self, reason: str) -> None:
        if not self.lost.done():
            logger.warning("%sjanus session %s lost: %s", self._log, self.session_id, reason)
            self.lost.set_result(reason)
        self._fail_pending(JanusSessionLost(reason))

    def _fail_pending(self, exc: Exception) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(exc)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _plugin_reply(event: Event) -> PluginReply:
    if event.get("janus") == "error":
        error = event.get("error") or {}
        raise JanusError(f"Janus error: {error.get('reason')}", error.get("code"))
    data = (event.get("plugindata") or {}).get("data") or {}
    if "error_code" in data:
        raise JanusError(f"{data.get('error')}", data.get("error_code"))
    return PluginReply(data=data, jsep=event.get("jsep"))
