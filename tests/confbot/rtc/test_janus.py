"""JanusConnector against a real Janus, with publishers in their own processes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from confbot.errors import ConnectorError
from confbot.rtc.janus import FeedTrack, JanusConnector
from face_core import EMOTIONS
from tests.support.janus import (
    DEFAULT_ROOM,
    PIN,
    PIN_ROOM,
    JanusServer,
    free_tcp_port,
    janus_available,
)
from tests.support.media import FaceVideo
from tests.support.publisher import PublisherProcess

BOT_NAME = "confbot test bot"
pytestmark = pytest.mark.slow


class Recorder:
    """Collects what the connector reports, and waits for conditions on it."""

    def __init__(self) -> None:
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.names: dict[str, str] = {}
        self.left: list[str] = []
        self.failed: list[str] = []
        self._changed = asyncio.Event()

    async def on_track(self, participant_id: str, display: str, track: MediaStreamTrack) -> None:
        self.tracks[participant_id] = track
        self.names[participant_id] = display
        self._changed.set()

    def on_leave(self, participant_id: str) -> None:  # a plain function works too
        self.left.append(participant_id)
        self._changed.set()

    async def on_failed(self, reason: str) -> None:
        self.failed.append(reason)
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass

    def pid_of(self, display: str) -> str:
        return next(pid for pid, name in self.names.items() if name == display)


def connector(url: str, recorder: Recorder, **kwargs: Any) -> JanusConnector:
    # No STUN server: host candidates only, so nothing is sent off the machine.
    options: dict[str, Any] = {"room": DEFAULT_ROOM, "pin": None, "ice_servers": [], **kwargs}
    return JanusConnector(
        url=url, display_name=BOT_NAME, on_track=recorder.on_track, on_leave=recorder.on_leave,
        on_failed=recorder.on_failed, call_id="test", **options,
    )


@pytest.fixture
async def publishers() -> AsyncIterator[list[PublisherProcess]]:
    """Publisher processes started by the test; all terminated afterwards."""
    started: list[PublisherProcess] = []
    yield started
    for publisher in started:
        publisher.kill()


async def start_publisher(
    started: list[PublisherProcess], server: JanusServer, display: str, video: Path,
    *, silent: bool = False,
) -> PublisherProcess:
    publisher = await asyncio.to_thread(
        PublisherProcess.janus, server.url, DEFAULT_ROOM, display, video,
        ice_address=server.ice_address, silent=silent,
    )
    started.append(publisher)
    return publisher


async def first_frame(track: MediaStreamTrack, timeout_s: float = 15.0) -> np.ndarray:
    frame = await asyncio.wait_for(track.recv(), timeout_s)
    image: np.ndarray = frame.to_ndarray(format="bgr24")  # type: ignore[union-attr]
    return image


@pytest.mark.timeout(120)
async def test_janus_receives_every_publisher_with_display_names(
    janus_server: JanusServer, pinned_ice: str, astronaut_video: Path,
    publishers: list[PublisherProcess],
) -> None:
    await start_publisher(publishers, janus_server, "Alice", astronaut_video)
    await start_publisher(publishers, janus_server, "Bob", astronaut_video)
    recorder = Recorder()
    bot = connector(janus_server.url, recorder)
    await asyncio.wait_for(bot.start(), 30)
    try:
        await recorder.wait_until(lambda: len(recorder.tracks) == 2, 30, "tracks of Alice and Bob")
        assert sorted(recorder.names.values()) == ["Alice", "Bob"]
        assert all(pid.startswith("janus-") for pid in recorder.tracks)

        carol = await start_publisher(publishers, janus_server, "Carol", astronaut_video)
        await recorder.wait_until(lambda: len(recorder.tracks) == 3, 30, "Carol's track")
        assert recorder.pid_of("Carol") == f"janus-{carol.ready_id}"
        assert bot.participants == recorder.names

        for pid, track in recorder.tracks.items():
            image = await first_frame(track)
            assert image.shape == (360, 640, 3), pid
            assert 60 < float(image.mean()) < 200, pid  # a face on grey, not a black frame

        # The bot is in the room under its name, and visible as a publisher (its card).
        room = {p["display"]: p for p in janus_server.list_participants(DEFAULT_ROOM)}
        assert room[BOT_NAME]["publisher"] is True
        assert bot.failed is None
    finally:
        await asyncio.wait_for(bot.stop(), 15)
    displays = {p["display"] for p in janus_server.list_participants(DEFAULT_ROOM)}
    assert BOT_NAME not in displays


@pytest.mark.timeout(90)
async def test_janus_each_participant_gets_the_emotion_of_their_own_face(
    janus_server: JanusServer, pinned_ice: str, fer2013_video: Callable[[str], FaceVideo],
    analyzer: Any, publishers: list[PublisherProcess],
) -> None:
    sent = {"Happy Hanna": fer2013_video("happy"), "Surprised Sam": fer2013_video("surprise")}
    for display, video in sent.items():
        await start_publisher(publishers, janus_server, display, video.path)
    recorder = Recorder()
    bot = connector(janus_server.url, recorder, publish_placeholder=False)
    await asyncio.wait_for(bot.start(), 30)
    try:
        await recorder.wait_until(lambda: len(recorder.tracks) == 2, 30, "both tracks")
        for display, video in sent.items():
            track = recorder.tracks[recorder.pid_of(display)]
            for _ in range(3):
                image = await first_frame(track)
                (face,) = await asyncio.to_thread(analyzer.analyze_image, image)
                assert EMOTIONS[int(np.argmax(face.scores))] == video.emotion, display
    finally:
        await asyncio.wait_for(bot.stop(), 15)


@pytest.mark.timeout(90)
async def test_janus_on_leave_when_a_publisher_process_ends(
    janus_server: JanusServer, pinned_ice: str, astronaut_video: Path,
    publishers: list[PublisherProcess],
) -> None:
    alice = await start_publisher(publishers, janus_server, "Alice", astronaut_video)
    await start_publisher(publishers, janus_server, "Bob", astronaut_video)
    recorder = Recorder()
    bot = connector(janus_server.url, recorder, publish_placeholder=False)
    await asyncio.wait_for(bot.start(), 30)
    try:
        await recorder.wait_until(lambda: len(recorder.tracks) == 2, 30, "two tracks")
        alice_id = recorder.pid_of("Alice")
        assert await asyncio.to_thread(alice.terminate) == 0
        started = time.monotonic()
        await recorder.wait_until(lambda: alice_id in recorder.left, 10, "Alice's leave")
        assert time.monotonic() - started < 10
        assert recorder.left == [alice_id]  # Bob is still there
        assert list(bot.participants.values()) == ["Bob"]
    finally:
        await asyncio.wait_for(bot.stop(), 15)


@pytest.mark.timeout(30)
async def test_janus_unreachable_url_fails_quickly_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}/janus"
    bot = connector(url, Recorder())
    started = time.monotonic()
    with pytest.raises(ConnectorError, match="unreachable") as info:
        await bot.start()
    assert time.monotonic() - started < 5
    assert url in str(info.value)


@pytest.mark.timeout(30)
async def test_janus_silent_url_fails_within_the_request_timeout() -> None:
    # A port that accepts connections (the kernel completes the handshake) but never answers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/janus"
        bot = connector(url, Recorder(), request_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(ConnectorError, match=r"did not answer within 1\.0 s"):
            await bot.start()
        assert time.monotonic() - started < 5


@pytest.mark.timeout(30)
async def test_janus_url_that_is_not_janus_is_a_connector_error() -> None:
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_found, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConnectorError, match="HTTP 404 without Janus JSON"):
            await connector(f"http://127.0.0.1:{port}/", Recorder()).start()


async def test_janus_rejects_settings_that_cannot_work() -> None:
    with pytest.raises(ConnectorError, match="HTTP API root"):
        connector("ws://127.0.0.1:8188", Recorder())
    with pytest.raises(ConnectorError, match="positive integer"):
        connector("http://127.0.0.1:8088/janus", Recorder(), room="1234")
    with pytest.raises(ConnectorError, match="pin 1234: expected a string"):
        connector("http://127.0.0.1:8088/janus", Recorder(), pin=1234)
    with pytest.raises(ConnectorError, match="reconnect_timeout_s=0"):
        connector("http://127.0.0.1:8088/janus", Recorder(), reconnect_timeout_s=0)
    with pytest.raises(ConnectorError, match="display name"):
        JanusConnector(url="http://127.0.0.1:8088/janus", room=1, pin=None, display_name=" ",
                       on_track=Recorder().on_track, on_leave=Recorder().on_leave)


async def test_janus_feed_track_stop_releases_a_reader_of_a_track_without_frames() -> None:
    class NoFrames(MediaStreamTrack):
        kind = "video"

        async def recv(self) -> Any:
            await asyncio.Event().wait()  # a publisher that never sends a frame

    inner = NoFrames()
    track = FeedTrack(inner)
    reader = asyncio.ensure_future(track.recv())
    done, _ = await asyncio.wait([reader], timeout=0.3)
    assert not done
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(reader, 1)
    assert inner.readyState == "ended" and track.readyState == "ended"
    with pytest.raises(MediaStreamError):
        await track.recv()  # and stays ended


@pytest.mark.timeout(60)
async def test_janus_wrong_room_or_pin_is_a_connector_error(janus_server: JanusServer) -> None:
    with pytest.raises(ConnectorError, match="room 999 does not exist"):
        await connector(janus_server.url, Recorder(), room=999).start()
    with pytest.raises(ConnectorError, match="wrong pin"):
        await connector(janus_server.url, Recorder(), room=PIN_ROOM, pin="nope").start()
    with pytest.raises(ConnectorError, match="needs a pin"):
        await connector(janus_server.url, Recorder(), room=PIN_ROOM).start()
    # Nothing is left behind by the failed joins.
    assert janus_server.list_participants(PIN_ROOM) == []
    bot = connector(janus_server.url, Recorder(), room=PIN_ROOM, pin=PIN, publish_placeholder=False)
    await bot.start()
    assert [p["display"] for p in janus_server.list_participants(PIN_ROOM)] == [BOT_NAME]
    await bot.stop()


@pytest.mark.timeout(90)
async def test_janus_publisher_that_never_sends_a_frame_does_not_hold_up_the_others(
    janus_server: JanusServer, pinned_ice: str, astronaut_video: Path,
    publishers: list[PublisherProcess],
) -> None:
    silent = await start_publisher(publishers, janus_server, "Silent", astronaut_video, silent=True)
    await start_publisher(publishers, janus_server, "Alice", astronaut_video)
    recorder = Recorder()
    bot = connector(janus_server.url, recorder, publish_placeholder=False)
    await asyncio.wait_for(bot.start(), 30)
    try:
        await recorder.wait_until(lambda: len(recorder.tracks) == 2, 30, "both tracks")
        silent_id = f"janus-{silent.ready_id}"
        assert recorder.names[silent_id] == "Silent"
        reader = asyncio.ensure_future(recorder.tracks[silent_id].recv())
        await first_frame(recorder.tracks[recorder.pid_of("Alice")])  # Alice's video flows
        done, _ = await asyncio.wait([reader], timeout=3)
        assert not done, "a frame arrived from a publisher that sends none"

        assert await asyncio.to_thread(silent.terminate) == 0
        await recorder.wait_until(lambda: silent_id in recorder.left, 10, "the silent one's leave")
        with pytest.raises(MediaStreamError):  # the blocked reader is released
            await asyncio.wait_for(reader, 5)
        await first_frame(recorder.tracks[recorder.pid_of("Alice")])  # and Alice is unaffected
        assert list(bot.participants.values()) == ["Alice"]
    finally:
        await asyncio.wait_for(bot.stop(), 15)


@pytest.mark.timeout(90)
async def test_janus_killed_mid_call_sets_failed(
    janus_server: JanusServer, pinned_ice: str, astronaut_video: Path,
    publishers: list[PublisherProcess],
) -> None:
    await start_publisher(publishers, janus_server, "Alice", astronaut_video)
    recorder = Recorder()
    bot = connector(janus_server.url, recorder, reconnect_timeout_s=3.0)
    await asyncio.wait_for(bot.start(), 30)
    try:
        await recorder.wait_until(lambda: len(recorder.tracks) == 1, 30, "Alice's track")
        janus_server.kill()
        started = time.monotonic()
        await recorder.wait_until(lambda: bool(recorder.failed), 20, "the connector to fail")
        assert time.monotonic() - started < 15
        assert bot.failed == recorder.failed[0]
        assert "lost Janus" in bot.failed
        assert recorder.left == [recorder.pid_of("Alice")]
    finally:
        await asyncio.wait_for(bot.stop(), 15)


@pytest.mark.timeout(120)
async def test_janus_restarted_mid_call_rejoins(
    janus_server: JanusServer, pinned_ice: str, astronaut_video: Path,
    publishers: list[PublisherProcess],
) -> None:
    await start_publisher(publishers, janus_server, "Alice", astronaut_video)
    recorder = Recorder()
    bot = connector(janus_server.url, recorder, reconnect_timeout_s=30.0)
    await asyncio.wait_for(bot.start(), 30)
    try:
        await recorder.wait_until(lambda: len(recorder.tracks) == 1, 30, "Alice's track")
        janus_server.kill()
        await recorder.wait_until(lambda: len(recorder.left) == 1, 15, "Alice to leave")
        await asyncio.to_thread(janus_server.start)
        # The bot is back in the room (with its card) well within its reconnect window.
        deadline = time.monotonic() + 15
        while BOT_NAME not in {p["display"] for p in janus_server.list_participants(DEFAULT_ROOM)}:
            assert time.monotonic() < deadline, "the bot did not rejoin within 15 s"
            await asyncio.sleep(0.25)
        # After a restart everyone has a new feed id: Bob joins the new Janus.
        bob = await start_publisher(publishers, janus_server, "Bob", astronaut_video)
        await recorder.wait_until(
            lambda: f"janus-{bob.ready_id}" in recorder.tracks, 30, "Bob's track after the restart"
        )
        assert bot.failed is None
        await first_frame(recorder.tracks[f"janus-{bob.ready_id}"])
        displays = [p["display"] for p in janus_server.list_participants(DEFAULT_ROOM)]
        assert BOT_NAME in displays
    finally:
        await asyncio.wait_for(bot.stop(), 15)


@pytest.mark.timeout(60)
async def test_janus_keepalives_hold_the_session_past_janus_timeout(
    tmp_path: Path, ice_address: str
) -> None:
    # Measured: Janus times a session out even while it is being long-polled; only requests
    # such as keepalives count. With a 2 s session timeout, 6 s without keepalives loses it.
    reason = janus_available()
    if reason:
        pytest.skip(reason)
    with JanusServer(tmp_path, ice_address=ice_address, session_timeout_s=2) as server:
        recorder = Recorder()
        bot = connector(server.url, recorder, publish_placeholder=False, keepalive_interval_s=0.5)
        await bot.start()
        try:
            (before,) = server.list_participants(DEFAULT_ROOM)
            await asyncio.sleep(6)
            (after,) = server.list_participants(DEFAULT_ROOM)
            assert after["id"] == before["id"]  # same session, not a rejoin
            assert bot.failed is None
        finally:
            await bot.stop()


@pytest.mark.timeout(60)
async def test_janus_kicked_bot_or_destroyed_room_fails_at_once(janus_server: JanusServer) -> None:
    kicked, destroyed = Recorder(), Recorder()
    bot = connector(janus_server.url, kicked, publish_placeholder=False)
    other = connector(janus_server.url, destroyed, room=PIN_ROOM, pin=PIN, publish_placeholder=False)
    await bot.start()
    await other.start()
    try:
        (me,) = janus_server.list_participants(DEFAULT_ROOM)
        janus_server.videoroom_request({"request": "kick", "room": DEFAULT_ROOM, "id": me["id"]})
        janus_server.videoroom_request({"request": "destroy", "room": PIN_ROOM})
        await kicked.wait_until(lambda: bool(kicked.failed), 10, "the kicked bot to fail")
        await destroyed.wait_until(lambda: bool(destroyed.failed), 10, "the room's bot to fail")
        assert bot.failed == f"the bot was kicked from Janus room {DEFAULT_ROOM}"
        assert other.failed == f"Janus room {PIN_ROOM} was destroyed"
    finally:
        await bot.stop()
        await other.stop()
