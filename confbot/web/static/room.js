// Room page: consent, camera preview, publishing to the bot over WHIP (RFC 9725), and the
// participant's own live emotion drawn over their face.
import { COLORS, responseError, svgEl } from "./emotions.js";

const callId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const $ = (id) => document.getElementById(id);
const ICE_GATHER_TIMEOUT_MS = 5000;
const POLL_MS = 500;

const session = {
  stream: null,
  pc: null,
  resource: null, // the WHIP resource URL (Location): DELETE it to leave
  latest: null, // where this participant reads their own newest samples
  pollTimer: null,
  polling: null, // the poll on its way, which leaving waits for
  lastLabel: "",
};

function show(id) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== id;
  const heading = $(id).querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

function formError(text) {
  $("form-error").textContent = text;
  $("form-error").hidden = !text;
}

// ------------------------------------------------------------------ camera

const CAMERA_HELP = {
  NotAllowedError: ["You (or your browser) did not allow this page to use the camera.",
    "To take part, allow the camera for this site: use the camera icon in the address bar, or on " +
    "Android Chrome open ⋮ → Settings → Site settings → Camera. Then press Try again."],
  SecurityError: ["The browser blocked the camera for this page.",
    "Camera access needs a secure page. Open the room over https://, or on this computer at http://localhost."],
  NotFoundError: ["No camera was found on this device.",
    "Connect a camera, or open this page on a phone or laptop that has one, then press Try again."],
  NotReadableError: ["The camera is in use by another application or could not be started.",
    "Close other apps or tabs that use the camera (video calls, camera apps), then press Try again."],
  OverconstrainedError: ["The camera cannot give a suitable picture.", "Try another camera, then press Try again."],
};

function cameraError(error) {
  const [text, help] = CAMERA_HELP[error?.name] ||
    [`The camera could not be started (${error?.name || "unknown error"}).`, "Press Try again, or try another browser."];
  $("camera-error-text").textContent = text;
  $("camera-error-help").textContent = help;
  show("camera-error");
}

async function openCamera() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    cameraError({ name: "SecurityError" });
    return null;
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 }, facingMode: "user" },
    });
  } catch (error) {
    cameraError(error);
    return null;
  }
}

// ------------------------------------------------------------------ WHIP

function waitForIceGathering(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS); // send what we have
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function publish(stream, name) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  session.pc = pc;
  for (const track of stream.getVideoTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  pc.addEventListener("connectionstatechange", () => linkState(pc.connectionState));
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc); // no trickle: the offer carries every candidate
  const query = new URLSearchParams({ name, consent: "yes" });
  const response = await fetch(`/whip/${encodeURIComponent(callId)}?${query}`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp" },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) {
    throw new Error(response.status === 404 ? "This call does not exist, or it has ended."
      : `The bot did not accept the connection: ${await responseError(response)}`);
  }
  const location = response.headers.get("Location");
  session.resource = location ? new URL(location, window.location.href).href : null;
  const latest = response.headers.get("X-Confbot-Latest");
  session.latest = latest ? new URL(latest, window.location.href).href
    : session.resource ? `${session.resource}/latest` : null;
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
}

const LINK_TEXT = {
  new: "connecting…", connecting: "connecting…", connected: "sending to the bot",
  disconnected: "connection interrupted…", failed: "connection failed", closed: "stopped",
};

function linkState(state) {
  $("link-state").textContent = LINK_TEXT[state] || state;
  if (state === "failed") {
    callError("The connection to the bot failed. Your network may block it. Leave and join again to retry.");
  }
}

function callError(text) {
  $("call-error").textContent = text;
  $("call-error").hidden = !text;
}

// ------------------------------------------------------------------ own emotion overlay

async function poll() {
  session.pollTimer = null;
  if (!session.latest) return;
  try {
    session.polling = fetch(session.latest, { cache: "no-store" });
    const response = await session.polling;
    if (!session.latest) return; // left meanwhile
    if (response.status === 404 || response.status === 410) {
      callError("The bot ended this session (the call may have ended).");
      return;
    }
    if (response.ok && response.status !== 204) drawOwn(await response.json());
  } catch (_) { /* a missed poll is redrawn by the next one */ }
  if (session.pc) session.pollTimer = setTimeout(poll, POLL_MS);
}

