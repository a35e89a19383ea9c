"""The web pages in a real Chromium (Debian's), against a real `confbot serve` on 127.0.0.1.

- The built-in room: consent, camera, WHIP to the bot, the participant's own emotion; the host's
  dashboard shows that participant within a bounded time and recovers from a dropped feed.
  Chromium's fake camera plays a real smiling face (tests/support/y4m.py), so the whole path runs:
  room page -> WHIP -> bot -> model -> feed websocket -> dashboard, and back to the room page.
- A refused camera is explained.
- The photo analyzer: a face photo, a text file, a too large file.
- The post-call report renders its plots; a call without samples says so; bad tokens get clear
  pages. Those calls are written straight into the server's SQLite database
  (tests/web/report_fixtures.py).

Screenshots go to $CONFBOT_SCREENSHOT_DIR (or a pytest temp folder). The tests live in one module
because the browser and the server are session fixtures imported by name here: imported into
several modules, each module would start its own.
"""

# The fixtures are imported by name (pytest finds them so), and the tests take them as arguments.
# ruff: noqa: F811

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.ice import ice_address  # noqa: F401  (fixture)
from tests.support.media import media_cache_dir  # noqa: F401  (fixture)
from tests.support.server import ConfbotServer
from tests.web.browser import (  # noqa: F401  (fixtures)
    FeedTap,
    PageOpener,
    chromium,
    fake_camera_y4m,
    open_page,
    screenshots,
    web_ice_address,
    web_server,
)
from tests.web.report_fixtures import Calls, build_calls

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

# ------------------------------------------------------------------ room and dashboard
SEEN_WITHIN_MS = 60_000  # from clicking "Join" to the dashboard showing the face as happy
DOWN_MS = 3_000  # how long the feed stays cut


def _join(page: Any, name: str) -> None:
    page.fill("#name", name)
    page.check("#agree")
    page.click("#join")


