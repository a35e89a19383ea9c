"""The post-call report on a call whose content is known, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from statistics import mean

import pytest

from confbot.config import REPO_ROOT
from confbot.pipeline.sample import EmotionSample
from confbot.store.calls import set_call_status
from confbot.store.db import Database
from confbot.store.errors import CallNotFoundError
from confbot.store.reports import (
    CURVE_COLUMNS,
    REPORT_QUERIES,
    SUMMARY_COLUMNS,
    report_csv,
    report_json,
)
from confbot.store.samples import insert_samples
from face_core.emotions import CIRCUMPLEX

from .builders import T0, make_live_call, make_sample

# (participant, face, t_ms, top emotion). Per second, each face counts once, with the emotion
# it showed most (a tie goes to its latest sample):
#   second 0: ann happy, bob#0 neutral (tie sad/neutral, neutral later), bob#1 happy
#   second 1: ann surprise (tie, later), bob#0 sad, bob#1 happy
#   second 2: ann happy, bob#0 sad
SCRIPT = [
    ("ann", 0, 0, "happy"), ("ann", 0, 500, "happy"), ("ann", 0, 1000, "happy"),
    ("ann", 0, 1500, "surprise"), ("ann", 0, 2000, "happy"), ("ann", 0, 2500, "happy"),
    ("bob", 0, 0, "sad"), ("bob", 0, 500, "neutral"), ("bob", 0, 1000, "sad"),
    ("bob", 0, 1500, "sad"), ("bob", 0, 2000, "sad"),
    ("bob", 1, 0, "happy"), ("bob", 1, 500, "happy"), ("bob", 1, 1000, "happy"), ("bob", 1, 1500, "happy"),
]


def scripted_samples(call_id: str) -> list[EmotionSample]:
    return [make_sample(call_id, pid, t, face_index=face, top=top, valence=CIRCUMPLEX[top][0],
                        arousal=CIRCUMPLEX[top][1], attention=0.5 if pid == "bob" else 1.0)
            for pid, face, t, top in SCRIPT]


@pytest.fixture
def scripted_call(db: Database) -> str:
    call = make_live_call(db, ["ann", "bob", "carol"])
    insert_samples(db, scripted_samples(call.id))
    set_call_status(db, call.id, "ended", at=T0 + timedelta(seconds=3))
    return call.id


def test_audience_curve_per_second(db: Database, scripted_call: str) -> None:
    report = report_json(db, scripted_call)
    counts = [(p["second"], p["faces"], {e: n for e, n in p["top"].items() if n}) for p in report["curve"]]
    assert counts == [
        (0, 3, {"happy": 2, "neutral": 1}),
        (1, 3, {"surprise": 1, "sad": 1, "happy": 1}),
        (2, 2, {"happy": 1, "sad": 1}),
    ]
    for point in report["curve"]:
        in_second = [s for s in SCRIPT if s[2] // 1000 == point["second"]]
        assert point["samples"] == len(in_second)
        assert point["valence"] == pytest.approx(mean(CIRCUMPLEX[s[3]][0] for s in in_second), abs=1e-4)
        assert point["arousal"] == pytest.approx(mean(CIRCUMPLEX[s[3]][1] for s in in_second), abs=1e-4)


def test_peak_moments_say_k_of_n_faces(db: Database, scripted_call: str) -> None:
    peaks = {p["emotion"]: (p["second"], p["text"]) for p in report_json(db, scripted_call)["peaks"]}
    assert peaks == {
        "happy": (0, "2 of 3 faces"),
        "sad": (2, "1 of 2 faces"),  # as many faces as in second 1, but a larger share
        "surprise": (1, "1 of 3 faces"),
        "neutral": (0, "1 of 3 faces"),
    }


def test_participant_summary(db: Database, scripted_call: str) -> None:
    people = {p["participant_id"]: p for p in report_json(db, scripted_call)["participants"]}
    assert list(people) == ["ann", "bob", "carol"]  # in order of joining
    ann, bob, carol = people["ann"], people["bob"], people["carol"]
    assert (ann["samples"], ann["faces"], ann["first_t_ms"], ann["last_t_ms"]) == (6, 1, 0, 2500)
    assert (bob["samples"], bob["faces"], bob["first_t_ms"], bob["last_t_ms"]) == (9, 2, 0, 2000)
    assert ann["top_share"]["happy"] == pytest.approx(5 / 6, abs=1e-4)
    assert ann["top_share"]["surprise"] == pytest.approx(1 / 6, abs=1e-4)
    assert bob["top_share"] == pytest.approx(
        {"angry": 0, "disgust": 0, "fear": 0, "happy": 4 / 9, "sad": 4 / 9, "surprise": 0, "neutral": 1 / 9},
        abs=1e-4)
    assert ann["mean"]["happy"] == pytest.approx((5 * 0.7 + 0.05) / 6, abs=1e-4)
    assert sum(ann["mean"].values()) == pytest.approx(1.0, abs=1e-3)
    assert (ann["attention"], bob["attention"]) == (1.0, 0.5)
    assert ann["valence"] == pytest.approx((5 * 0.8 + 0.2) / 6, abs=1e-4)
    assert carol["samples"] == 0 and carol["mean"]["happy"] is None and carol["valence"] is None
    assert all(isinstance(v, float) for v in bob["top_share"].values())  # not Decimal on PostgreSQL


def test_call_facts(db: Database, scripted_call: str) -> None:
    report = report_json(db, scripted_call)
    assert report["empty"] is False
    assert report["call"]["id"] == scripted_call and report["call"]["status"] == "ended"
    facts = report["facts"]
    assert facts == {"participants": 3, "samples": 15, "faces": 3, "first_t_ms": 0, "last_t_ms": 2500,
                     "duration_s": 3.0}


def test_the_report_says_what_scored_the_call(db: Database) -> None:
    from confbot.store.events import ANALYSIS, add_event

    call = make_live_call(db, ["ann"])
    assert report_json(db, call.id)["call"]["analysis"] is None  # a call from before the record
    first = {"model": "emotion_cnn.tflite", "model_sha256": "ab" * 32, "tta": "flip",
             "tta_margin": 0.5, "detector": "blazeface"}
    add_event(db, call.id, ANALYSIS, data=first)
    add_event(db, call.id, "status", data={"status": "live"})
    assert report_json(db, call.id)["call"]["analysis"] == first
    latest = {**first, "model": "emotion_cnn_lite.tflite"}
    add_event(db, call.id, ANALYSIS, data=latest)
    assert report_json(db, call.id)["call"]["analysis"] == latest
    other = make_live_call(db, ["bob"])
    assert report_json(db, other.id)["call"]["analysis"] is None


def test_a_call_without_samples_gives_an_empty_report(db: Database) -> None:
    call = make_live_call(db, ["ann"])
    report = report_json(db, call.id)
    assert report["empty"] is True
    assert report["curve"] == [] and report["peaks"] == []
    assert report["facts"]["samples"] == 0 and report["facts"]["faces"] == 0
    assert report["participants"][0]["samples"] == 0
    text = report_csv(db, call.id)
    assert text.splitlines()[:2] == ["# audience_curve", ",".join(CURVE_COLUMNS)]


def test_report_csv_has_both_tables(db: Database, scripted_call: str) -> None:
    text = report_csv(db, scripted_call)
    curve_part, people_part = text.split("\n\n")
    curve_lines = curve_part.splitlines()
    assert curve_lines[0] == "# audience_curve"
    curve = list(csv.DictReader(io.StringIO("\n".join(curve_lines[1:]))))
    assert [(r["second"], r["faces"], r["happy"]) for r in curve] == [("0", "3", "2"), ("1", "3", "1"),
                                                                      ("2", "2", "1")]
    people_lines = people_part.splitlines()
    assert people_lines[0] == "# participants"
    people = list(csv.DictReader(io.StringIO("\n".join(people_lines[1:]))))
    assert list(people[0]) == list(SUMMARY_COLUMNS)
    assert [(r["participant_id"], r["samples"]) for r in people] == [
        ("ann", "6"), ("bob", "9"), ("carol", "0")]
    assert people[2]["mean_happy"] == ""


def test_unknown_call(db: Database) -> None:
    with pytest.raises(CallNotFoundError):
        report_json(db, "nope")
    with pytest.raises(CallNotFoundError):
        report_csv(db, "nope")


def test_docs_show_the_queries_the_code_runs() -> None:
    docs = (REPO_ROOT / "docs" / "reports.md").read_text()
    for name, sql in REPORT_QUERIES.items():
        assert sql.strip() in docs, f"docs/reports.md does not show the {name} query as the code has it"