function drawOwn(latest) {
  const video = $("preview");
  const overlay = $("overlay");
  const vw = video.videoWidth || 640;
  const vh = video.videoHeight || 360;
  overlay.setAttribute("viewBox", `0 0 ${vw} ${vh}`);
  const samples = Array.isArray(latest) ? latest : latest.samples || (latest.type === "sample" ? [latest] : []);
  // boxes are in the pixels of the frame the bot decoded, which the encoder may have scaled
  const fw = latest.frame_width || vw;
  const fh = latest.frame_height || vh;
  const sx = vw / fw;
  const sy = vh / fh;
  overlay.replaceChildren();
  for (const s of samples) {
    const [x, y, w, h] = s.box;
    const bx = vw - (x + w) * sx; // the preview is mirrored, so the box is too
    const color = COLORS[s.top_emotion] || "#fff";
    overlay.append(svgEl("rect", { x: bx, y: y * sy, width: w * sx, height: h * sy, fill: "none",
      stroke: color, "stroke-width": Math.max(2, vw / 200) }));
    const label = svgEl("text", { x: bx, y: Math.max(y * sy - 6, 18), fill: color,
      "font-size": Math.max(14, vw / 28), "font-weight": 700, stroke: "#000", "stroke-width": 0.6,
      "paint-order": "stroke", class: "own-label" });
    const score = s.scores?.[s.top_emotion];
    label.textContent = score === undefined ? s.top_emotion : `${s.top_emotion} ${Math.round(score * 100)}%`;
    overlay.append(label);
  }
  const text = samples.length
    ? `The bot reads your expression as: ${samples[0].top_emotion}`
    : "The bot does not see your face right now.";
  if (text !== session.lastLabel) {
    $("me").textContent = text;
    session.lastLabel = text;
  }
}

// ------------------------------------------------------------------ leave

async function leave() {
  const resource = session.resource;
  session.resource = null;
  // No poll may reach the bot after the session ends (it would answer 404): stop polling and
  // let one already on its way come back first.
  session.latest = null;
  if (session.pollTimer) clearTimeout(session.pollTimer);
  session.pollTimer = null;
  await session.polling?.catch(() => {});
  // WHIP's order: end the session with the bot first, then close the connection.
  if (resource) {
    try {
      await fetch(resource, { method: "DELETE", keepalive: true });
    } catch (_) { /* the bot also notices the peer connection closing */ }
  }
  stopLocal();
  show("left");
}

function stopLocal() {
  if (session.pollTimer) clearTimeout(session.pollTimer);
  session.pollTimer = null;
  session.pc?.close();
  session.pc = null;
  session.stream?.getTracks().forEach((t) => t.stop());
  session.stream = null;
  session.resource = null;
  $("overlay").replaceChildren();
  $("preview").srcObject = null;
}

// ------------------------------------------------------------------ flow

async function join() {
  const name = $("name").value.trim();
  if (!name) return formError("Please enter your name.");
  if (!$("agree").checked) return formError("To join, tick the box to agree to the analysis, or choose “No thanks”.");
  formError("");
  $("join").disabled = true;
  try {
    const stream = await openCamera();
    if (!stream) return;
    session.stream = stream;
    $("preview").srcObject = stream;
    show("call");
    callError("");
    $("me").textContent = "The bot has not seen your face yet.";
    session.lastLabel = "";
    try {
      await publish(stream, name);
      poll();
    } catch (error) {
      stopLocal();
      callError(error.message || "The connection to the bot could not be set up.");
      $("link-state").textContent = "not connected";
    }
  } finally {
    $("join").disabled = false;
  }
}

$("consent-form").addEventListener("submit", (event) => {
  event.preventDefault();
  join();
});
$("decline").addEventListener("click", () => show("declined"));
$("leave").addEventListener("click", leave);
for (const button of document.querySelectorAll("[data-action=restart]")) {
  button.addEventListener("click", () => show("consent"));
}
for (const button of document.querySelectorAll("[data-action=retry]")) button.addEventListener("click", join);
window.addEventListener("pagehide", () => {
  if (session.resource) fetch(session.resource, { method: "DELETE", keepalive: true });
});
