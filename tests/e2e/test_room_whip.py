"""The built-in room end to end: WHIP publisher processes -> `confbot serve` -> feed and SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.publisher import PublisherProcess
from tests.support.server import ConfbotServer, FeedRecorder, auto_model_file, top_emotions

pytestmark = pytest.mark.slow
LOOPBACK = "127.0.0.1"


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConfbotServer]:
    """`confbot serve` on a new SQLite file, or on a new PostgreSQL database (skipped, saying
    why, when no PostgreSQL answers)."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("postgresql_url"))
    server = ConfbotServer(tmp_path, ice_address=LOOPBACK, database_url=url)
    server.start()
    yield server
    server.stop()


def stored(server: ConfbotServer, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on the server's database, whichever it is."""
    from sqlalchemy import create_engine, text

    engine = create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def joined(messages: list[dict[str, Any]]) -> dict[str, str]:
    """display name -> participant id, from the feed's `participant` messages."""
    return {m["display_name"]: m["participant_id"] for m in messages
            if m.get("type") == "participant" and m.get("event") == "joined"}


def test_two_publishers_get_their_emotions_on_the_feed_and_in_sql(
        server: ConfbotServer, fer2013_video: Callable[[str], Any]) -> None:
    videos = {"Ann": fer2013_video("happy"), "Bob": fer2013_video("surprise")}
    call = server.create_call(title="screening", connector={"type": "room"})
    assert call["room_url"].endswith(f"/room/{call['id']}")
    feed = FeedRecorder(call["feed_url"], call["host_token"])
    publishers = {
        name: PublisherProcess.whip(f"{server.url}/whip/{call['id']}?name={name}", video.path,
                                    ice_address=LOOPBACK)
        for name, video in videos.items()
    }
    try:
        def enough(messages: list[dict[str, Any]]) -> bool:
            ids = joined(messages)
            return len(ids) == 2 and all(
                sum(top_emotions(messages, pid).values()) >= 4 for pid in ids.values())

        messages = feed.wait_for(enough, timeout_s=90)
        ids = joined(messages)
        for name, video in videos.items():
            counts = top_emotions(messages, ids[name])
            assert max(counts, key=counts.__getitem__) == video.emotion, (name, counts)
        audience = feed.wait_for(lambda ms: any(m.get("type") == "audience" and m["participants"] == 2
                                                for m in ms), timeout_s=10)
        both = [m for m in audience if m.get("type") == "audience" and m["participants"] == 2][-1]
        assert both["faces"] >= 2 and abs(sum(both["shares"].values()) - 1) < 0.01
        assert both["shares"]["happy"] > 0

        publishers["Bob"].terminate()
        feed.wait_for(lambda ms: any(m.get("type") == "participant" and m.get("event") == "left"
                                     and m["participant_id"] == ids["Bob"] for m in ms), timeout_s=30)
        ended = server.api("DELETE", f"/api/calls/{call['id']}", call["host_token"])
        assert ended.status_code == 200 and ended.json()["status"] == "ended"
        # The report says what scored the faces: the model "auto" took on this CPU.
        report = server.api("GET", f"/api/calls/{call['id']}/report", call["host_token"]).json()
        analysis = report["call"]["analysis"]
        assert analysis["model"] == auto_model_file() and len(analysis["model_sha256"]) == 64
        assert (analysis["tta"], analysis["tta_margin"]) == ("flip", 0.5)
        assert analysis["standardize"] == [131.0, 77.5]  # both shipped models' manifests
        assert analysis["detector"] == httpx.get(f"{server.url}/healthz", timeout=15).json()["detector"]
        feed.wait_for(lambda ms: any(m.get("type") == "call" and m.get("status") == "ended" for m in ms),
                      timeout_s=20)
    finally:
        for publisher in publishers.values():
            publisher.terminate()
        feed.close()
    server.stop()
    rows = dict(stored(server, "SELECT participant_id, COUNT(*) FROM emotion_samples WHERE call_id = :c "
                               "GROUP BY participant_id", c=call["id"]))
    kinds = [k for (k,) in stored(server, "SELECT kind FROM call_events WHERE call_id = :c", c=call["id"])]
    assert rows.get(ids["Ann"], 0) > 0 and rows.get(ids["Bob"], 0) > 0, rows
    assert kinds.count("participant_joined") == 2 and kinds.count("participant_left") == 2, kinds
    # Every sample the feed showed was stored (the writer flushes on shutdown).
    fed = sum(1 for m in messages if m.get("type") == "sample")
    assert sum(rows.values()) >= fed


def test_bad_offers_and_tokens_get_clear_errors_and_the_server_stays_up(server: ConfbotServer) -> None:
    call = server.create_call(title="errors", connector={"type": "room"})
    whip = f"{server.url}/whip/{call['id']}"
    sdp = {"Content-Type": "application/sdp"}
    malformed = httpx.post(whip, content=b"v=0\r\nthis is not sdp", headers=sdp, timeout=15)
    assert malformed.status_code == 400 and "SDP" in malformed.text
    audio_only = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
                  "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n")
    no_video = httpx.post(whip, content=audio_only.encode(), headers=sdp, timeout=15)
    assert no_video.status_code == 400 and "video" in no_video.text
    assert httpx.post(whip, content=b"{}", headers={"Content-Type": "application/json"},
                      timeout=15).status_code == 415
    assert httpx.post(f"{server.url}/whip/nosuchcall", content=b"v=0", headers=sdp,
                      timeout=15).status_code == 404

    assert server.api("GET", f"/api/calls/{call['id']}", "wrong-token").status_code == 403
    assert httpx.get(f"{server.url}/api/calls/{call['id']}", timeout=15).status_code == 401
    refused = FeedRecorder(call["feed_url"], "wrong-token")
    refused.join(timeout_s=10)
    assert refused.close_code is not None and refused.close_code >= 4000, (refused.close_code, refused.error)
    assert refused.close_reason and refused.messages == []

    health = httpx.get(f"{server.url}/healthz", timeout=15)
    assert health.status_code == 200
    from confbot.vision import default_blazeface_model

    # The server's "auto": BlazeFace when its file is installed (make setup does), else Haar.
    assert health.json()["detector"] == ("blazeface" if default_blazeface_model() else "haar")
    assert health.json()["model"] == auto_model_file()
    shown = server.api("GET", f"/api/calls/{call['id']}", call["host_token"]).json()
    assert shown["status"] == "live"


