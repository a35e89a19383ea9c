// Host dashboard: follows one call's feed websocket and draws participants and the audience.
// The host token comes from ?token= or #token= (then removed from the address bar) or the form,
// and is kept in sessionStorage for this tab only. It is never written to the console.
import { EMOTIONS, COLORS, clock, el, legend, responseError } from "./emotions.js";
import { drawAudience, drawTimeline } from "./charts.js";
import { takeToken, storeToken, forgetToken } from "./token.js";

const WINDOW_MS = 3 * 60 * 1000; // the participant timelines show the last 3 minutes
const REPLAY_MARGIN_MS = 2000; // ask for a little more than missed: samples of tracks interleave
const RENDER_EVERY_MS = 400;
const FATAL_CLOSE = new Set([1008, 4001, 4003, 4004, 4401, 4403, 4404]);

const callId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  status: "connecting",
  reason: "",
  intervalMs: 500,
  lastT: null, // the newest t_ms seen in any message: where a reconnect resumes
  participants: new Map(), // pid -> {name, left, faces: Map(face -> samples[])}
  seconds: new Map(), // t_s -> Map(faceKey -> {top, valence})
  bins: [], // per-second audience summary, rebuilt from `seconds` when dirty
  dirtySeconds: new Set(),
  events: [],
  eventKeys: new Set(),
  socket: null,
  retries: 0,
  stopped: false,
};

function showAlert(text, kind = "error") {
  const box = $("alert");
  box.className = `notice ${kind}`;
  box.textContent = text;
  box.hidden = !text;
}

function setFeedState(text) {
  $("feed-state").textContent = text;
}

function setStatus(status, reason) {
  state.status = status || state.status;
  state.reason = reason || "";
  const badge = $("status");
  badge.className = `badge ${state.status}`;
  badge.textContent = state.status;
  $("status-reason").textContent = state.status === "failed" && state.reason ? `: ${state.reason}` : "";
  if (state.status === "ended") showAlert("The call has ended. The post-call report is ready below.", "ok");
  if (state.status === "failed") showAlert(`The bot could not run this call${state.reason ? `: ${state.reason}` : "."}`);
}

// ------------------------------------------------------------------ messages

function onSample(m) {
  let p = state.participants.get(m.participant_id);
  if (!p) p = addParticipant(m.participant_id, m.display_name || "");
  let samples = p.faces.get(m.face_index);
  if (!samples) {
    samples = [];
    p.faces.set(m.face_index, samples);
  }
  const last = samples.length ? samples[samples.length - 1].t_ms : -1;
  if (m.t_ms <= last) return; // already seen (a replay overlaps what we had)
  samples.push(m);
  const cut = m.t_ms - WINDOW_MS;
  while (samples.length && samples[0].t_ms < cut) samples.shift();
  const second = Math.floor(m.t_ms / 1000);
  let faces = state.seconds.get(second);
  if (!faces) {
    faces = new Map();
    state.seconds.set(second, faces);
  }
  faces.set(`${m.participant_id}/${m.face_index}`, { top: m.top_emotion, valence: m.valence });
  state.dirtySeconds.add(second);
  p.left = false;
}

function addParticipant(pid, name) {
  const p = { name, left: false, faces: new Map() };
  state.participants.set(pid, p);
  return p;
}

function onParticipant(m) {
  const what = m.event || m.action || m.state || m.status;
  const pid = m.participant_id;
  const key = `${pid}/${what}/${m.t_ms}`;
  const p = state.participants.get(pid) || addParticipant(pid, m.display_name || "");
  if (m.display_name) p.name = m.display_name;
  if (what === "left") p.left = true;
  if (what === "joined") p.left = false;
  if (state.eventKeys.has(key)) return;
  state.eventKeys.add(key);
  state.events.push({ t_ms: m.t_ms ?? state.lastT ?? 0, pid, what });
}

function onMessage(m) {
  if (typeof m.t_ms === "number" && (state.lastT === null || m.t_ms > state.lastT)) state.lastT = m.t_ms;
  switch (m.type) {
    case "sample": onSample(m); break;
    case "participant": onParticipant(m); break;
    case "call": setStatus(m.status, m.failure_reason || m.reason); break;
    case "audience": break; // the curve is built from the samples, so a replay fills it exactly
    default: break;
  }
  scheduleRender();
}