@pytest.mark.timeout(150)
def test_room_to_bot_to_dashboard(open_page: PageOpener, web_server: ConfbotServer, ice_address: str,
                                  web_ice_address: str) -> None:
    assert web_ice_address == ice_address, "the server's ICE address is not the test link's"
    call = web_server.create_call(title="Browser screening", connector={"type": "room"}, consent="opt-in")
    assert call["room_url"].endswith(f"/room/{call['id']}")

    # A participant on a phone-sized screen: consent, camera, WHIP, own emotion.
    room, room_log = open_page(f"/room/{call['id']}", phone=True, camera=True, pin_ice=ice_address)
    assert room.is_visible("#consent") and room.is_hidden("#call")
    room.click("#join")  # without a name or consent: the page says what is missing
    assert "name" in (room.text_content("#form-error") or "")
    open_page.shot(room, "room-consent")
    started = time.monotonic()
    _join(room, "Ana")
    room.wait_for_selector("#call:not([hidden])")
    room.wait_for_function("() => document.querySelector('#preview').videoWidth > 0")
    try:  # the own emotion, or an error the page shows (which ends the wait at once)
        room.wait_for_function(
            """() => document.querySelector('#me').textContent.includes('reads your expression as: happy')
                     || !document.querySelector('#call-error').hidden""", timeout=SEEN_WITHIN_MS)
    except Exception as exc:
        raise AssertionError(f"the room page never showed 'happy' ({room.text_content('#me')!r}); "
                             f"server log:\n{web_server.log()}") from exc
    assert room.is_hidden("#call-error"), \
        f"the room page shows an error: {room.text_content('#call-error')}\nserver log:\n{web_server.log()}"
    own_after_s = time.monotonic() - started
    room.wait_for_selector("#overlay rect")
    assert (room.text_content("#link-state") or "") == "sending to the bot"
    assert (room.text_content("#overlay text.own-label") or "").startswith("happy")
    width = room.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the room page is {width} px wide on a 390 px screen"
    open_page.shot(room, "room-phone-happy", full_page=False)

    # The host, on a desktop screen, sees that participant as happy.
    tap = FeedTap()
    dash, dash_log = open_page(f"/calls/{call['id']}#token={call['host_token']}", feed_tap=tap)
    card = dash.locator("#participants article.card", has_text="Ana")
    remaining_ms = max(5_000, SEEN_WITHIN_MS - int((time.monotonic() - started) * 1000))
    card.locator(".emotion[data-emotion=happy]").wait_for(timeout=remaining_ms)
    assert (dash.text_content("#status") or "").strip() == "live"
    assert (dash.text_content("#feed-state") or "") == "connected"
    assert card.locator("svg.chart").count() == 1
    events = dash.text_content("#events") or ""
    assert re.search(r"Ana\s+joined", events), f"no join event: {events!r}"
    assert not dash.is_visible("#token-form") and call["host_token"] not in dash.url
    open_page.shot(dash, "dashboard-live")

    # The feed is cut for a few seconds: the dashboard says so, reconnects by itself, and asks
    # for what it missed (since_ms), so its charts have no gap.
    tap.cut()
    dash.wait_for_function("() => document.querySelector('#feed-state').textContent.startsWith('lost')",
                           timeout=10_000)
    open_page.shot(dash, "dashboard-feed-lost")
    dash.wait_for_timeout(DOWN_MS)  # not time.sleep(): the tap's callbacks need Playwright's loop
    tap.restore()
    dash.wait_for_function("() => document.querySelector('#feed-state').textContent === 'connected'",
                           timeout=20_000)
    reconnected = len(tap.urls)  # the connection number of the one that got through
    assert reconnected >= 2 and "since_ms=" not in tap.urls[0], tap.urls
    since = re.search(r"[?&]since_ms=(\d+)", tap.urls[-1])
    assert since, f"the dashboard reconnected without since_ms: {tap.urls[-1]}"
    seen_before = tap.sample_times(1)
    assert seen_before and int(since.group(1)) <= max(seen_before), "it skips samples it never had"
    deadline = time.monotonic() + 10
    while not tap.sample_times(reconnected) and time.monotonic() < deadline:
        dash.wait_for_timeout(250)
    assert tap.sample_times(reconnected), "no sample came after reconnecting"
    replayed = min(tap.sample_times(reconnected))
    assert replayed <= max(seen_before) + 1000, \
        f"gap: samples stopped at {max(seen_before)} ms and resumed at {replayed} ms"
    card.locator(".emotion[data-emotion=happy]").wait_for(timeout=10_000)
    open_page.shot(dash, "dashboard-reconnected")

    # The participant leaves; the host sees it.
    room.click("#leave")
    room.wait_for_selector("#left:not([hidden])")
    dash.locator("#participants article.card h3", has_text="Ana (left)").wait_for(timeout=15_000)
    assert re.search(r"Ana\s+left", dash.text_content("#events") or "")
    open_page.shot(dash, "dashboard-left")
    print(f"own emotion shown {own_after_s:.1f} s after joining")
    assert not room_log.unexpected(), room_log.errors
    assert not dash_log.unexpected("WebSocket"), dash_log.errors
    assert web_server.api("DELETE", f"/api/calls/{call['id']}", call["host_token"]).status_code == 200


def test_refused_camera_is_explained(open_page: PageOpener, web_server: ConfbotServer) -> None:
    call = web_server.create_call(title="Refused camera", connector={"type": "room"}, consent="opt-in")
    room, log = open_page(f"/room/{call['id']}", phone=True, camera=False)
    _join(room, "Bo")
    room.wait_for_selector("#camera-error:not([hidden])")
    text = room.text_content("#camera-error-text") or ""
    help_text = room.text_content("#camera-error-help") or ""
    assert "did not allow this page to use the camera" in text, text
    assert "allow the camera for this site" in help_text, help_text
    assert room.is_hidden("#call") and room.is_visible("button[data-action=retry]")
    open_page.shot(room, "room-camera-refused", full_page=False)
    # Nobody reached the bot.
    participants = web_server.api("GET", f"/api/calls/{call['id']}/participants", call["host_token"])
    assert participants.status_code == 200 and participants.json() == []
    assert not log.unexpected(), log.errors
    web_server.api("DELETE", f"/api/calls/{call['id']}", call["host_token"])


