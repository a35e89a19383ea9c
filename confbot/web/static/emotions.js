// The 7 FER2013 emotions, in the order the API uses, and their colours (Okabe-Ito; the same
// as the report's plots in confbot/web/plots.py).
export const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];

export const COLORS = {
  angry: "#D55E00",
  disgust: "#7A5C1E",
  fear: "#CC79A7",
  happy: "#E69F00",
  sad: "#0072B2",
  surprise: "#009E73",
  neutral: "#A0A0A0",
};

/** Milliseconds since the call started as H:MM:SS (or M:SS under an hour). */
export function clock(tMs) {
  const total = Math.max(0, Math.round(tMs / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** A small element factory: el("p", {class: "x"}, "text", child). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element with attributes. */
export function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/** A legend of the 7 colours, for the charts. */
export function legend() {
  const box = el("div", { class: "legend", "aria-hidden": "true" });
  for (const e of EMOTIONS) {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = COLORS[e];
    box.append(el("span", {}, swatch, e));
  }
  return box;
}

/** The message of a failed fetch response: the API's `detail`, or the status line. */
export async function responseError(response) {
  let detail = "";
  try {
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail
        : Array.isArray(body.detail) ? body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ")
        : body.error || body.message || "";
    } else {
      detail = (await response.text()).slice(0, 300);
    }
  } catch (_) { /* no readable body: fall back to the status */ }
  return detail || `${response.status} ${response.statusText}`.trim();
}
