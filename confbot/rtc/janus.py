"""The bot in a Janus VideoRoom: joins, shows itself, and receives every publisher's video.

How it sits in the room (Janus 1.1):
- It joins with `ptype: publisher` under `display_name`, and, unless `publish_placeholder` is
  off, publishes a small still card (320x180, one frame a second, VP8) that names it, so every
  VideoRoom client shows the bot like any other participant. A plain `join` without publishing
  would only be visible in `listparticipants`, or to clients of rooms with `notify_joining`.
  If the card cannot be published (the room is full, say) the bot stays in as a listener.
- For every publisher with video it opens one subscriber handle and one recvonly
  PeerConnection (the "legacy" one-feed-per-subscription mode: a publisher that leaves tears
  down only its own connection, with no renegotiation of the others). A publisher with several
  video streams is received on its first one (its camera, in every common client).
- It follows the room: `publishers` events subscribe to new feeds; `unpublished` and `leaving`
  end them and call `on_leave`. Participant ids are `janus-<feed id>`.
- Simulcast publishers are received on the lowest substream whose frames are still at least
  `min_frame_height_px` high (see confbot.rtc.simulcast); with no such layer, on the tallest.
- The Janus session is kept alive (keepalive every `keepalive_interval_s`) and its events are
  long-polled. When Janus goes away (the long-poll fails repeatedly, or Janus no longer knows
  the session after a restart), the bot calls `on_leave` for everyone, then tries to create a
  new session and join again for `reconnect_timeout_s`; after a restart every publisher has a new
  feed id, so they come back as new participants. If that fails, `failed` says why and
  `on_failed(reason)` is called. A destroyed room, or the bot being kicked, fails at once.

Only the Janus HTTP API (e.g. http://127.0.0.1:8088/janus) is spoken; not the WebSocket one.
Every track handed to `on_track` ends (its `recv()` raises MediaStreamError) as soon as its
participant leaves, its connection is closed or fails, or the connector stops, even when the
publisher never sent a frame; a reader blocked in `recv()` is released then. `stop()` does
not call `on_leave`.

`ice_servers` are the STUN/TURN servers of every PeerConnection the bot opens; None keeps
aiortc's default (a public Google STUN server), and `[]` gathers host candidates only, which
is what a Janus on the same machine or network needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from confbot.errors import ConnectorError
from confbot.rtc.card import BotCardTrack
from confbot.rtc.janus_http import Event, JanusError, JanusSession
from confbot.rtc.sdp import without_receiver_estimation
from confbot.rtc.simulcast import SimulcastTrack

logger = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
BOT_STREAM_DESCRIPTION = "confbot-card"  # marks the bot's own card, so other bots skip it
# VideoRoom error codes (janus_videoroom.c)
_NO_SUCH_ROOM = 426
_MISSING_ELEMENT = 429
_UNAUTHORIZED = 433

OnTrack = Callable[[str, str, MediaStreamTrack], Awaitable[None] | None]
OnLeave = Callable[[str], Awaitable[None] | None]
OnFailed = Callable[[str], Awaitable[None] | None]


@dataclass
class _Feed:
    """One publisher in the room, and our subscription to it."""

    feed_id: int
    display: str
    video_mid: str | None
    simulcast: bool
    handle_id: int | None = None
    pc: RTCPeerConnection | None = None
    track: FeedTrack | None = None  # what on_track got
    task: asyncio.Task[None] | None = None
    announced: bool = False  # on_track was called
    failures: int = 0

    @property
    def participant_id(self) -> str:
        return f"janus-{self.feed_id}"


class JanusConnector:
    """Joins Janus VideoRoom `room` at `url` and hands each publisher's video to `on_track`."""

    def __init__(
        self,
        *,
        url: str,
        room: int,
        pin: str | None,
        display_name: str,
        on_track: OnTrack,
        on_leave: OnLeave,
        on_failed: OnFailed | None = None,
        min_frame_height_px: int = 360,
        publish_placeholder: bool = True,
        call_id: str | None = None,
        keepalive_interval_s: float = 25.0,
        reconnect_timeout_s: float = 30.0,
        request_timeout_s: float = 10.0,
        subscribe_timeout_s: float = 20.0,
        ice_servers: Sequence[RTCIceServer] | None = None,
    ) -> None:
        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConnectorError(
                f"Janus URL {url!r}: expected the HTTP API root, e.g. http://host:8088/janus"
            )
        if isinstance(room, bool) or not isinstance(room, int) or room <= 0:
            raise ConnectorError(f"Janus room {room!r}: expected a positive integer room id")
        if pin is not None and not isinstance(pin, str):
            raise ConnectorError(f"Janus room pin {pin!r}: expected a string or None")
        if not isinstance(display_name, str) or not display_name.strip():
            raise ConnectorError(f"display name {display_name!r}: expected a non-empty string")
        for name, value in (("keepalive_interval_s", keepalive_interval_s),
                            ("reconnect_timeout_s", reconnect_timeout_s),
                            ("request_timeout_s", request_timeout_s),
                            ("subscribe_timeout_s", subscribe_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConnectorError(f"JanusConnector {name}={value!r}: expected a positive number")
        self.url = url.rstrip("/")
        self.room = room
        self.pin = pin or None
        self.display_name = display_name
        self._on_track = on_track
        self._on_leave = on_leave
        self._on_failed = on_failed
        self.min_frame_height_px = min_frame_height_px
        self.publish_placeholder = publish_placeholder
        self._keepalive_interval_s = keepalive_interval_s
        self._reconnect_timeout_s = reconnect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._ice_servers = list(ice_servers) if ice_servers is not None else None
        self._log = f"[call={call_id or '-'} janus room={room}] "
        self._http: httpx.AsyncClient | None = None
        self._session: JanusSession | None = None
        self._handle_id: int | None = None
        self._own_id: int | None = None
        self._private_id: int | None = None
        self._publisher_pc: RTCPeerConnection | None = None
        self._feeds: dict[int, _Feed] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failed: str | None = None
        self._stopping = False

    # ------------------------------------------------------------------ public API

    @property
    def failed(self) -> str | None:
        """Why the bot lost the room for good, or None while it is in (or was stopped)."""
        return self._failed

    @property
    def participants(self) -> dict[str, str]:
        """Participant id -> display name, for every publisher whose video we receive."""
        return {f.participant_id: f.display for f in self._feeds.values() if f.announced}

    async def start(self) -> None:
        """Join the room and subscribe to everyone publishing in it.

        Raises ConnectorError saying why when Janus is unreachable, the room does not exist, or
        the pin is wrong. Publishers that fail to subscribe are logged, not raised.
        """
        if self._http is not None:
            raise ConnectorError("JanusConnector.start() called twice")
        self._http = httpx.AsyncClient()
        try:
            try:
                await self._join()
            except (ConnectorError, asyncio.CancelledError):
                raise
            except Exception as exc:  # a Janus that answers nonsense, say; never a bare traceback
                raise ConnectorError(
                    f"cannot join Janus room {self.room} on {self.url}: {type(exc).__name__}: {exc}"
                ) from exc
        except BaseException:
            await self._close_all(leave=False)
            await self._http.aclose()
            self._http = None
            raise
        self._spawn(self._supervise(), "supervise")
        logger.info("%sjoined as %r (feed %s), %d publisher(s)",
                    self._log, self.display_name, self._own_id, len(self._feeds))

    async def stop(self) -> None:
        """Leave the room, close every connection and stop all tasks. Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_all(leave=True)
        if self._http is not None:
            await self._http.aclose()
        logger.info("%sleft the room", self._log)

    # ------------------------------------------------------------------ joining

    async def _join(self) -> None:
        """Create a session, join as a publisher, show the card, subscribe to everyone."""
        assert self._http is not None
        session = JanusSession(
            self._http, self.url, on_event=self._on_event, log_prefix=self._log,
            keepalive_interval_s=self._keepalive_interval_s,
            request_timeout_s=self._request_timeout_s,
        )
        self._session = session
        await session.open()
        try:
            self._handle_id = await session.attach(VIDEOROOM)
        except JanusError as exc:
            raise ConnectorError(f"Janus at {self.url} has no VideoRoom plugin: {exc}") from exc
        body: dict[str, Any] = {
            "request": "join", "ptype": "publisher", "room": self.room, "display": self.display_name,
        }
        if self.pin:
            body["pin"] = self.pin
        try:
            joined = (await session.send(self._handle_id, body)).data
        except JanusError as exc:
            raise self._join_error(exc) from exc
        self._own_id = joined.get("id")
        self._private_id = joined.get("private_id")
        if self.publish_placeholder:
            await self._publish_card()
        await asyncio.gather(*(self._add_publisher(p) for p in joined.get("publishers") or []))

    def _join_error(self, exc: JanusError) -> ConnectorError:
        if exc.code == _NO_SUCH_ROOM:
            return ConnectorError(f"Janus room {self.room} does not exist on {self.url}")
        needs_pin = exc.code == _MISSING_ELEMENT and "pin" in str(exc)
        if exc.code == _UNAUTHORIZED or needs_pin:
            what = "wrong pin" if self.pin else "the room needs a pin and none was given"
            return ConnectorError(f"cannot join Janus room {self.room}: {what} ({exc})")
        return ConnectorError(f"cannot join Janus room {self.room} on {self.url}: {exc}")

    async def _publish_card(self) -> None:
        assert self._session is not None and self._handle_id is not None
        pc = self._new_pc()
        self._publisher_pc = pc
        try:
            transceiver = pc.addTransceiver(BotCardTrack(self.display_name), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            body = {
                "request": "publish", "audio": False, "video": True,
                "descriptions": [{"mid": transceiver.mid, "description": BOT_STREAM_DESCRIPTION}],
            }
            reply = await self._session.send(self._handle_id, body, _jsep(pc))
            if not reply.jsep:
                raise ConnectorError("Janus sent no SDP answer to 'publish'")
            await pc.setRemoteDescription(RTCSessionDescription(reply.jsep["sdp"], reply.jsep["type"]))
        except (ConnectorError, ValueError) as exc:
            logger.warning("%scould not publish the bot's card, staying as a listener: %s",
                           self._log, exc)
            self._publisher_pc = None
            await pc.close()

    # ------------------------------------------------------------------ room events

    def _on_event(self, event: Event) -> None:
        if self._stopping or self._failed:
            return
        sender = event.get("sender")
        kind = event.get("janus")
        if sender != self._handle_id:
            if kind == "hangup":
                feed = self._feed_by_handle(sender)
                if feed is not None:
                    logger.info("%sjanus hung up on %s: %s",
                                self._log, feed.participant_id, event.get("reason"))
            return
        if kind == "hangup" and self._publisher_pc is not None:
            logger.warning("%sjanus hung up the bot's card: %s", self._log, event.get("reason"))
            return
        data = (event.get("plugindata") or {}).get("data") or {}
        for publisher in data.get("publishers") or []:
            self._spawn(self._add_publisher(publisher), "subscribe")
        for key in ("unpublished", "leaving"):
            gone = data.get(key)
            if gone == "ok" or gone is None:
                continue
            self._spawn(self._remove_feed(int(gone), key), key)
        if data.get("videoroom") == "destroyed":
            self._spawn(self._fail(f"Janus room {self.room} was destroyed"), "fail")
        elif data.get("leaving") == "ok" and data.get("reason") == "kicked":
            self._spawn(self._fail(f"the bot was kicked from Janus room {self.room}"), "fail")

    def _feed_by_handle(self, handle_id: Any) -> _Feed | None:
        return next((f for f in self._feeds.values() if f.handle_id == handle_id), None)

    async def _add_publisher(self, publisher: dict[str, Any]) -> None:
        """Subscribe to `publisher` (an entry of a `publishers` list) if it sends video.

        Never raises (but CancelledError): a publisher we cannot receive is logged and skipped.
        """
        try:
            feed_id = int(publisher["id"])
        except (KeyError, TypeError, ValueError):
            logger.warning("%signoring a publisher without a numeric id: %r", self._log, publisher)
            return
        if feed_id == self._own_id:
            return
        streams = publisher.get("streams") or []
        if any(s.get("description") == BOT_STREAM_DESCRIPTION for s in streams):
            logger.debug("%sskipping feed %s: another confbot", self._log, feed_id)
            return
        video = next((s for s in streams if s.get("type") == "video" and not s.get("disabled")), None)
        display = str(publisher.get("display") or f"feed {feed_id}")
        feed = self._feeds.get(feed_id)
        if feed is not None:
            feed.display = display
            if feed.task is not None or feed.pc is not None or video is None:
                return  # already subscribed or subscribing; or still nothing to receive
            feed.video_mid, feed.simulcast = video.get("mid"), bool(video.get("simulcast"))
        else:
            feed = _Feed(feed_id=feed_id, display=display,
                         video_mid=video.get("mid") if video else None,
                         simulcast=bool(video and video.get("simulcast")))
            self._feeds[feed_id] = feed
            if video is None:
                logger.info("%s%s (%r) publishes no video yet", self._log, feed.participant_id, display)
                return
        feed.task = asyncio.current_task()
        try:
            track = FeedTrack(await asyncio.wait_for(self._subscribe(feed), self._subscribe_timeout_s))
        except Exception as exc:  # one publisher we cannot receive must not stop the others
            logger.warning("%scould not subscribe to %s (%r): %s: %s", self._log,
                           feed.participant_id, display, type(exc).__name__, exc)
            await self._close_feed(feed)
            return
        finally:
            feed.task = None
        feed.track = track
        feed.announced = True
        logger.info("%ssubscribed to %s (%r)%s", self._log, feed.participant_id, feed.display,
                    " simulcast" if feed.simulcast else "")
        await self._call(self._on_track, feed.participant_id, feed.display, track)

    async def _subscribe(self, feed: _Feed) -> MediaStreamTrack:
        """Open a subscriber handle and a recvonly PeerConnection for `feed`; return its video."""
        assert self._session is not None
        session = self._session
        feed.handle_id = await session.attach(VIDEOROOM)
        stream: dict[str, Any] = {"feed": feed.feed_id}
        if feed.video_mid is not None:
            stream["mid"] = feed.video_mid
        body: dict[str, Any] = {
            "request": "join", "ptype": "subscriber", "room": self.room, "streams": [stream],
        }
        if self._private_id is not None:
            body["private_id"] = self._private_id
        if self.pin:
            body["pin"] = self.pin
        attached = await session.send(feed.handle_id, body)
        if not attached.jsep:
            raise ConnectorError("Janus sent no SDP offer for the subscription")
        sub_streams = attached.data.get("streams") or []
        sub_mid = next((s.get("mid") for s in sub_streams if s.get("type") == "video"), None)
        pc = self._new_pc()
        feed.pc = pc
        tracks: list[MediaStreamTrack] = []
        pc.on("track", lambda track: tracks.append(track) if track.kind == "video" else None)
        pc.on("connectionstatechange", lambda: self._on_pc_state(feed, pc))
        await pc.setRemoteDescription(RTCSessionDescription(
            without_receiver_estimation(attached.jsep["sdp"]), attached.jsep["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        await session.send(feed.handle_id, {"request": "start"}, _jsep(pc))
        if not tracks:
            raise ConnectorError("the subscription carries no video track (unsupported codec?)")
        if feed.simulcast and sub_mid is not None:
            return SimulcastTrack(tracks[0], self._layer_switcher(feed, sub_mid),
                                  min_height_px=self.min_frame_height_px)
        return tracks[0]

    def _layer_switcher(self, feed: _Feed, sub_mid: str) -> Callable[[int], None]:
        def switch(substream: int) -> None:
            async def configure() -> None:
                if self._session is None or feed.handle_id is None:
                    return
                body = {"request": "configure", "mid": sub_mid, "substream": substream}
                with contextlib.suppress(ConnectorError):
                    await self._session.send(feed.handle_id, body)
                logger.info("%s%s: simulcast substream %d", self._log, feed.participant_id, substream)

            self._spawn(configure(), "simulcast")

        return switch

    def _on_pc_state(self, feed: _Feed, pc: RTCPeerConnection) -> None:
        if pc.connectionState != "failed" or self._stopping or feed.pc is not pc:
            return
        feed.failures += 1
        logger.warning("%sconnection to %s failed (%d)", self._log, feed.participant_id, feed.failures)

        async def resubscribe() -> None:
            was_announced = feed.announced
            await self._close_feed(feed)
            if was_announced:
                await self._call(self._on_leave, feed.participant_id)
            if feed.failures <= 2 and self._feeds.get(feed.feed_id) is feed:
                feed.announced = False
                await self._add_publisher({"id": feed.feed_id, "display": feed.display, "streams": [
                    {"type": "video", "mid": feed.video_mid, "simulcast": feed.simulcast}]})

        self._spawn(resubscribe(), "resubscribe")

    async def _remove_feed(self, feed_id: int, why: str) -> None:
        feed = self._feeds.pop(feed_id, None)
        if feed is None:
            return
        await _cancel_and_wait(feed.task)
        await self._close_feed(feed)
        logger.info("%s%s (%r) %s", self._log, feed.participant_id, feed.display, why)
        if feed.announced:
            feed.announced = False
            await self._call(self._on_leave, feed.participant_id)

    async def _close_feed(self, feed: _Feed) -> None:
        pc, feed.pc = feed.pc, None
        handle, feed.handle_id = feed.handle_id, None
        track, feed.track = feed.track, None
        if track is not None:
            track.stop()
        if pc is not None:
            await pc.close()
        if handle is not None and self._session is not None and not self._session.lost.done():
            with contextlib.suppress(ConnectorError):
                await self._session.detach(handle)

    # ------------------------------------------------------------------ losing Janus

    async def _supervise(self) -> None:
        """Wait for the session to be lost; then rejoin for a while, or fail."""
        while not self._stopping:
            assert self._session is not None
            reason = await asyncio.shield(self._session.lost)
            if self._stopping or self._failed:
                return
            logger.warning("%slost Janus (%s); rejoining for up to %.0f s",
                           self._log, reason, self._reconnect_timeout_s)
            await self._close_all(leave=False, announce=True)
            deadline = time.monotonic() + self._reconnect_timeout_s
            delay = 0.5
            while True:
                try:
                    await self._join()
                    logger.info("%srejoined the room (feed %s), %d publisher(s)",
                                self._log, self._own_id, len(self._feeds))
                    break
                except ConnectorError as exc:
                    reason = str(exc)
                    await self._close_all(leave=False)
                except Exception as exc:  # keep trying; a crashed supervisor would hang the call
                    reason = f"{type(exc).__name__}: {exc}"
                    logger.warning("%srejoin attempt failed: %s", self._log, reason)
                    await self._close_all(leave=False)
                if time.monotonic() + delay > deadline:
                    await self._fail(f"lost Janus and could not rejoin within "
                                     f"{self._reconnect_timeout_s:.0f} s: {reason}")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _fail(self, reason: str) -> None:
        if self._failed or self._stopping:
            return
        self._failed = reason
        logger.error("%sfailed: %s", self._log, reason)
        await self._close_all(leave=True, announce=True)
        if self._on_failed is not None:
            await self._call(self._on_failed, reason)

    async def _close_all(self, *, leave: bool, announce: bool = False) -> None:
        """Close every connection and the session; with `announce`, call on_leave for all."""
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            await _cancel_and_wait(feed.task)
        session, self._session = self._session, None
        if session is not None and leave and self._handle_id is not None and not session.lost.done():
            with contextlib.suppress(ConnectorError):
                await session.send(self._handle_id, {"request": "leave"}, timeout_s=2.0)
        for feed in feeds:
            if feed.track is not None:
                feed.track.stop()
            if feed.pc is not None:
                await feed.pc.close()
            if announce and feed.announced:
                await self._call(self._on_leave, feed.participant_id)
        pc, self._publisher_pc = self._publisher_pc, None
        if pc is not None:
            await pc.close()
        if session is not None:
            await session.close(destroy=True)
        self._handle_id = self._own_id = self._private_id = None

    # ------------------------------------------------------------------ helpers

    def _new_pc(self) -> RTCPeerConnection:
        if self._ice_servers is None:
            return RTCPeerConnection()
        return RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"janus-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%stask %s crashed", self._log, task.get_name(), exc_info=task.exception())

    async def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("%s%s callback raised", self._log, getattr(callback, "__name__", "a"))


class FeedTrack(MediaStreamTrack):
    """A received video track that ends when its participant does.

    aiortc ends a received track only once its connection has carried media; a reader waiting
    on a publisher that never sent a frame (or never connected) would wait forever. `stop()`
    releases such a reader at once with MediaStreamError.
    """

    kind = "video"

    def __init__(self, inner: MediaStreamTrack) -> None:
        super().__init__()
        self.inner = inner
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = asyncio.ensure_future(self.inner.recv())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait((frame, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the reader is cancelled: nothing is left running
            ended.cancel()
            stopped = not frame.done()
            if stopped:
                frame.cancel()
        if stopped:
            raise MediaStreamError
        return frame.result()  # raises the inner track's MediaStreamError at its end

    def stop(self) -> None:
        self._ended.set()
        super().stop()
        self.inner.stop()


async def _cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (not the current one) and wait until it has finished."""
    if task is None or task is asyncio.current_task() or task.done():
        return
    task.cancel()
    await asyncio.wait([task])


def _jsep(pc: RTCPeerConnection) -> dict[str, Any]:
    """Our SDP for Janus; aiortc puts every candidate in it, so no trickling."""
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp, "trickle": False}
