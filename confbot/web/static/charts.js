// Small SVG charts for the live pages: the audience curve and a participant's timeline.
// They redraw from scratch on each call; the callers throttle how often that happens.
import { EMOTIONS, COLORS, clock, svgEl } from "./emotions.js";

const AUDIENCE_W = 720;
const VALENCE_H = 90;
const SHARE_H = 130;
const GAP = 22;
const LEFT = 44;
const RIGHT = 8;
const MAX_COLUMNS = 360;

/**
 * The audience curve: mean valence (top) and the share of faces per top emotion (bottom).
 * `bins` is an array of {t_s, faces, valence, counts{emotion: n}} in time order.
 */
export function drawAudience(svg, bins) {
  const height = VALENCE_H + GAP + SHARE_H + 20;
  svg.setAttribute("viewBox", `0 0 ${AUDIENCE_W} ${height}`);
  svg.replaceChildren();
  const plotW = AUDIENCE_W - LEFT - RIGHT;
  const shareTop = VALENCE_H + GAP;
  axes(svg, plotW, shareTop);
  if (!bins.length) {
    const text = svgEl("text", { x: LEFT + plotW / 2, y: height / 2, "text-anchor": "middle",
      class: "muted", "font-size": 14, fill: "#5a5a5a" });
    text.textContent = "No faces yet";
    svg.append(text);
    return;
  }
  const cols = columns(bins);
  const t0 = 0;
  const t1 = Math.max(bins[bins.length - 1].t_s + 1, 10);
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * plotW;
  // stacked shares: one polygon per emotion, bottom to top in EMOTIONS order
  const lower = cols.map(() => 0);
  for (const e of EMOTIONS) {
    const upper = cols.map((c, i) => lower[i] + (c.faces ? c.counts[e] / c.faces : 0));
    const pts = [];
    cols.forEach((c, i) => pts.push(`${x(c.t0).toFixed(1)},${(shareTop + SHARE_H * (1 - upper[i])).toFixed(1)}`,
      `${x(c.t1).toFixed(1)},${(shareTop + SHARE_H * (1 - upper[i])).toFixed(1)}`));
    for (let i = cols.length - 1; i >= 0; i--) {
      pts.push(`${x(cols[i].t1).toFixed(1)},${(shareTop + SHARE_H * (1 - lower[i])).toFixed(1)}`,
        `${x(cols[i].t0).toFixed(1)},${(shareTop + SHARE_H * (1 - lower[i])).toFixed(1)}`);
    }
    svg.append(svgEl("polygon", { points: pts.join(" "), fill: COLORS[e], "data-emotion": e }));
    upper.forEach((u, i) => { lower[i] = u; });
  }
  // valence line
  const vy = (v) => VALENCE_H / 2 - (v * VALENCE_H) / 2;
  const line = cols.filter((c) => c.faces).map((c) => `${x((c.t0 + c.t1) / 2).toFixed(1)},${vy(c.valence).toFixed(1)}`);
  svg.append(svgEl("polyline", { points: line.join(" "), fill: "none", stroke: "#1b1b1b",
    "stroke-width": 1.8, "stroke-linejoin": "round", class: "valence-line" }));
  timeTicks(svg, x, t0, t1, shareTop + SHARE_H + 14);
}

function axes(svg, plotW, shareTop) {
  const label = (y, text, anchor = "end") => {
    const t = svgEl("text", { x: LEFT - 4, y, "text-anchor": anchor, "font-size": 11, fill: "#444",
      "dominant-baseline": "middle" });
    t.textContent = text;
    svg.append(t);
  };
  svg.append(svgEl("rect", { x: LEFT, y: 0, width: plotW, height: VALENCE_H, fill: "#fafafa", stroke: "#ccc" }));
  svg.append(svgEl("line", { x1: LEFT, x2: LEFT + plotW, y1: VALENCE_H / 2, y2: VALENCE_H / 2, stroke: "#999",
    "stroke-dasharray": "3 3" }));
  label(6, "+1");
  label(VALENCE_H / 2, "0");
  label(VALENCE_H - 6, "-1");
  const title = svgEl("text", { x: LEFT + 4, y: 12, "font-size": 11, fill: "#444" });
  title.textContent = "mean valence";
  svg.append(title);
  svg.append(svgEl("rect", { x: LEFT, y: shareTop, width: plotW, height: SHARE_H, fill: "#f0f0f0", stroke: "#ccc" }));
  label(shareTop + 6, "100%");
  label(shareTop + SHARE_H - 6, "0%");
  const t2 = svgEl("text", { x: LEFT, y: shareTop - 5, "font-size": 11, fill: "#444" });
  t2.textContent = "share of faces per emotion";
  svg.append(t2);
}