# ------------------------------------------------------------------ photo analyzer
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _upload(page: Any, files: Any) -> None:
    page.set_input_files("#file", files)  # the page submits on change


def test_face_photo_gets_a_labelled_box_and_seven_scores(open_page: PageOpener,
                                                         face_photo_path: Path) -> None:
    page, log = open_page("/analyze")
    _upload(page, str(face_photo_path))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.text_content("#summary") == "1 face found."
    page.wait_for_function("() => document.querySelectorAll('#boxes rect').length === 1")
    label = page.text_content("#boxes text")
    assert label == "1: happy", f"the box's label is {label!r}"
    box = page.locator("#boxes rect").bounding_box()
    photo = page.locator("#photo").bounding_box()
    assert box and photo and box["width"] > 40 and box["height"] > 40, f"box {box} is not drawn"
    assert photo["x"] <= box["x"] and box["x"] + box["width"] <= photo["x"] + photo["width"] + 1
    rows = page.locator("#tables table tbody tr")
    assert rows.count() == 7
    assert [rows.nth(i).get_attribute("data-emotion") for i in range(7)] == EMOTIONS
    scores = [float(rows.nth(i).locator("td.num").text_content().rstrip("%")) for i in range(7)]
    assert abs(sum(scores) - 100.0) < 1.0, f"the 7 scores {scores} do not add up to 100%"
    assert max(scores) == scores[EMOTIONS.index("happy")]
    assert page.is_hidden("#error")
    open_page.shot(page, "analyze-face")
    assert not log.unexpected(), log.errors