def test_opt_in_call_analyzes_only_after_consent_and_survives_silent_and_corrupt_publishers(
        server: ConfbotServer, fer2013_video: Callable[[str], Any], tmp_path: Path) -> None:
    happy = fer2013_video("happy")
    corrupt = corrupted_copy(happy.path, tmp_path / "corrupt.ivf")
    call = server.create_call(title="opt-in panel", connector={"type": "room"}, consent="opt-in")
    feed = FeedRecorder(call["feed_url"], call["host_token"])
    whip = f"{server.url}/whip/{call['id']}"
    publishers = [
        PublisherProcess.whip(f"{whip}?name=Ann&consent=no", happy.path, ice_address=LOOPBACK),
        PublisherProcess.whip(f"{whip}?name=Bob&consent=yes", corrupt, ice_address=LOOPBACK),
        PublisherProcess.whip(f"{whip}?name=Cy&consent=yes", happy.path, ice_address=LOOPBACK, silent=True),
    ]
    try:
        messages = feed.wait_for(lambda ms: len(joined(ms)) == 3 and sum(
            top_emotions(ms, joined(ms)["Bob"]).values()) >= 3, timeout_s=90)
        ids = joined(messages)
        # Ann has not consented: none of her frames were classified.
        assert top_emotions(messages, ids["Ann"]) == {}
        listed = {p["display_name"]: p for p in server.api(
            "GET", f"/api/calls/{call['id']}/participants", call["host_token"]).json()}
        assert not listed["Ann"]["analyzed"] and listed["Bob"]["analyzed"] and listed["Cy"]["analyzed"]
        # Bob's video has a damaged packet every second: the decoder drops what it cannot use,
        # the rest is analyzed.
        assert max(top_emotions(messages, ids["Bob"]).items(), key=lambda kv: kv[1])[0] == "happy"

        given = server.api("POST", f"/api/calls/{call['id']}/participants/{ids['Ann']}/consent",
                           call["host_token"], json={"given": True})
        assert given.status_code == 200 and given.json()["analyzed"], given.text
        feed.wait_for(lambda ms: sum(top_emotions(ms, ids["Ann"]).values()) >= 2, timeout_s=30)
        assert any(m.get("type") == "participant" and m.get("event") == "consent_given"
                   and m["participant_id"] == ids["Ann"] for m in feed.snapshot())
        # Cy never sent a frame: listed, no samples, and the server is fine.
        assert top_emotions(feed.snapshot(), ids["Cy"]) == {}
        assert httpx.get(f"{server.url}/healthz", timeout=15).status_code == 200
        unknown = server.api("POST", f"/api/calls/{call['id']}/participants/nobody/consent",
                             call["host_token"], json={"given": True})
        assert unknown.status_code == 404
    finally:
        for publisher in publishers:
            publisher.terminate()
        feed.close()


def corrupted_copy(source: Path, target: Path) -> Path:
    """A copy of a VP8 IVF file in which the last inter frame before each keyframe has its bytes
    scrambled: one damaged packet a second that the decoder must survive. Only frames that the
    next keyframe replaces are damaged, so the rest of each second decodes cleanly whatever
    moments the pipeline samples (damage early in a second would spoil the frames after it, and
    at 2 samples a second the sampled moments can keep landing on those)."""
    import av
    import numpy as np

    rng = np.random.default_rng(7)
    with av.open(str(source)) as src, av.open(str(target), "w", format="ivf") as dst:
        stream_in = src.streams.video[0]
        stream_out = dst.add_stream_from_template(stream_in)
        packets = [(bytes(p), p.pts, p.dts, p.time_base, p.is_keyframe)
                   for p in src.demux(stream_in) if p.size]
        damaged = 0
        for i, (data, pts, dts, time_base, keyframe) in enumerate(packets):
            if not keyframe and i + 1 < len(packets) and packets[i + 1][4]:
                start = min(10, len(data) - 1)
                data = data[:start] + rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
                damaged += 1
            out = av.Packet(data)
            out.pts, out.dts, out.time_base = pts, dts, time_base
            out.is_keyframe = keyframe
            out.stream = stream_out
            dst.mux(out)
    assert damaged >= 2, f"{source}: expected several keyframes to damage the frame before"
    return target
