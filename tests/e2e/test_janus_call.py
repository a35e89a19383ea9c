"""A Janus VideoRoom end to end: two publisher processes in a real Janus, the bot invited
through the API of a real `confbot serve`, the feed and the SQL rows checked."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.janus import DEFAULT_ROOM
from tests.support.publisher import PublisherProcess
from tests.support.server import ConfbotServer, FeedRecorder, top_emotions

pytestmark = pytest.mark.slow


def joined(messages: list[dict[str, Any]]) -> dict[str, str]:
    return {m["display_name"]: m["participant_id"] for m in messages
            if m.get("type") == "participant" and m.get("event") == "joined"}


def test_bot_invited_to_janus_feeds_both_publishers_and_sees_one_leave(
        tmp_path: Path, janus_server: Any, ice_address: str,
        fer2013_video: Callable[[str], Any]) -> None:
    videos = {"Ann": fer2013_video("happy"), "Bob": fer2013_video("surprise")}
    publishers = {name: PublisherProcess.janus(janus_server.url, DEFAULT_ROOM, name, video.path,
                                               ice_address=ice_address)
                  for name, video in videos.items()}
    server = ConfbotServer(tmp_path, ice_address=ice_address)
    server.start()
    feed = None
    try:
        call = server.create_call(title="panel", connector={
            "type": "janus", "url": janus_server.url, "room": DEFAULT_ROOM})
        feed = FeedRecorder(call["feed_url"], call["host_token"])

        def enough(messages: list[dict[str, Any]]) -> bool:
            ids = joined(messages)
            return {"Ann", "Bob"} <= set(ids) and all(
                sum(top_emotions(messages, ids[n]).values()) >= 4 for n in ("Ann", "Bob"))

        messages = feed.wait_for(enough, timeout_s=120)
        assert any(m.get("type") == "call" and m.get("status") == "live" for m in messages)
        ids = joined(messages)
        for name, video in videos.items():
            counts = top_emotions(messages, ids[name])
            assert max(counts, key=counts.__getitem__) == video.emotion, (name, counts)

        publishers["Bob"].terminate()
        feed.wait_for(lambda ms: any(m.get("type") == "participant" and m.get("event") == "left"
                                     and m["participant_id"] == ids["Bob"] for m in ms), timeout_s=40)
        listed = server.api("GET", f"/api/calls/{call['id']}/participants", call["host_token"]).json()
        by_name = {p["display_name"]: p for p in listed}
        assert by_name["Bob"]["left_at"] is not None and by_name["Ann"]["left_at"] is None
        assert server.api("DELETE", f"/api/calls/{call['id']}", call["host_token"]).status_code == 200
    finally:
        for publisher in publishers.values():
            publisher.terminate()
        if feed is not None:
            feed.close()
        server.stop()
    with sqlite3.connect(server.db_path) as db:
        rows = dict(db.execute("SELECT participant_id, COUNT(*) FROM emotion_samples WHERE call_id = ? "
                               "GROUP BY participant_id", (call["id"],)).fetchall())
    assert rows.get(ids["Ann"], 0) > 0 and rows.get(ids["Bob"], 0) > 0, rows


def test_unreachable_janus_fails_the_call_with_the_reason(tmp_path: Path) -> None:
    server = ConfbotServer(tmp_path, ice_address="127.0.0.1")
    server.start()
    try:
        dead = f"http://127.0.0.1:{_closed_port()}/janus"
        call = server.create_call(title="nowhere", connector={"type": "janus", "url": dead, "room": 1234})
        feed = FeedRecorder(call["feed_url"], call["host_token"])
        feed.wait_for(lambda ms: any(m.get("type") == "call" and m.get("status") == "failed" for m in ms),
                      timeout_s=60)
        feed.close()
        shown = server.api("GET", f"/api/calls/{call['id']}", call["host_token"]).json()
        assert shown["status"] == "failed" and "Janus" in shown["failure_reason"], shown
        assert httpx.get(f"{server.url}/healthz", timeout=15).status_code == 200
    finally:
        server.stop()


def _closed_port() -> int:
    from tests.support.server import free_port

    return free_port()  # nothing listens there once the probe socket is closed


def test_confbot_join_runs_the_bot_in_a_room_without_the_api(
        tmp_path: Path, janus_server: Any, ice_address: str,
        fer2013_video: Callable[[str], Any]) -> None:
    import json
    import subprocess
    import sys

    video = fer2013_video("happy")
    config = tmp_path / "join.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "join.db"}"\n'
                      f'[rtc]\nice_host_addresses = ["{ice_address}"]\n')
    with PublisherProcess.janus(janus_server.url, DEFAULT_ROOM, "Ann", video.path,
                                ice_address=ice_address):
        done = subprocess.run(
            [sys.executable, "-m", "confbot", "join", "janus", janus_server.url, "--room", str(DEFAULT_ROOM),
             "--seconds", "20", "--config", str(config)],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    samples = [m for m in messages if m["type"] == "sample"]
    assert samples, done.stderr[-3000:]
    assert max({m["top_emotion"] for m in samples},
               key=lambda e: sum(m["top_emotion"] == e for m in samples)) == "happy"
    assert messages[-1] == {**messages[-1], "type": "call", "status": "ended"}
