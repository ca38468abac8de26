// SeLo explorer page: plain JS, everything from this server (see predict/web/app.py for the API).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, zoom: 1, x: 0, y: 0, fit: 1, busy: false };
const POLL_MS = 400;

function setStatus(text, { error = false, progress = null } = {}) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
  $("progress").hidden = progress === null;
  if (progress !== null) { $("progress").max = progress.total || 1; $("progress").value = progress.done; }
}

// POST a JSON body; while the server answers 202 (encoding), show its progress and ask again.
async function postUntilDone(url, body) {
  for (;;) {
    const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify(body) });
    const answer = await response.json();
    if (response.status === 202) {
      setStatus(answer.message, { progress: answer });
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      continue;
    }
    if (!response.ok) throw new Error(answer.detail || response.statusText);
    return answer;
  }
}

function requestBody(extra) {
  return { image: state.image.name, pipeline: $("pipeline").value, steps: $("steps").value.trim() || null, ...extra };
}

// ---- images -------------------------------------------------------------------------------------------

async function loadImages() {
  const { images } = await (await fetch("/api/images")).json();
  const list = $("images");
  list.replaceChildren();
  for (const image of images) {
    const item = document.createElement("li");
    item.dataset.name = image.name;
    const thumb = document.createElement("img");
    thumb.src = `/api/image?name=${encodeURIComponent(image.name)}&side=160`;
    thumb.alt = "";
    const text = document.createElement("div");
    const size = image.width ? `${image.width} × ${image.height}` : image.error || "";
    text.innerHTML = `<div class="name"></div><div class="meta"></div>`;
    text.querySelector(".name").textContent = image.name;
    text.querySelector(".meta").textContent = size;
    if (image.cached) text.querySelector(".meta").insertAdjacentHTML("beforeend", ' <span class="cached">· cached</span>');
    item.append(thumb, text);
    item.addEventListener("click", () => selectImage(image));
    if (state.image && state.image.name === image.name) item.classList.add("selected");
    list.append(item);
  }
}

async function selectImage(image) {
  if (state.busy) return;
  state.image = image;
  for (const item of $("images").children) item.classList.toggle("selected", item.dataset.name === image.name);
  $("map").hidden = true;
  $("markers").replaceChildren();
  $("peaks").replaceChildren();
  $("downloads").hidden = true;
  const scene = $("scene");
  scene.src = `/api/image?name=${encodeURIComponent(image.name)}&side=2048`;
  await scene.decode().catch(() => {});
  layoutStage();
  renderHistory();
  await run(async () => {
    setStatus(`Encoding ${image.name}…`, { progress: { done: 0, total: 1 } });
    const answer = await postUntilDone("/api/encode", requestBody({}));
    setStatus(`${image.name}: ${answer.width} × ${answer.height}, tiles ready (${answer.tiles_encoded} encoded now). Type a query.`);
    if (answer.tiles_encoded) loadImages();
  });
  $("query").disabled = $("go").disabled = false;
  $("query").focus();
}

// ---- queries ------------------------------------------------------------------------------------------

async function localise(query) {
  await run(async () => {
    setStatus(`Localising “${query}”…`);
    const started = performance.now();
    const answer = await postUntilDone("/api/localise", requestBody({ query }));
    const map = $("map");
    map.src = answer.map_url;
    await map.decode();
    map.hidden = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`“${answer.query}”: map in ${seconds} s (server ${answer.seconds.toFixed(2)} s, ` +
              `${answer.tiles_encoded} tiles encoded), ${answer.peaks.length} peak(s).`);
    showPeaks(answer);
    $("download-probmap").href = answer.downloads.probmap;
    $("download-peaks").href = answer.downloads.peaks;
    $("downloads").hidden = false;
    remember(answer);
  });
}

async function run(work) {
  state.busy = true;
  $("go").disabled = true;
  try { await work(); } catch (error) { setStatus(error.message, { error: true }); }
  finally { state.busy = false; $("go").disabled = !state.image; }
}

function showPeaks(answer) {
  const markers = $("markers"), list = $("peaks");
  markers.replaceChildren();
  list.replaceChildren();
  for (const peak of answer.peaks) {
    const marker = document.createElement("div");
    marker.className = "marker";
    marker.textContent = peak.rank;
    marker.style.left = `${(100 * peak.x) / answer.width}%`;
    marker.style.top = `${(100 * peak.y) / answer.height}%`;
    markers.append(marker);
    const item = document.createElement("li");
    const where = peak.lon === undefined ? `(${peak.x}, ${peak.y})` :
      `${peak.lat.toFixed(5)}°, ${peak.lon.toFixed(5)}° (${peak.x}, ${peak.y})`;
    item.textContent = `${where} p = ${peak.probability.toFixed(2)}`;
    item.title = "click: zoom to this peak";
    item.addEventListener("click", () => zoomTo(peak.x / answer.width, peak.y / answer.height, 4));
    list.append(item);
  }
}

