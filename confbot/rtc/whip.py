"""WHIP ingest (RFC 9725) for the built-in room: publishers POST an SDP offer, get an answer.

    ingest = WhipIngest(ice_host_addresses=["127.0.0.1"])
    ingest.open_call(call_id, on_track=..., on_leave=...)
    session = await ingest.publish(call_id, offer_sdp, display_name="Ann", consent=True)
    ...                              # session.answer_sdp goes back to the publisher
    await ingest.delete(call_id, session.resource_id)
    await ingest.close_call(call_id)

One publisher is one participant (`whip-<random>`). Its first video track goes to `on_track`;
audio is not subscribed. When the publisher DELETEs its resource, its connection fails or
closes, or it never connects within `connect_timeout_s`, `on_leave` fires, once.
There is no trickle ICE: the offer carries the publisher's candidates and the answer the bot's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription

from confbot.errors import ConfbotError, InputError
from confbot.rtc.sdp import without_receiver_estimation

log = logging.getLogger(__name__)

OnTrack = Callable[[str, str, MediaStreamTrack], Awaitable[None] | None]
OnLeave = Callable[[str], Awaitable[None] | None]

MAX_NAME_LEN = 80
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SDP_LINE = re.compile(r"^[a-z]=")


class CallNotOpenError(ConfbotError):
    """The call does not exist here, or has ended: nothing can be published into it."""


class CallFullError(ConfbotError):
    """The call already has as many publishers as it accepts."""


@dataclass(frozen=True)
class WhipSession:
    call_id: str
    resource_id: str
    participant_id: str
    display_name: str
    consent: bool
    answer_sdp: str


@dataclass
class _Publisher:
    pc: RTCPeerConnection
    session: WhipSession | None = None  # set once the answer is made
    track: MediaStreamTrack | None = None
    track_given: bool = False
    left: bool = False
    timeout: asyncio.Task[None] | None = None


@dataclass
class _Call:
    on_track: OnTrack
    on_leave: OnLeave
    publishers: dict[str, _Publisher] = field(default_factory=dict)  # by resource id
    joined: int = 0
    # Resources that left lately: a DELETE racing the connection's close still gets 200.
    left: deque[str] = field(default_factory=lambda: deque(maxlen=256))


class WhipIngest:
    """Accepts WHIP publishers into the calls opened on it."""

    def __init__(self, *, ice_host_addresses: Sequence[str] = (), stun_servers: Sequence[str] = (),
                 max_publishers_per_call: int = 50, connect_timeout_s: float = 20.0) -> None:
        if ice_host_addresses:
            from confbot.rtc.ice import restrict_host_candidates

            restrict_host_candidates(ice_host_addresses)
        self._ice_servers = [RTCIceServer(urls=url) for url in stun_servers]
        self._max_publishers = max_publishers_per_call
        self._connect_timeout_s = connect_timeout_s
        self._calls: dict[str, _Call] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ calls

    def open_call(self, call_id: str, *, on_track: OnTrack, on_leave: OnLeave) -> None:
        self._calls[call_id] = _Call(on_track, on_leave)

    def is_open(self, call_id: str) -> bool:
        return call_id in self._calls

    async def close_call(self, call_id: str) -> None:
        """Close every publisher of the call (each gets `on_leave`) and stop accepting new ones."""
        call = self._calls.get(call_id)
        if call is None:
            return
        for publisher in list(call.publishers.values()):
            await self._leave(call, publisher, "the call ended")
        self._calls.pop(call_id, None)

    async def close(self) -> None:
        for call_id in list(self._calls):
            await self.close_call(call_id)
        for task in list(self._tasks):
            task.cancel()

    def session_of(self, call_id: str, participant_id: str) -> WhipSession | None:
        call = self._calls.get(call_id)
        if call is None:
            return None
        for publisher in call.publishers.values():
            if publisher.session is not None and publisher.session.participant_id == participant_id:
                return publisher.session
        return None

    def participant_of(self, call_id: str, resource_id: str) -> str | None:
        call = self._calls.get(call_id)
        publisher = call.publishers.get(resource_id) if call else None
        return publisher.session.participant_id if publisher and publisher.session else None

    # ------------------------------------------------------------------ publishers

    async def publish(self, call_id: str, offer_sdp: str, *, display_name: str | None = None,
                      consent: bool = False) -> WhipSession:
        """Answer a publisher's offer. Raises `CallNotOpenError`, `CallFullError`, or
        `InputError` for an offer that is not SDP or has no video."""
        call = self._calls.get(call_id)
        if call is None:
            raise CallNotOpenError(f"call {call_id!r} does not exist or has ended")
        if len(call.publishers) >= self._max_publishers:
            raise CallFullError(f"call {call_id!r} already has {self._max_publishers} publishers")
        check_offer(offer_sdp)
        call.joined += 1
        name = clean_name(display_name) or f"participant {call.joined}"
        resource_id = secrets.token_urlsafe(12)
        participant_id = f"whip-{secrets.token_hex(4)}"
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        publisher = _Publisher(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            # During setRemoteDescription, before the publisher is registered: kept until then.
            if track.kind == "video" and publisher.track is None:
                publisher.track = track
                if publisher.session is not None:
                    self._hand_over(call, publisher)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if publisher.session is None:
                return
            if pc.connectionState == "connected" and publisher.timeout is not None:
                publisher.timeout.cancel()
            elif pc.connectionState in ("failed", "closed"):
                await self._leave(call, publisher, f"connection {pc.connectionState}")

        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(without_receiver_estimation(offer_sdp), "offer"))
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.direction = "recvonly"
                else:
                    transceiver.direction = "inactive"  # audio is never analyzed
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            await pc.close()
            raise InputError(f"malformed SDP offer: {exc}") from exc
        except Exception as exc:  # aiortc raises bare exceptions for odd offers
            await pc.close()
            raise InputError(f"the offer cannot be answered: {type(exc).__name__}: {exc}") from exc
        session = WhipSession(call_id=call_id, resource_id=resource_id, participant_id=participant_id,
                              display_name=name, consent=consent, answer_sdp=pc.localDescription.sdp)
        publisher.session = session
        call.publishers[resource_id] = publisher
        publisher.timeout = self._spawn(self._expire(call, publisher), call_id)
        if publisher.track is not None:
            self._hand_over(call, publisher)
        log.info("call %s: WHIP publisher %s (%r) accepted", call_id, participant_id, name)
        return session

    async def delete(self, call_id: str, resource_id: str) -> bool:
        """The publisher leaves; False if there is no such resource."""
        call = self._calls.get(call_id)
        publisher = call.publishers.get(resource_id) if call else None
        if call is None:
            return False
        if publisher is None:
            return resource_id in call.left
        await self._leave(call, publisher, "the publisher left")
        return True

    def _hand_over(self, call: _Call, publisher: _Publisher) -> None:
        session = publisher.session
        if publisher.track_given or publisher.left or session is None or publisher.track is None:
            return
        publisher.track_given = True
        self._spawn(_call_back(call.on_track, session.participant_id, session.display_name,
                               publisher.track), session.call_id)

    async def _expire(self, call: _Call, publisher: _Publisher) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if publisher.pc.connectionState != "connected":
            await self._leave(call, publisher, f"no connection within {self._connect_timeout_s:.0f} s")

    async def _leave(self, call: _Call, publisher: _Publisher, why: str) -> None:
        session = publisher.session
        if publisher.left or session is None:
            return
        publisher.left = True
        call.publishers.pop(session.resource_id, None)
        call.left.append(session.resource_id)
        if publisher.timeout is not None and publisher.timeout is not asyncio.current_task():
            publisher.timeout.cancel()
        log.info("call %s: WHIP publisher %s left (%s)", session.call_id, session.participant_id, why)
        try:
            await _call_back(call.on_leave, session.participant_id)
        finally:
            await publisher.pc.close()

    def _spawn(self, coro: Any, call_id: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("call %s: WHIP task failed", call_id, exc_info=t.exception())

        task.add_done_callback(done)
        return task


def check_offer(sdp: str) -> None:
    """`InputError` unless `sdp` parses as an SDP offer with at least one video section."""
    if not sdp.strip():
        raise InputError("the SDP offer is empty")
    if not sdp.lstrip().startswith("v=0"):
        raise InputError("malformed SDP offer: it must start with 'v=0'")
    for number, line in enumerate(sdp.strip().splitlines(), 1):
        if not _SDP_LINE.match(line):
            raise InputError(f"malformed SDP offer: line {number} is not '<letter>=<value>': {line[:60]!r}")
    if "\nm=" not in sdp.replace("\r\n", "\n"):
        raise InputError("malformed SDP offer: it has no media section (m=)")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        raise InputError(f"malformed SDP offer: {exc}") from exc
    if not any(m.kind == "video" and m.port != 0 for m in parsed.media):
        raise InputError("the offer has no video: publish a camera or screen track")
    for media in parsed.media:
        if media.kind == "video" and not (media.ice and media.ice.usernameFragment and media.dtls):
            raise InputError("malformed SDP offer: the video section has no ICE credentials or "
                             "DTLS fingerprint")


def clean_name(name: str | None) -> str:
    """A display name fit for the feed: control characters dropped, trimmed, bounded."""
    if not name:
        return ""
    return _CONTROL.sub("", name).strip()[:MAX_NAME_LEN]


async def _call_back(fn: Callable[..., Any], *args: Any) -> None:
    result = fn(*args)
    if inspect.isawaitable(result):
        await result