// ------------------------------------------------------------------ websocket

function connect() {
  if (state.stopped) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams({ token: state.token });
  if (state.lastT !== null) params.set("since_ms", String(Math.max(0, state.lastT - REPLAY_MARGIN_MS)));
  const socket = new WebSocket(`${proto}//${location.host}/api/calls/${encodeURIComponent(callId)}/feed?${params}`);
  state.socket = socket;
  setFeedState(state.retries ? "reconnecting…" : "connecting…");
  socket.onopen = () => {
    state.retries = 0;
    setFeedState("connected");
    if (state.status !== "failed" && state.status !== "ended") showAlert("");
  };
  socket.onmessage = (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    onMessage(message);
  };
  socket.onclose = (event) => {
    state.socket = null;
    if (FATAL_CLOSE.has(event.code)) {
      state.stopped = true;
      setFeedState("refused");
      showAlert(`The server refused the live feed: ${event.reason || "this token is not valid for this call"}.`);
      return;
    }
    if (state.status === "ended" || state.status === "failed") {
      setFeedState("closed");
      return;
    }
    state.retries += 1;
    const delay = Math.min(10000, 500 * 2 ** Math.min(state.retries, 5));
    setFeedState(`lost; reconnecting in ${Math.round(delay / 1000)} s`);
    setTimeout(connect, delay);
  };
}

// ------------------------------------------------------------------ rendering

let renderTimer = null;
function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(render, RENDER_EVERY_MS);
}

function summarizeSeconds() {
  if (!state.dirtySeconds.size) return;
  const byS = new Map(state.bins.map((b) => [b.t_s, b]));
  for (const s of state.dirtySeconds) {
    const faces = state.seconds.get(s);
    const counts = Object.fromEntries(EMOTIONS.map((e) => [e, 0]));
    let valence = 0;
    for (const f of faces.values()) {
      counts[f.top] = (counts[f.top] || 0) + 1;
      valence += f.valence;
    }
    byS.set(s, { t_s: s, faces: faces.size, valence: faces.size ? valence / faces.size : 0, counts });
  }
  state.dirtySeconds.clear();
  state.bins = [...byS.values()].sort((a, b) => a.t_s - b.t_s);
}

function render() {
  renderTimer = null;
  summarizeSeconds();
  drawAudience($("audience"), state.bins);
  const now = state.bins.length ? state.bins[state.bins.length - 1] : null;
  $("faces-now").textContent = now ? String(now.faces) : "0";
  $("valence-now").textContent = now ? signed(now.valence) : "–";
  $("top-now").textContent = now ? EMOTIONS.reduce((a, b) => (now.counts[b] > now.counts[a] ? b : a)) : "–";
  $("elapsed").textContent = clock(state.lastT || 0);
  renderParticipants();
  renderEvents();
}

