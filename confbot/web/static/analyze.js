// Photo analyzer: upload a photo (or take one), POST it to /api/analyze, draw the faces.
import { EMOTIONS, COLORS, el, responseError, svgEl } from "./emotions.js";

const $ = (id) => document.getElementById(id);
let objectUrl = null;
let cameraStream = null;

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function analyze(blob, name) {
  showError("");
  $("result").hidden = true;
  if (blob.type && !blob.type.startsWith("image/")) {
    showError(`“${name}” is not an image (${blob.type}). Choose a photo: JPEG, PNG, WebP or BMP.`);
    return;
  }
  const form = new FormData();
  form.append("file", blob, name);
  $("busy").hidden = false;
  $("send").disabled = true;
  let response;
  try {
    response = await fetch("/api/analyze", { method: "POST", body: form });
  } catch (_) {
    showError("The server cannot be reached. Check your connection and try again.");
    return;
  } finally {
    $("busy").hidden = true;
    $("send").disabled = false;
  }
  if (!response.ok) {
    const detail = await responseError(response);
    const prefix = response.status === 413 ? "This file is too large. "
      : response.status === 415 || response.status === 400 || response.status === 422
        ? `“${name}” could not be analyzed. ` : "The server could not analyze the photo. ";
    showError(prefix + detail.charAt(0).toUpperCase() + detail.slice(1));
    return;
  }
  const body = await response.json();
  show(blob, body);
}

function show(blob, body) {
  const faces = Array.isArray(body) ? body : body.faces || [];
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(blob);
  const img = $("photo");
  img.onload = () => drawBoxes(faces, body.width || img.naturalWidth, body.height || img.naturalHeight);
  img.src = objectUrl;
  $("summary").textContent = faces.length === 0
    ? "No face was found in this photo. Faces turned far from the camera, or very small, are missed."
    : `${faces.length} face${faces.length === 1 ? "" : "s"} found.`;
  $("tables").replaceChildren(...faces.map(scoreTable));
  $("result").hidden = false;
}

function drawBoxes(faces, width, height) {
  const svg = $("boxes");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const stroke = Math.max(2, width / 250);
  const size = Math.max(14, width / 30);
  faces.forEach((face, i) => {
    const [x, y, w, h] = face.box;
    const color = COLORS[face.top_emotion] || "#ffffff";
    svg.append(svgEl("rect", { x, y, width: w, height: h, fill: "none", stroke: color, "stroke-width": stroke }));
    const label = svgEl("text", { x, y: y > size + 4 ? y - stroke * 2 : y + h + size, fill: color,
      "font-size": size, "font-weight": 700, stroke: "#000", "stroke-width": stroke / 3, "paint-order": "stroke" });
    label.textContent = `${i + 1}: ${face.top_emotion}`;
    svg.append(label);
  });
}

function scoreTable(face, i) {
  const rows = EMOTIONS.map((e) => {
    const score = face.scores?.[e] ?? 0;
    const bar = el("span", { class: "scorebar" });
    bar.style.width = `${Math.round(score * 120)}px`;
    bar.style.background = COLORS[e];
    return el("tr", { "data-emotion": e }, el("th", { scope: "row" }, e),
      el("td", { class: "num" }, `${(score * 100).toFixed(1)}%`), el("td", {}, bar));
  });
  return el("table", { class: "scores", "aria-label": `scores of face ${i + 1}` },
    el("caption", { class: "small" },
      `Face ${i + 1}: ${face.top_emotion}` +
      (typeof face.valence === "number" ? ` · valence ${face.valence.toFixed(2)}` : "")),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "emotion"), el("th", { scope: "col", class: "num" }, "score"),
      el("th", { scope: "col" }, el("span", { class: "hidden" }, "bar")))),
    el("tbody", {}, ...rows));
}

// ------------------------------------------------------------------ camera

async function openCamera() {
  showError("");
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    showError("The camera needs a secure page (https:// or http://localhost). Choose a photo file instead.");
    return;
  }
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
  } catch (error) {
    showError(error?.name === "NotAllowedError"
      ? "The camera was not allowed. Allow it for this site in the browser's settings, or choose a photo file instead."
      : `The camera could not be started (${error?.name || "error"}). Choose a photo file instead.`);
    return;
  }
  $("viewfinder").srcObject = cameraStream;
  $("shoot").hidden = false;
}

function closeCamera() {
  cameraStream?.getTracks().forEach((t) => t.stop());
  cameraStream = null;
  $("viewfinder").srcObject = null;
  $("shoot").hidden = true;
}

function snap() {
  const video = $("viewfinder");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  closeCamera();
  canvas.toBlob((blob) => { if (blob) analyze(blob, "camera.jpg"); }, "image/jpeg", 0.92);
}

$("upload").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    showError("Choose a photo first.");
    return;
  }
  analyze(file, file.name);
});
$("file").addEventListener("change", () => {
  if ($("file").files[0]) $("upload").requestSubmit();
});
$("camera").addEventListener("click", openCamera);
$("snap").addEventListener("click", snap);
$("cancel-shot").addEventListener("click", closeCamera);