def test_text_file_is_refused_with_a_clear_message(open_page: PageOpener) -> None:
    page, log = open_page("/analyze")
    # Refused by the page itself from its type...
    _upload(page, {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo\n"})
    page.wait_for_selector("#error:not([hidden])")
    text = page.text_content("#error") or ""
    assert "notes.txt" in text and "not an image" in text, text
    # ...and by the server from its content, when the name and type claim a photo.
    _upload(page, {"name": "holiday.png", "mimeType": "image/png", "buffer": b"just some text\n" * 20})
    page.wait_for_function("() => document.querySelector('#error').textContent.includes('holiday.png')")
    text = page.text_content("#error") or ""
    assert "could not be analyzed. The upload is not an image" in text, text
    assert "Traceback" not in text and page.is_hidden("#result")
    open_page.shot(page, "analyze-not-an-image")
    # The server's 415 shows up as a failed resource load in the console; nothing else may.
    assert not log.unexpected("415"), log.errors


def test_too_large_file_is_refused_with_a_clear_message(open_page: PageOpener, tmp_path: Path) -> None:
    page, log = open_page("/analyze")
    huge = tmp_path / "huge.jpg"  # a file path: Chromium reads it, nothing is copied over the pipe
    with huge.open("wb") as out:
        out.write(b"\xff\xd8\xff\xe0")  # a JPEG header, then 21 MB of nothing
        out.truncate(21 * 1024 * 1024)
    _upload(page, str(huge))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.text_content("#error") or ""
    assert text.startswith("This file is too large."), text
    assert "MB" in text and page.is_hidden("#result")
    open_page.shot(page, "analyze-too-large")
    assert not log.unexpected("413"), log.errors


# ------------------------------------------------------------------ report and tokens
@pytest.fixture(scope="module")
def stored_calls(web_server: ConfbotServer) -> Calls:
    from confbot.store.db import Database

    with Database.from_url(web_server.database_url) as db:
        return build_calls(db)


def _rendered_svgs(page: Any) -> list[dict[str, float]]:
    """Width, height and drawn children of every <svg> on the page."""
    result: list[dict[str, float]] = page.evaluate(
        """() => [...document.querySelectorAll('svg')].map((s) => {
             const r = s.getBoundingClientRect();
             return {width: r.width, height: r.height,
                     shapes: s.querySelectorAll('path, rect, line, polyline, circle, text').length};
           })""")
    return result


def test_report_renders_its_plots(open_page: PageOpener, stored_calls: Calls) -> None:
    page, log = open_page(f"/calls/{stored_calls.screening}/report?token={stored_calls.screening_token}")
    assert "Screening & <test>" in page.title() or "Screening & <test>" in (page.text_content("h1") or "")
    svgs = _rendered_svgs(page)
    # the audience curve, and an emotion distribution and a valence curve per participant
    assert len(svgs) >= 1 + 3, f"only {len(svgs)} plots: {svgs}"
    for svg in svgs:
        assert svg["width"] > 100 and svg["height"] > 50 and svg["shapes"] > 3, f"an empty plot: {svg}"
    body = page.text_content("body") or ""
    assert "surprise peaked" in body and "7 of 9 faces" in body, "the peak at 00:00:42 is not marked"
    assert "Bo <b>" in body, "a participant's name is missing (or was parsed as HTML)"
    for name in ("csv", "json"):
        href = page.get_attribute(f"a[href*='report.{name}']", "href")
        assert href, f"no {name} export link"
        response = page.request.get(href)
        assert response.status == 200, f"{name} export: {response.status}"
    open_page.shot(page, "report-screening")
    assert not log.unexpected(), log.errors


def test_report_of_a_call_without_samples_says_so(open_page: PageOpener, stored_calls: Calls) -> None:
    page, log = open_page(f"/calls/{stored_calls.nobody}/report?token={stored_calls.nobody_token}")
    body = page.text_content("body") or ""
    assert "This call has no samples." in body
    assert "Nobody joined the call." in body
    open_page.shot(page, "report-no-samples")
    assert not log.unexpected(), log.errors


@pytest.mark.parametrize(("case", "status", "headline"), [
    ("wrong", 403, "This token does not open this call"),
    ("missing", 401, "A host token is needed"),
    ("unknown-call", 404, "No such call"),
])
def test_report_with_a_bad_token_gets_a_clear_page(open_page: PageOpener, stored_calls: Calls,
                                                    case: str, status: int, headline: str) -> None:
    call = "no-such-call" if case == "unknown-call" else stored_calls.screening
    query = "" if case == "missing" else "?token=not-the-token"
    context_page, log = open_page("/analyze")  # a page of the server to start from
    response = context_page.goto(f"/calls/{call}/report{query}")
    assert response is not None and response.status == status
    assert (context_page.text_content("h1") or "").strip() == headline
    body = context_page.text_content("body") or ""
    assert "Traceback" not in body and "Internal Server Error" not in body
    assert context_page.locator("svg").count() == 0
    open_page.shot(context_page, f"report-token-{case}")
    assert not log.unexpected(str(status)), log.errors


def test_dashboard_with_a_wrong_token_asks_for_the_right_one(open_page: PageOpener,
                                                              stored_calls: Calls) -> None:
    page, log = open_page(f"/calls/{stored_calls.screening}#token=not-the-token")
    page.wait_for_selector("#token-form:not([hidden])")
    alert = page.text_content("#alert") or ""
    assert "not valid for this call" in alert, alert
    assert page.is_hidden("#live") and page.is_hidden("#call-state")
    assert "not-the-token" not in page.url, "the token stays in the address bar"
    open_page.shot(page, "dashboard-wrong-token")
    # The right token, typed into the form, opens the dashboard.
    page.fill("#token", stored_calls.screening_token)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#live:not([hidden])")
    # The feed replays the call's history (connecting, live, the samples, ended), then closes.
    page.wait_for_function("() => document.querySelector('#feed-state').textContent === 'closed'")
    # the whole 2-minute call is drawn (rendering trails the messages by a fraction of a second)
    page.wait_for_function("() => document.querySelector('#elapsed').textContent === '2:00'")
    assert (page.text_content("#status") or "").strip() == "ended"
    assert "The call has ended" in (page.text_content("#alert") or "")
    assert page.locator("#participants article.card").count() == 3
    open_page.shot(page, "dashboard-ended-call")
    assert not log.unexpected("403"), log.errors
