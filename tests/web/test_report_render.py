"""The post-call report: facts, peaks, SVG plots, escaping, a call with no samples, the CLI."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from confbot.config import load_settings
from confbot.errors import InputError
from confbot.report_render import (
    participant_valence,
    render_report_html,
    report_command,
    report_view,
    select_peaks,
)
from confbot.store.db import Database
from confbot.store.reports import report_json
from confbot.web.plots import clock
from tests.web.report_fixtures import SECONDS, Calls

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _page(db: Database, call_id: str, **links: str) -> str:
    return render_report_html(report_json(db, call_id), participant_valence(db, call_id), now=NOW, **links)


def test_clock_formats_hours_minutes_seconds() -> None:
    assert clock(0) == "00:00:00"
    assert clock(760) == "00:12:40"
    assert clock(3 * 3600 + 61.4) == "03:01:01"


def test_peaks_leave_out_neutral_and_emotions_few_faces_showed() -> None:
    rows = [
        {"emotion": "happy", "second": 80, "faces_showing": 2, "faces": 9},  # 22%: noise
        {"emotion": "surprise", "second": 760, "faces_showing": 7, "faces": 9},
        {"emotion": "neutral", "second": 0, "faces_showing": 9, "faces": 9},
        {"emotion": "sad", "second": 5, "faces_showing": 3, "faces": 9},
    ]
    assert [p.sentence() for p in select_peaks(rows)] == [
        "00:00:05 sad peaked: 3 of 9 faces", "00:12:40 surprise peaked: 7 of 9 faces"]


def test_report_view_reads_the_store_report(report_db: Database, report_calls: Calls) -> None:
    view = report_view(report_json(report_db, report_calls.screening),
                       participant_valence(report_db, report_calls.screening))
    assert view.facts.duration == "00:02:00"
    assert (view.facts.participants, view.facts.faces, view.facts.samples) == (3, 9, 9 * 2 * SECONDS)
    assert len(view.audience) == SECONDS
    assert [p.sentence() for p in view.peaks] == [
        "00:00:42 surprise peaked: 7 of 9 faces", "00:01:20 happy peaked: 6 of 9 faces"]
    assert view.participants[0].display_name == "Ana"
    assert len(view.participants[0].valence) == SECONDS


def test_the_report_page_names_what_scored_the_faces(report_db: Database,
                                                     report_calls: Calls) -> None:
    report = report_json(report_db, report_calls.screening)
    assert "Scored by" not in render_report_html(report, now=NOW)  # nothing recorded: no line
    report["call"]["analysis"] = {"model": "emotion_cnn_lite.tflite", "model_sha256": "ab" * 32,
                                  "tta": "flip", "tta_margin": 0.5, "detector": "blazeface"}
    assert ("<dt>Scored by</dt><dd>emotion_cnn_lite.tflite (flip, margin 0.5), detector "
            "blazeface</dd>") in render_report_html(report, now=NOW)
    report["call"]["analysis"] = {"model": "m.tflite", "tta": "none", "detector": "haar"}
    assert "<dd>m.tflite, detector haar</dd>" in render_report_html(report, now=NOW)
    report["call"]["analysis"] = {"model": "<b>x</b>"}  # escaped like every stored string
    assert "<dd>&lt;b&gt;x&lt;/b&gt;</dd>" in render_report_html(report, now=NOW)


def test_report_page_has_facts_peaks_and_parseable_svg_plots(report_db: Database,
                                                             report_calls: Calls) -> None:
    page = _page(report_db, report_calls.screening, csv_href="/r.csv", json_href="/r.json")
    assert "00:00:42 surprise peaked: 7 of 9 faces" in page
    assert "00:01:20 happy peaked: 6 of 9 faces" in page
    assert "<dt>Duration</dt><dd>00:02:00</dd>" in page
    assert 'href="/r.csv"' in page and 'href="/r.json"' in page
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == 1 + 3  # the audience curve and one figure per participant
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.get("viewBox") and root.get("width") is None  # scales with the page
        assert root.get("role") == "img" and root.get("aria-label")
    assert "surprise" in svgs[0] and "mean valence" in svgs[0]


def test_report_page_escapes_names_and_titles(report_db: Database, report_calls: Calls) -> None:
    page = _page(report_db, report_calls.screening)
    assert "Screening &amp; &lt;test&gt;" in page
    assert "Bo &lt;b&gt;" in page
    assert "Bo <b>" not in page and "& <test>" not in page


def test_report_page_without_links_names_the_cli_exports(report_db: Database, report_calls: Calls) -> None:
    assert f"confbot report {report_calls.screening} --format csv" in _page(report_db, report_calls.screening)


def test_report_for_a_call_with_no_samples_says_so(report_db: Database, report_calls: Calls) -> None:
    page = _page(report_db, report_calls.nobody)
    assert "This call has no samples." in page
    assert "Nobody joined the call." in page
    assert "<svg" not in page
    assert "<dt>Duration</dt><dd>00:00:30</dd>" in page


def test_same_report_renders_to_the_same_bytes(report_db: Database, report_calls: Calls) -> None:
    assert _page(report_db, report_calls.screening) == _page(report_db, report_calls.screening)


def test_long_calls_are_binned_into_small_svg(report_db: Database, report_calls: Calls) -> None:
    report = report_json(report_db, report_calls.screening)
    base = report["curve"][0]
    report["curve"] = [{**base, "second": s} for s in range(4 * 3600)]
    report["facts"]["duration_s"] = 4 * 3600
    page = render_report_html(report, now=NOW)
    assert len(page) < 1_000_000
    assert "04:00:00" in page


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def settings_file(tmp_path: Path, report_db_url: str, report_calls: Calls) -> Path:
    path = tmp_path / "confbot.toml"
    path.write_text(f'[database]\nurl = "{report_db_url}"\n')
    return path


@pytest.mark.parametrize("fmt", ["html", "csv", "json"])
def test_report_command_writes_each_format(settings_file: Path, report_calls: Calls, tmp_path: Path,
                                           fmt: str) -> None:
    out = tmp_path / f"report.{fmt}"
    report_command(load_settings(settings_file), report_calls.screening, fmt, out)
    text = out.read_text()
    if fmt == "html":
        assert "00:00:42 surprise peaked: 7 of 9 faces" in text and text.count("<svg") == 4
    elif fmt == "json":
        assert json.loads(text)["facts"]["faces"] == 9
    else:
        section = text.split("# audience_curve\n")[1].split("\n\n")[0]
        rows = list(csv.DictReader(io.StringIO(section)))
        assert len(rows) == SECONDS and rows[42]["surprise"] == "7"


def test_report_command_names_an_unknown_call_and_format(settings_file: Path) -> None:
    settings = load_settings(settings_file)
    with pytest.raises(InputError, match="no call with id 'nope'"):
        report_command(settings, "nope", "html", None)
    with pytest.raises(InputError, match="--format must be one of html, csv, json"):
        report_command(settings, "nope", "pdf", None)