// ---- history (kept in this browser, per image) --------------------------------------------------------

const historyKey = () => `selo-history:${state.image.name}`;
const readHistory = () => JSON.parse(localStorage.getItem(historyKey()) || "[]");

function remember(answer) {
  const entry = { query: answer.query, pipeline: answer.pipeline, steps: answer.steps.join("_"),
                  top: answer.top_score };
  const history = readHistory().filter((h) => !(h.query === entry.query && h.pipeline === entry.pipeline &&
                                                h.steps === entry.steps));
  history.unshift(entry);
  localStorage.setItem(historyKey(), JSON.stringify(history.slice(0, 50)));
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const entry of readHistory()) {
    const item = document.createElement("li");
    item.textContent = `${entry.query} `;
    const score = document.createElement("span");
    score.className = "score";
    const top = entry.top === null ? "no finite score" : `top ${entry.top.toPrecision(3)}`;
    score.textContent = `(${entry.pipeline} ${entry.steps}, ${top})`;
    item.append(score);
    item.addEventListener("click", () => {
      if (state.busy) return;
      $("query").value = entry.query;
      $("pipeline").value = entry.pipeline;
      $("steps").value = entry.steps;
      localise(entry.query);
    });
    list.append(item);
  }
}

// ---- zoom and pan (CSS transform of the stage) --------------------------------------------------------

function layoutStage() {
  if (!state.image) return;
  const viewport = $("viewport").getBoundingClientRect();
  const { width, height } = state.image;
  state.fit = Math.min(viewport.width / width, viewport.height / height);
  const stage = $("stage");
  stage.style.width = `${width * state.fit}px`;
  stage.style.height = `${height * state.fit}px`;
  state.zoom = 1;
  state.x = (viewport.width - width * state.fit) / 2;
  state.y = (viewport.height - height * state.fit) / 2;
  applyTransform();
}

function applyTransform() {
  const stage = $("stage");
  stage.style.transform = `translate(${state.x}px, ${state.y}px) scale(${state.zoom})`;
  stage.style.setProperty("--zoom", state.zoom);
}

function zoomAt(factor, cx, cy) {
  const zoom = Math.min(64, Math.max(0.5, state.zoom * factor));
  state.x = cx - ((cx - state.x) * zoom) / state.zoom;
  state.y = cy - ((cy - state.y) * zoom) / state.zoom;
  state.zoom = zoom;
  applyTransform();
}

// Centre the view on a point given as fractions of the image's width and height, at ``zoom``.
function zoomTo(fx, fy, zoom) {
  const box = $("viewport").getBoundingClientRect();
  const stage = $("stage");
  state.zoom = zoom;
  state.x = box.width / 2 - fx * stage.offsetWidth * zoom;
  state.y = box.height / 2 - fy * stage.offsetHeight * zoom;
  applyTransform();
}

function setUpViewer() {
  const viewport = $("viewport");
  viewport.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = viewport.getBoundingClientRect();
    zoomAt(event.deltaY < 0 ? 1.2 : 1 / 1.2, event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  let drag = null;
  viewport.addEventListener("pointerdown", (event) => {
    if (event.target.closest("#zoom-buttons")) return;
    drag = { x: event.clientX - state.x, y: event.clientY - state.y };
    viewport.setPointerCapture(event.pointerId);
    viewport.classList.add("dragging");
  });
  viewport.addEventListener("pointermove", (event) => {
    if (!drag) return;
    state.x = event.clientX - drag.x;
    state.y = event.clientY - drag.y;
    applyTransform();
  });
  const stop = () => { drag = null; viewport.classList.remove("dragging"); };
  viewport.addEventListener("pointerup", stop);
  viewport.addEventListener("pointercancel", stop);
  viewport.addEventListener("dblclick", layoutStage);
  const centre = () => { const b = viewport.getBoundingClientRect(); return [b.width / 2, b.height / 2]; };
  $("zoom-in").addEventListener("click", () => zoomAt(1.5, ...centre()));
  $("zoom-out").addEventListener("click", () => zoomAt(1 / 1.5, ...centre()));
  $("zoom-fit").addEventListener("click", layoutStage);
  window.addEventListener("resize", layoutStage);
}

// ---- wiring -------------------------------------------------------------------------------------------

$("opacity").addEventListener("input", (event) => { $("map").style.opacity = event.target.value; });
$("pipeline").addEventListener("change", (event) => {
  $("steps").value = event.target.value === "v2" ? "512" : "256_512_768";
});
$("query-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (query && state.image && !state.busy) localise(query);
});
setUpViewer();
loadImages().catch((error) => setStatus(`cannot list the images: ${error.message}`, { error: true }));