function signed(v) {
  return (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(2);
}

function renderParticipants() {
  const box = $("participants");
  $("no-participants").hidden = state.participants.size > 0;
  const endMs = state.lastT || 0;
  for (const [pid, p] of state.participants) {
    let card = box.querySelector(`[data-pid="${CSS.escape(pid)}"]`);
    if (!card) {
      card = el("article", { class: "card", "data-pid": pid, "aria-label": `participant ${p.name || pid}` },
        el("h3", {}), el("div", { class: "faces" }));
      box.append(card);
    }
    card.querySelector("h3").textContent = (p.name || pid) + (p.left ? " (left)" : "");
    card.classList.toggle("gone", p.left);
    const faces = card.querySelector(".faces");
    if (!p.faces.size) {
      faces.replaceChildren(el("p", { class: "muted small" }, "Waiting for a face…"));
      continue;
    }
    const rows = [];
    for (const [face, samples] of [...p.faces].sort((a, b) => a[0] - b[0])) {
      const last = samples[samples.length - 1];
      if (!last) continue;
      const stale = endMs - last.t_ms > 5000;
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = COLORS[last.top_emotion] || "#888";
      const timeline = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      timeline.setAttribute("class", "chart");
      timeline.setAttribute("role", "img");
      timeline.setAttribute("aria-label", `last ${WINDOW_MS / 60000} minutes of emotions and valence`);
      drawTimeline(timeline, samples, endMs, WINDOW_MS, state.intervalMs);
      rows.push(el("div", { class: "face", "data-face": face },
        p.faces.size > 1 ? el("p", { class: "small muted" }, `face ${face}`) : null,
        el("p", { class: "emotion", "data-emotion": last.top_emotion }, swatch, last.top_emotion,
          stale ? el("span", { class: "small muted" }, " (not seen for a while)") : null),
        meter("valence", (last.valence + 1) / 2, signed(last.valence), true),
        meter("attention", last.attention, `${Math.round(last.attention * 100)}%`, false),
        timeline));
    }
    faces.replaceChildren(...rows);
  }
}

function meter(label, fraction, text, centred) {
  const fill = el("span");
  const f = Math.max(0, Math.min(1, fraction));
  if (centred) {
    fill.style.left = `${Math.min(f, 0.5) * 100}%`;
    fill.style.width = `${Math.abs(f - 0.5) * 100}%`;
  } else {
    fill.style.left = "0";
    fill.style.width = `${f * 100}%`;
  }
  return el("div", { class: "meter" }, el("span", {}, label),
    el("span", { class: "bar", role: "meter", "aria-label": label, "aria-valuenow": text }, fill),
    el("span", { class: "num" }, text));
}

function renderEvents() {
  const list = $("events");
  if (list.childElementCount === state.events.length) return;
  const sorted = [...state.events].sort((a, b) => a.t_ms - b.t_ms);
  list.replaceChildren(...sorted.map((e) => {
    const name = state.participants.get(e.pid)?.name || e.pid;
    return el("li", {}, `${clock(e.t_ms)} `, el("strong", {}, name), ` ${e.what}`);
  }));
  list.scrollTop = list.scrollHeight;
}

// ------------------------------------------------------------------ start

async function start(token) {
  state.token = token;
  let response;
  try {
    response = await fetch(`/api/calls/${encodeURIComponent(callId)}`, {
      headers: { Authorization: `Bearer ${token}` }, cache: "no-store",
    });
  } catch (_) {
    showAlert("The server cannot be reached. Check the address and that `confbot serve` is running.");
    return;
  }
  if (response.status === 401 || response.status === 403) {
    forgetToken(callId);
    showTokenForm("This host token is not valid for this call. Paste the token that came back when the call was created.");
    return;
  }
  if (response.status === 404) {
    showAlert(`There is no call with the id “${callId}”.`);
    return;
  }
  if (!response.ok) {
    showAlert(`The server could not show this call: ${await responseError(response)}`);
    return;
  }
  const call = await response.json();
  $("title").textContent = call.title ? `Call: ${call.title}` : `Call ${callId}`;
  document.title = `${call.title || callId} · host dashboard · confbot`;
  if (call.sample_fps) state.intervalMs = 1000 / call.sample_fps;
  const room = call.room_url || (call.connector?.type === "room" ? `/room/${encodeURIComponent(callId)}` : "");
  if (room) {
    $("room-link").href = room;
    $("room-link").textContent = new URL(room, location.href).href;
    $("invite").hidden = false;
  }
  $("token-form").hidden = true;
  $("call-state").hidden = false;
  $("live").hidden = false;
  $("report-link").addEventListener("click", (event) => {
    event.currentTarget.href = `/calls/${encodeURIComponent(callId)}/report?token=${encodeURIComponent(state.token)}`;
  });
  setStatus(call.status, call.failure_reason);
  storeToken(callId, token);
  render();
  connect();
}

function showTokenForm(message) {
  $("live").hidden = true;
  $("call-state").hidden = true; // nothing is known about the call until a token opens it
  $("token-form").hidden = false;
  if (message) showAlert(message);
  $("token").focus();
}

$("legend").append(legend());
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (token) start(token);
});
const initial = takeToken(callId);
if (initial) start(initial);
else showTokenForm("");
