"""WhipIngest with real aiortc peers in this process, over 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from confbot.errors import InputError
from confbot.rtc.whip import CallFullError, CallNotOpenError, WhipIngest, check_offer, clean_name


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    yield


class Recorder:
    def __init__(self) -> None:
        self.tracks: list[tuple[str, str, Any]] = []
        self.left: list[str] = []
        self.frame = asyncio.Event()

    async def on_track(self, participant_id: str, name: str, track: Any) -> None:
        self.tracks.append((participant_id, name, track))
        await track.recv()
        self.frame.set()

    def on_leave(self, participant_id: str) -> None:
        self.left.append(participant_id)


async def offer(*, video: bool = True) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if video:
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    else:
        pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def wait_until(predicate: Any, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_publisher_is_received_then_leaves_once(loopback_ice: None) -> None:
    ingest = WhipIngest()
    rec = Recorder()
    ingest.open_call("c1", on_track=rec.on_track, on_leave=rec.on_leave)
    pc, sdp = await offer()
    try:
        session = await ingest.publish("c1", sdp, display_name=" Ann\x07 ", consent=True)
        assert session.display_name == "Ann" and session.consent
        # No receiver-side bandwidth estimation: the answer drops abs-send-time (and REMB).
        assert "abs-send-time" in sdp
        assert "abs-send-time" not in session.answer_sdp and "goog-remb" not in session.answer_sdp
        assert ingest.session_of("c1", session.participant_id) == session
        await pc.setRemoteDescription(RTCSessionDescription(session.answer_sdp, "answer"))
        await asyncio.wait_for(rec.frame.wait(), 20)
        assert [(p, n) for p, n, _ in rec.tracks] == [(session.participant_id, "Ann")]
        assert await ingest.delete("c1", session.resource_id)
        assert await ingest.delete("c1", session.resource_id)  # a repeated DELETE is still fine
        assert rec.left == [session.participant_id]
        assert ingest.participant_of("c1", session.resource_id) is None
    finally:
        await pc.close()
        await ingest.close()


async def test_a_publisher_that_never_connects_is_dropped(loopback_ice: None) -> None:
    ingest = WhipIngest(connect_timeout_s=1.0)
    rec = Recorder()
    ingest.open_call("c1", on_track=rec.on_track, on_leave=rec.on_leave)
    pc, sdp = await offer()
    try:
        session = await ingest.publish("c1", sdp, display_name=None)
        assert session.display_name == "participant 1"
        # the answer is never applied, so ICE never completes
        await wait_until(lambda: rec.left == [session.participant_id], timeout_s=10)
    finally:
        await pc.close()
        await ingest.close()


async def test_closing_the_call_ends_every_publisher_and_refuses_new_ones(loopback_ice: None) -> None:
    ingest = WhipIngest(max_publishers_per_call=2)
    rec = Recorder()
    ingest.open_call("c1", on_track=rec.on_track, on_leave=rec.on_leave)
    peers = [await offer() for _ in range(3)]
    try:
        sessions = [await ingest.publish("c1", sdp) for _, sdp in peers[:2]]
        with pytest.raises(CallFullError):
            await ingest.publish("c1", peers[2][1])
        await ingest.close_call("c1")
        assert sorted(rec.left) == sorted(s.participant_id for s in sessions)
        assert not ingest.is_open("c1")
        with pytest.raises(CallNotOpenError):
            await ingest.publish("c1", peers[2][1])
    finally:
        for pc, _ in peers:
            await pc.close()
        await ingest.close()


async def test_offers_without_video_or_not_sdp_are_refused(loopback_ice: None) -> None:
    ingest = WhipIngest()
    rec = Recorder()
    ingest.open_call("c1", on_track=rec.on_track, on_leave=rec.on_leave)
    pc, audio_only = await offer(video=False)
    try:
        with pytest.raises(InputError, match="no video"):
            await ingest.publish("c1", audio_only)
        with pytest.raises(InputError, match="malformed"):
            await ingest.publish("c1", "v=0\r\nnonsense\r\n")
    finally:
        await pc.close()
        await ingest.close()


@pytest.mark.parametrize(("sdp", "message"), [
    ("", "empty"),
    ("hello", "must start with 'v=0'"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no media section"),
    ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nthis line is wrong\r\n", "line 3"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
     "a=rtpmap:96 VP8/90000\r\n", "no ICE credentials"),
])
def test_check_offer_names_what_is_wrong(sdp: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_offer(sdp)


def test_clean_name() -> None:
    assert clean_name(None) == ""
    assert clean_name("\x00 Bob \n") == "Bob"
    assert len(clean_name("x" * 500)) == 80