function timeTicks(svg, x, t0, t1, y) {
  const span = t1 - t0;
  const steps = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const step = steps.find((s) => span / s <= 8) || 7200;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    // a label at the right edge would be cut off by the SVG's border: end it there instead
    const anchor = t1 - t < step / 4 ? "end" : "middle";
    const text = svgEl("text", { x: x(t), y, "text-anchor": anchor, "font-size": 11, fill: "#444" });
    text.textContent = clock(t * 1000);
    svg.append(text);
  }
}

// Merge per-second bins into at most MAX_COLUMNS columns, weighting by faces.
function columns(bins) {
  const per = Math.max(1, Math.ceil((bins[bins.length - 1].t_s + 1) / MAX_COLUMNS));
  const out = [];
  let cur = null;
  for (const b of bins) {
    const start = Math.floor(b.t_s / per) * per;
    if (!cur || cur.t0 !== start) {
      cur = { t0: start, t1: start + per, faces: 0, valenceSum: 0, counts: Object.fromEntries(EMOTIONS.map((e) => [e, 0])) };
      out.push(cur);
    }
    cur.faces += b.faces;
    cur.valenceSum += b.valence * b.faces;
    for (const e of EMOTIONS) cur.counts[e] += b.counts[e] || 0;
  }
  for (const c of out) c.valence = c.faces ? c.valenceSum / c.faces : 0;
  return out;
}

const STRIP_W = 300;
const BAND_H = 14;
const SPARK_H = 36;

/**
 * One face's recent history: a band coloured by top emotion and a valence line, over
 * [endMs - windowMs, endMs]. `samples` are feed `sample` messages in time order.
 */
export function drawTimeline(svg, samples, endMs, windowMs, intervalMs) {
  const h = BAND_H + 4 + SPARK_H;
  svg.setAttribute("viewBox", `0 0 ${STRIP_W} ${h}`);
  svg.replaceChildren();
  svg.append(svgEl("rect", { x: 0, y: 0, width: STRIP_W, height: BAND_H, fill: "#eee" }));
  svg.append(svgEl("rect", { x: 0, y: BAND_H + 4, width: STRIP_W, height: SPARK_H, fill: "#fafafa" }));
  svg.append(svgEl("line", { x1: 0, x2: STRIP_W, y1: BAND_H + 4 + SPARK_H / 2, y2: BAND_H + 4 + SPARK_H / 2,
    stroke: "#bbb", "stroke-dasharray": "2 2" }));
  const start = endMs - windowMs;
  const x = (t) => ((t - start) / windowMs) * STRIP_W;
  const w = Math.max(1, (intervalMs / windowMs) * STRIP_W);
  const pts = [];
  let prev = null;
  for (const s of samples) {
    if (s.t_ms < start) continue;
    svg.append(svgEl("rect", { x: x(s.t_ms).toFixed(1), y: 0, width: w.toFixed(1), height: BAND_H,
      fill: COLORS[s.top_emotion] || "#888" }));
    // a gap of more than 3 sample intervals (face out of view) breaks the line
    if (prev !== null && s.t_ms - prev > 3 * intervalMs && pts.length) {
      svg.append(sparkLine(pts.splice(0)));
    }
    pts.push(`${x(s.t_ms).toFixed(1)},${(BAND_H + 4 + SPARK_H / 2 - (s.valence * SPARK_H) / 2).toFixed(1)}`);
    prev = s.t_ms;
  }
  if (pts.length) svg.append(sparkLine(pts));
}

function sparkLine(pts) {
  return svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: "#1b1b1b", "stroke-width": 1.4 });
}
