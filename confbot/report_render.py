"""The post-call report as a page, and `confbot report CALL_ID --format html|csv|json --out FILE`.

`render_report_html(report, valence)` turns the store's report (`confbot.store.reports.report_json`,
format in docs/reports.md) and each participant's valence per second (`participant_valence`) into
one self-contained HTML page: the call's facts, the audience curve with its peak moments marked,
and each participant's emotion distribution and valence over time, as inline SVG.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confbot.errors import InputError
from confbot.web.plots import Marker, audience_svg, clock, participant_svg
from confbot.web.templating import inline_css, render
from face_core.emotions import EMOTIONS

FORMATS = ("html", "csv", "json")
# A peak needs at least this share of the faces in view showing the emotion at once.
PEAK_MIN_SHARE = 0.3


@dataclass(frozen=True, kw_only=True)
class AudienceSecond:
    """The audience during one second of the call."""

    t_s: int
    faces: int
    mean_valence: float
    counts: Mapping[str, int]  # faces whose strongest expression is each emotion

    def share(self, emotion: str) -> float:
        return self.counts.get(emotion, 0) / self.faces if self.faces else 0.0


@dataclass(frozen=True, kw_only=True)
class ParticipantReport:
    participant_id: str
    display_name: str
    samples: int
    faces: int
    mean_valence: float | None
    distribution: Mapping[str, float]  # share of samples per top emotion
    valence_t_s: tuple[float, ...] = ()
    valence: tuple[float, ...] = ()

    @property
    def top_emotion(self) -> str | None:
        if not self.samples or not self.distribution:
            return None
        return max(self.distribution, key=lambda e: self.distribution[e])


@dataclass(frozen=True, kw_only=True)
class CallFacts:
    call_id: str
    title: str
    status: str
    started: str | None
    ended: str | None
    duration_s: float
    participants: int
    faces: int
    samples: int
    failure_reason: str | None = None
    scored_by: str | None = None  # the model and detector, from the call's "analysis" event

    @property
    def duration(self) -> str:
        return clock(self.duration_s)


@dataclass(frozen=True, kw_only=True)
class Peak:
    """A moment when many faces showed one emotion at once."""

    t_s: int
    emotion: str
    faces_with: int
    faces_total: int

    def sentence(self) -> str:
        return (f"{clock(self.t_s)} {self.emotion} peaked: "
                f"{self.faces_with} of {self.faces_total} face{'' if self.faces_total == 1 else 's'}")


@dataclass(frozen=True, kw_only=True)
class ReportView:
    facts: CallFacts
    audience: tuple[AudienceSecond, ...]
    participants: tuple[ParticipantReport, ...]
    peaks: tuple[Peak, ...] = ()

    @property
    def has_samples(self) -> bool:
        return self.facts.samples > 0


def select_peaks(rows: Sequence[Mapping[str, Any]], *, min_share: float = PEAK_MIN_SHARE) -> list[Peak]:
    """The store's peak moments worth marking, in call order.

    The store gives, for every emotion some face showed, the second the most faces showed it.
    Neutral is left out (a quiet audience is not a moment), and so is an emotion that never
    reached `min_share` of the faces in view at once (one face out of nine is noise).
    """
    peaks = [
        Peak(t_s=int(r["second"]), emotion=str(r["emotion"]), faces_with=int(r["faces_showing"]),
             faces_total=int(r["faces"]))
        for r in rows
        if r["emotion"] != "neutral" and r["faces"] and r["faces_showing"] / r["faces"] >= min_share
    ]
    return sorted(peaks, key=lambda p: (p.t_s, EMOTIONS.index(p.emotion)))


# --------------------------------------------------------------------------- the store's report


def _iso(value: Any) -> str | None:
    """A timestamp of the store (ISO text or epoch ms) as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value / 1000, tz=UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def report_view(report: Mapping[str, Any],
                valence: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> ReportView:
    """Read the store's report (docs/reports.md) into typed, plot-ready form.

    `valence` maps a participant id to its (second, mean valence) points; see `participant_valence`.
    """
    call = report["call"]
    facts = report["facts"]
    audience = tuple(
        AudienceSecond(t_s=int(row["second"]), faces=int(row["faces"]),
                       mean_valence=float(row["valence"] or 0.0),
                       counts={e: int(row["top"].get(e, 0)) for e in EMOTIONS})
        for row in report["curve"]
    )
    participants = []
    for p in report["participants"]:
        curve = (valence or {}).get(str(p["participant_id"]), ())
        participants.append(ParticipantReport(
            participant_id=str(p["participant_id"]),
            display_name=str(p.get("display_name") or ""),
            samples=int(p["samples"]),
            faces=int(p["faces"]),
            mean_valence=None if p.get("valence") is None else float(p["valence"]),
            distribution={e: float((p.get("top_share") or {}).get(e) or 0.0) for e in EMOTIONS},
            valence_t_s=tuple(float(t) for t, _ in curve),
            valence=tuple(float(v) for _, v in curve),
        ))
    duration_s = facts.get("duration_s")
    if duration_s is None and facts.get("last_t_ms") is not None:
        duration_s = facts["last_t_ms"] / 1000
    view_facts = CallFacts(
        call_id=str(call["id"]),
        title=str(call.get("title") or ""),
        status=str(call.get("status") or "unknown"),
        started=_iso(call.get("started_at")),
        ended=_iso(call.get("ended_at")),
        duration_s=float(duration_s or 0.0),
        participants=int(facts["participants"]),
        faces=int(facts["faces"]),
        samples=int(facts["samples"]),
        failure_reason=call.get("failure_reason") or None,
        scored_by=_scored_by(call.get("analysis")),
    )
    return ReportView(facts=view_facts, audience=audience, participants=tuple(participants),
                      peaks=tuple(select_peaks(report.get("peaks", []))))


def _scored_by(analysis: Any) -> str | None:
    """"emotion_cnn.tflite (flip, margin 0.5), detector blazeface" from an "analysis" event."""
    if not isinstance(analysis, Mapping) or not analysis.get("model"):
        return None
    text = str(analysis["model"])
    tta = analysis.get("tta")
    if tta and tta != "none":
        margin = analysis.get("tta_margin")
        text += f" ({tta}" + (f", margin {margin:g})" if isinstance(margin, (int, float)) else ")")
    if analysis.get("detector"):
        text += f", detector {analysis['detector']}"
    return text


PARTICIPANT_VALENCE_SQL = """\
SELECT participant_id,
       t_ms / 1000 AS second,
       AVG(valence) AS valence
FROM emotion_samples
WHERE call_id = :call_id
GROUP BY participant_id, t_ms / 1000
ORDER BY participant_id, second
"""


def participant_valence(db: Any, call_id: str) -> dict[str, list[tuple[float, float]]]:
    """Each participant's mean valence per second of the call (all their faces together)."""
    from confbot.store.reports import run_report_query

    curves: dict[str, list[tuple[float, float]]] = {}
    for row in run_report_query(db, PARTICIPANT_VALENCE_SQL, call_id):
        curves.setdefault(str(row["participant_id"]), []).append(
            (float(row["second"]), float(row["valence"])))
    return curves


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _ParticipantItem:
    report: ParticipantReport
    svg: str | None


def render_report_html(report: Mapping[str, Any],
                       valence: Mapping[str, Sequence[tuple[float, float]]] | None = None, *,
                       csv_href: str | None = None, json_href: str | None = None,
                       now: datetime | None = None) -> str:
    """The whole report as one HTML page with inline CSS and SVG: it stands alone when saved.

    `report` is `report_json`'s dict, `valence` is `participant_valence`'s; the links to the CSV
    and JSON exports are shown when given, the matching CLI commands otherwise.
    """
    view = report_view(report, valence)
    end_s = max(view.facts.duration_s, (view.audience[-1].t_s + 1) if view.audience else 0)
    audience_plot = None
    items = []
    if view.has_samples:
        markers = [Marker(t_s=p.t_s, label=str(i)) for i, p in enumerate(view.peaks, start=1)]
        audience_plot = audience_svg(
            [a.t_s for a in view.audience], [a.mean_valence for a in view.audience],
            {e: [a.share(e) for a in view.audience] for e in EMOTIONS}, markers, end_s=end_s)
        for p in view.participants:
            svg = None
            if p.samples:
                svg = participant_svg(p.display_name or p.participant_id, dict(p.distribution),
                                      p.valence_t_s, p.valence, end_s=end_s)
            items.append(_ParticipantItem(p, svg))
    generated = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    return render("report.html", facts=view.facts, has_samples=view.has_samples,
                  audience_svg=audience_plot, peaks=view.peaks, participant_items=items,
                  csv_href=csv_href, json_href=json_href, generated_at=generated, css=inline_css())


# --------------------------------------------------------------------------- CLI


def report_command(settings: Any, call_id: str, fmt: str, out: Path | None) -> None:
    """`confbot report`: write the report of `call_id` as html, csv or json to `out` (- = stdout).

    Raises InputError for an unknown format or call, StoreError when the database is unreachable.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    from confbot.store.db import Database
    from confbot.store.errors import NotFoundError
    from confbot.store.reports import report_csv, report_json

    with Database.from_settings(settings) as db:
        try:
            if fmt == "csv":
                text = report_csv(db, call_id)
            elif fmt == "json":
                text = json.dumps(report_json(db, call_id), indent=2) + "\n"
            else:
                text = render_report_html(report_json(db, call_id), participant_valence(db, call_id))
        except NotFoundError as exc:
            raise InputError(f"{exc} in the database at {db.url}") from exc
    if out is None or str(out) == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{out}: cannot write the report there ({exc.strerror})") from exc

