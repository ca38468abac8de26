// SeLo explorer page: plain JS, everything from this server (see predict/web/app.py for the API).
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
const CLIENT = sessionStorage.getItem("selo-client") || Math.random().toString(36).slice(2, 14);
sessionStorage.setItem("selo-client", CLIENT);

// One image at a time: ``generation`` changes whenever the image changes, and any answer that arrives for
// an older generation (or another image) is dropped.
const state = { images: [], image: null, generation: 0, job: null, answer: null, compare: null,
                zoom: 1, x: 0, y: 0, fit: 1, busy: false, selectedPeak: -1, dropped: 0 };

function setStatus(text, { error = false, progress = null } = {}) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
  $("progress").hidden = progress === null;
  if (progress !== null) { $("progress").max = progress.total || 1; $("progress").value = progress.done || 0; }
}

// ---- requests -----------------------------------------------------------------------------------------

async function call(method, url, body) {
  const options = { method, headers: { "X-Selo-Client": CLIENT } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.detail || response.statusText);
  return { status: response.status, answer };
}

function pendingMessage(job) {
  return job.status === "queued" ? `Queued: position ${job.position} (waiting for the encoder)` : job.message;
}

// POST, then while the answer is a job (202) show its place and progress and poll it. Returns the answer,
// or null when the job was cancelled or the page moved to another image meanwhile (the job is withdrawn).
// The Cancel button withdraws ``state.job``: a poll that finds another job there stops.
async function untilDone(url, body, generation) {
  let { status, answer } = await call("POST", url, body);
  const job = status === 202 ? answer.job : null;
  while (status === 202) {
    if (generation !== state.generation) return dropped(job);
    state.job = job;
    $("cancel").hidden = false;
    setStatus(pendingMessage(answer), { progress: answer });
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (generation !== state.generation) return dropped(job);
    if (state.job !== job) { withdraw(job); return null; }
    ({ status, answer } = await call("GET", `/api/jobs/${job}`));
  }
  if (job !== null && state.job === job) { state.job = null; $("cancel").hidden = true; }
  if (answer.status === "cancelled") { setStatus("Cancelled."); return null; }
  return generation === state.generation ? answer : dropped(null);
}

// An answer (or a job) for an image the page has left: withdrawn, and counted on <html data-dropped-answers>,
// the event the browser tests wait for.
function dropped(job) {
  withdraw(job);
  document.documentElement.dataset.droppedAnswers = String(++state.dropped);
  return null;
}

function withdraw(job) {
  if (job) call("DELETE", `/api/jobs/${job}`).catch(() => {});
}

function requestBody(extra) {
  return { image: state.image.name, pipeline: $("pipeline").value, steps: $("steps").value.trim() || null, ...extra };
}

// ---- images -------------------------------------------------------------------------------------------

async function loadImages() {
  const { answer } = await call("GET", "/api/images");
  state.images = answer.images;
  const list = $("images");
  list.replaceChildren();
  for (const image of answer.images) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.name = image.name;
    button.setAttribute("aria-pressed", String(state.image !== null && state.image.name === image.name));
    const thumb = document.createElement("img");
    thumb.src = `/api/image?name=${encodeURIComponent(image.name)}&side=160`;
    thumb.alt = "";
    const text = document.createElement("span");
    text.className = "text";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = image.width ? `${image.width} × ${image.height}` : image.error || "";
    if (image.cached) {
      const cached = document.createElement("span");
      cached.className = "cached";
      cached.textContent = " · cached";
      meta.append(cached);
    }
    text.append(name, document.createElement("br"), meta);
    button.append(thumb, text);
    button.addEventListener("click", () => selectImage(image));
    item.append(button);
    list.append(item);
  }
  return answer.images;
}

// Everything about the previous image goes at once; the query box waits until this image is ready.
function clearImage() {
  state.answer = null;
  state.compare = null;
  state.selectedPeak = -1;
  for (const id of ["map", "map-b"]) { $(id).hidden = true; $(id).removeAttribute("src"); }
  $("markers").replaceChildren();
  $("peaks").replaceChildren();
  $("regions").replaceChildren();
  $("downloads").hidden = true;
  $("score").hidden = $("unknown").hidden = true;
  $("threshold").disabled = $("compare").disabled = $("export").disabled = true;
  $("threshold").value = 1;
  $("threshold-value").textContent = "off";
  $("swipe-row").hidden = $("swipe-line").hidden = true;
  $("query").disabled = $("go").disabled = true;
}

async function selectImage(image, { restore = null } = {}) {
  withdraw(state.job);
  state.job = null;
  const generation = ++state.generation;
  state.image = image;
  clearImage();
  for (const button of $("images").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.name === image.name));
  }
  renderHistory();
  const scene = $("scene");
  scene.src = `/api/image?name=${encodeURIComponent(image.name)}&side=2048`;
  layoutStage();
  setStatus(`Preparing ${image.name}…`, { progress: { done: 0, total: 0 } });
  try {
    const answer = await untilDone("/api/encode", requestBody({}), generation);
    if (answer === null) return;
    state.image = { ...image, geo: answer.geo };
    setStatus(`${image.name}: ${answer.width} × ${answer.height}, tiles ready` +
              (answer.tiles_encoded ? ` (${answer.tiles_encoded} encoded now)` : "") + ". Type a query.");
    if (answer.tiles_encoded) loadImages();
  } catch (error) {
    if (generation === state.generation) setStatus(error.message, { error: true });
    return;
  }
  $("query").disabled = $("go").disabled = false;
  updateOverlays();
  if (restore && restore.query) {
    $("query").value = restore.query;
    await localise(restore.query, restore.view);
  } else {
    $("query").focus();
  }
}

// ---- queries ------------------------------------------------------------------------------------------

// The map of ``query`` on the current image; ``view`` (as in the URL) restores a zoom and centre.
async function localise(query, view = null) {
  const generation = state.generation;
  state.busy = true;
  $("go").disabled = true;
  setStatus(`Localising “${query}”…`);
  const started = performance.now();
  try {
    const answer = await untilDone("/api/localise", requestBody({ query }), generation);
    if (answer === null || answer.image !== state.image.name) return;  // the page moved on
    const map = $("map");
    map.src = answer.map_url;
    await map.decode();
    if (generation !== state.generation) return;
    map.hidden = false;
    state.answer = answer;
    state.selectedPeak = -1;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    setStatus(`“${answer.query}”: map in ${seconds} s, ${answer.peaks.length} peak(s), scene score ` +
              `${formatScore(answer.scene_score)}.`);
    showAnswer(answer);
    remember(answer);
    if (view) applyView(view);
    saveView();
  } catch (error) {
    if (generation === state.generation) setStatus(error.message, { error: true });
  } finally {
    state.busy = false;
    $("go").disabled = $("query").disabled;
  }
}

const formatScore = (score) => (score === null ? "n/a" : score.toPrecision(3));

function showAnswer(answer) {
  $("score").hidden = false;
  $("score").textContent = `Scene score ${formatScore(answer.scene_score)}: the best raw mean tile score, ` +
    "comparable across queries and images (the map itself is scaled to 0-1 within this image).";
  $("unknown").hidden = !answer.unknown_words.length;
  $("unknown").textContent = `Unknown to the encoder (read as <unk>): ${answer.unknown_words.join(", ")}`;
  const list = $("peaks");
  list.replaceChildren();
  answer.peaks.forEach((peak, index) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    const where = peak.lon === undefined ? `x ${peak.x}, y ${peak.y}` :
      `${peak.lat.toFixed(5)}°, ${peak.lon.toFixed(5)}° (x ${peak.x}, y ${peak.y})`;
    button.textContent = `${where}, p = ${peak.probability.toFixed(2)}`;
    button.addEventListener("click", () => selectPeak(index));
    item.append(button);
    list.append(item);
  });
  $("downloads").hidden = false;
  $("threshold").disabled = $("compare").disabled = $("export").disabled = false;
  renderCompareChoices();
  drawRegions();
  updateOverlays();
}

function selectPeak(index) {
  const answer = state.answer;
  const peak = answer.peaks[index];
  state.selectedPeak = index;
  $("peaks").querySelectorAll("button").forEach((b, i) => b.setAttribute("aria-current", String(i === index)));
  zoomTo(peak.x / answer.width, peak.y / answer.height, 4);
}

// ---- history (kept in this browser, per image) --------------------------------------------------------

const historyKey = () => `selo-history:${state.image.name}`;
const readHistory = () => JSON.parse(localStorage.getItem(historyKey()) || "[]");
const sameRequest = (a, b) => a.query === b.query && a.pipeline === b.pipeline && a.steps === b.steps;

function remember(answer) {
  const entry = { query: answer.query, pipeline: answer.pipeline, steps: answer.steps.join("_"),
                  score: answer.scene_score, result: answer.result };
  const history = readHistory().filter((h) => !sameRequest(h, entry));
  history.unshift(entry);
  localStorage.setItem(historyKey(), JSON.stringify(history.slice(0, 50)));
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const entry of readHistory()) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.append(`${entry.query} `);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `(scene score ${formatScore(entry.score ?? null)}, ${entry.pipeline} ${entry.steps})`;
    button.append(score);
    button.addEventListener("click", () => {
      if (state.busy || $("query").disabled) return;
      $("query").value = entry.query;
      $("pipeline").value = entry.pipeline;
      $("steps").value = entry.steps;
      localise(entry.query);
    });
    item.append(button);
    list.append(item);
  }
  renderCompareChoices();
}

// ---- compare (swipe), regions, downloads, export ------------------------------------------------------

function renderCompareChoices() {
  const select = $("compare");
  select.replaceChildren(new Option("(none)", ""));
  if (!state.image) return;
  for (const entry of readHistory()) {
    if (state.answer && entry.result === state.answer.result) continue;
    select.append(new Option(`${entry.query} (${entry.pipeline} ${entry.steps})`, JSON.stringify(entry)));
  }
}

async function compareWith(value) {
  const generation = state.generation;
  if (!value) {
    state.compare = null;
    $("map-b").hidden = $("swipe-row").hidden = $("swipe-line").hidden = true;
    return;
  }
  const entry = JSON.parse(value);
  const body = { image: state.image.name, pipeline: entry.pipeline, steps: entry.steps, query: entry.query };
  try {
    const answer = await untilDone("/api/localise", body, generation);
    if (answer === null || answer.image !== state.image.name) return;
    $("map-b").src = answer.map_url;
    await $("map-b").decode();
    state.compare = answer;
    $("map-b").hidden = $("swipe-row").hidden = $("swipe-line").hidden = false;
    setStatus(`Left of the line: “${state.answer.query}”; right: “${answer.query}” ` +
              `(scene scores ${formatScore(state.answer.scene_score)} and ${formatScore(answer.scene_score)}).`);
    updateOverlays();
  } catch (error) {
    setStatus(error.message, { error: true });
  }
}

let regionsTimer = null;
function drawRegions() {
  clearTimeout(regionsTimer);
  const threshold = Number($("threshold").value);
  $("threshold-value").textContent = threshold >= 1 ? "off" : threshold.toFixed(2);
  const svg = $("regions");
  if (!state.answer || threshold >= 1) { svg.replaceChildren(); return; }
  const answer = state.answer;
  regionsTimer = setTimeout(async () => {
    const { answer: regions } = await call("GET", `/api/regions?result=${answer.result}&threshold=${threshold}`);
    if (state.answer !== answer) return;
    svg.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.replaceChildren(...regions.outlines.map((ring) => {
      const polygon = document.createElementNS("http://www.w3.org/2000/svg", "polygon");
      polygon.setAttribute("points", ring.map(([x, y]) => `${x},${y}`).join(" "));
      return polygon;
    }));
    setStatus(`${regions.outlines.length} region(s) where the map is at least ${threshold.toFixed(2)}.`);
  }, 120);
}

// Fetch a download with a progress bar, then save it under the name made of the image and the query.
async function download(kind) {
  const { url, filename } = state.answer.downloads[kind];
  const bar = $("download-progress");
  bar.hidden = false;
  bar.removeAttribute("value");
  setStatus(`Preparing ${filename} (the full-resolution map is computed on first download)…`);
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error((await response.json()).detail || response.statusText);
    const total = Number(response.headers.get("Content-Length")) || 0;
    const reader = response.body.getReader();
    const chunks = [];
    let received = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      received += value.length;
      if (total) { bar.max = total; bar.value = received; }
      setStatus(`Downloading ${filename}: ${(received / 1e6).toFixed(1)}` + (total ? ` of ${(total / 1e6).toFixed(1)} MB` : " MB"));
    }
    saveBlob(new Blob(chunks), filename);
    setStatus(`Saved ${filename}.`);
  } catch (error) {
    setStatus(`${filename}: ${error.message}`, { error: true });
  } finally {
    bar.hidden = true;
  }
}

function saveBlob(blob, filename) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

// The view as the screen shows it (image, maps, regions, markers, scale bar) as a PNG.
function exportView() {
  const box = $("viewport").getBoundingClientRect();
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(box.width);
  canvas.height = Math.round(box.height);
  const context = canvas.getContext("2d");
  context.fillStyle = "#333";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const { width, height } = state.image;
  const scale = state.fit * state.zoom;
  context.setTransform(scale, 0, 0, scale, state.x, state.y);
  context.drawImage($("scene"), 0, 0, width, height);
  context.globalAlpha = Number($("opacity").value);
  if (!$("map").hidden) context.drawImage($("map"), 0, 0, width, height);
  if (state.compare) {
    const split = (Number($("swipe").value) / 100) * width;
    context.save();
    context.beginPath();
    context.rect(split, 0, width - split, height);
    context.clip();
    context.drawImage($("map-b"), 0, 0, width, height);
    context.restore();
  }
  context.globalAlpha = 1;
  context.strokeStyle = "#fff";
  context.lineWidth = 2 / scale;
  for (const polygon of $("regions").querySelectorAll("polygon")) {
    const points = polygon.getAttribute("points").split(" ").map((p) => p.split(",").map(Number));
    context.beginPath();
    points.forEach(([x, y], i) => (i ? context.lineTo(x, y) : context.moveTo(x, y)));
    context.closePath();
    context.stroke();
  }
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.font = "bold 12px sans-serif";
  context.textAlign = "center";
  context.textBaseline = "middle";
  for (const marker of $("markers").children) {
    const x = parseFloat(marker.style.left), y = parseFloat(marker.style.top);
    context.fillStyle = "#a0c";
    context.beginPath();
    context.arc(x, y, 11, 0, 2 * Math.PI);
    context.fill();
    context.strokeStyle = "#fff";
    context.stroke();
    context.fillStyle = "#fff";
    context.fillText(marker.textContent, x, y);
  }
  if (!$("scalebar").hidden) {
    const bar = $("scalebar-bar").getBoundingClientRect();
    context.fillStyle = "#fff";
    context.fillRect(8, canvas.height - 30, bar.width + 12, 22);
    context.fillStyle = "#222";
    context.fillRect(14, canvas.height - 14, bar.width, 3);
    context.textAlign = "left";
    context.fillText($("scalebar-label").textContent, 14, canvas.height - 22);
  }
  const name = `${stem(state.image.name)}_${stem(state.answer ? state.answer.query : "view")}_view.png`;
  canvas.toBlob((blob) => { saveBlob(blob, name); setStatus(`Saved ${name}.`); }, "image/png");
}

const stem = (text) => text.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_").replace(/^[_.]+|[_.]+$/g, "").slice(0, 40) || "x";

// ---- zoom, pan, markers, scale bar, cursor ------------------------------------------------------------

function layoutStage() {
  if (!state.image || !state.image.width) return;
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

// The view as zoom and the image point at the viewport's centre (fractions of width and height).
function currentView() {
  const box = $("viewport").getBoundingClientRect();
  const size = state.fit * state.zoom;
  return { zoom: state.zoom, fx: (box.width / 2 - state.x) / (size * state.image.width),
           fy: (box.height / 2 - state.y) / (size * state.image.height) };
}

function applyView(view) {
  layoutStage();
  zoomTo(view.fx, view.fy, view.zoom);
}

function applyTransform() {
  $("stage").style.transform = `translate(${state.x}px, ${state.y}px) scale(${state.zoom})`;
  updateOverlays();
  saveViewSoon();
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
  const size = state.fit * zoom;
  state.zoom = zoom;
  state.x = box.width / 2 - fx * state.image.width * size;
  state.y = box.height / 2 - fy * state.image.height * size;
  applyTransform();
}

// Markers, swipe line and scale bar in screen coordinates: a marker near or beyond the view's edge is kept
// inside it (drawn dashed), so every peak stays visible and clickable.
function updateOverlays() {
  const box = $("viewport").getBoundingClientRect();
  const size = state.fit * state.zoom;
  const markers = $("markers");
  markers.replaceChildren();
  if (state.answer) {
    state.answer.peaks.forEach((peak, index) => {
      const x = state.x + peak.x * size, y = state.y + peak.y * size;
      const cx = Math.min(box.width - 14, Math.max(14, x)), cy = Math.min(box.height - 14, Math.max(14, y));
      const marker = document.createElement("button");
      marker.type = "button";
      marker.className = "marker";
      marker.classList.toggle("selected", index === state.selectedPeak);
      marker.classList.toggle("clamped", cx !== x || cy !== y);
      marker.textContent = peak.rank;
      marker.setAttribute("aria-label", `peak ${peak.rank}, p = ${peak.probability.toFixed(2)}: zoom to it`);
      marker.style.left = `${cx}px`;
      marker.style.top = `${cy}px`;
      marker.addEventListener("pointerdown", (event) => event.stopPropagation());
      marker.addEventListener("click", () => selectPeak(index));
      markers.append(marker);
    });
  }
  if (state.compare) {
    const split = Number($("swipe").value) / 100;
    $("map-b").style.clipPath = `inset(0 0 0 ${split * 100}%)`;
    $("swipe-line").style.left = `${state.x + split * state.image.width * size}px`;
  }
  updateScaleBar(size);
}

function updateScaleBar(size) {
  const image = state.image;
  if (!image || !image.width) { $("scalebar").hidden = true; return; }
  const geo = image.geo;
  const perScreenPixel = (geo ? geo.metres_per_pixel : 1) / size;  // metres (or image pixels) per CSS pixel
  const target = 100 * perScreenPixel;
  const power = 10 ** Math.floor(Math.log10(target));
  const nice = [5, 2, 1].map((m) => m * power).find((length) => length <= target) || power;
  $("scalebar-bar").style.width = `${nice / perScreenPixel}px`;
  $("scalebar-label").textContent = geo ? (nice >= 1000 ? `${nice / 1000} km` : `${nice} m`) : `${nice} px`;
  $("scalebar").hidden = false;
}

function showCursor(event) {
  const image = state.image;
  if (!image || !image.width) return;
  const box = $("viewport").getBoundingClientRect();
  const size = state.fit * state.zoom;
  const x = (event.clientX - box.left - state.x) / size, y = (event.clientY - box.top - state.y) / size;
  if (x < 0 || y < 0 || x >= image.width || y >= image.height) { $("cursor").textContent = ""; return; }
  let text = `x ${Math.floor(x)}, y ${Math.floor(y)}`;
  if (image.geo) {
    const { lon, lat } = image.geo;
    const at = (c) => c[0] + c[1] * x + c[2] * y;
    text = `lon ${at(lon).toFixed(6)}°, lat ${at(lat).toFixed(6)}° (${text})`;
  }
  $("cursor").textContent = text;
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
    showCursor(event);
    if (!drag) return;
    state.x = event.clientX - drag.x;
    state.y = event.clientY - drag.y;
    applyTransform();
  });
  viewport.addEventListener("pointerleave", () => { $("cursor").textContent = ""; });
  const stop = () => { drag = null; viewport.classList.remove("dragging"); };
  viewport.addEventListener("pointerup", stop);
  viewport.addEventListener("pointercancel", stop);
  viewport.addEventListener("dblclick", layoutStage);
  const centre = () => { const b = viewport.getBoundingClientRect(); return [b.width / 2, b.height / 2]; };
  viewport.addEventListener("keydown", (event) => {
    if (event.target !== viewport) return;
    const pan = { ArrowLeft: [60, 0], ArrowRight: [-60, 0], ArrowUp: [0, 60], ArrowDown: [0, -60] }[event.key];
    if (pan) { state.x += pan[0]; state.y += pan[1]; applyTransform(); }
    else if (event.key === "+" || event.key === "=") zoomAt(1.5, ...centre());
    else if (event.key === "-") zoomAt(1 / 1.5, ...centre());
    else if (event.key === "0") layoutStage();
    else return;
    event.preventDefault();
  });
  $("zoom-in").addEventListener("click", () => zoomAt(1.5, ...centre()));
  $("zoom-out").addEventListener("click", () => zoomAt(1 / 1.5, ...centre()));
  $("zoom-fit").addEventListener("click", layoutStage);
  $("export").addEventListener("click", exportView);
  window.addEventListener("resize", () => { if (state.image && state.image.width) applyView(currentView()); });
}

// ---- the URL (and the last map, kept for a reload) ----------------------------------------------------

function viewState() {
  if (!state.image || !state.answer) return null;
  const view = currentView();
  const parameters = new URLSearchParams({ image: state.image.name, query: state.answer.query,
    pipeline: state.answer.pipeline, steps: state.answer.steps.join("_"),
    view: [view.zoom, view.fx, view.fy].map((v) => v.toFixed(4)).join(",") });
  return parameters.toString();
}

function saveView() {
  const saved = viewState();
  if (saved === null) return;
  history.replaceState(null, "", `#${saved}`);
  localStorage.setItem("selo-last", saved);
}

let viewTimer = null;
function saveViewSoon() { clearTimeout(viewTimer); viewTimer = setTimeout(saveView, 300); }

function restoreFrom(text) {
  const parameters = new URLSearchParams(text);
  const image = state.images.find((i) => i.name === parameters.get("image"));
  if (!image || !image.width) return false;
  if (parameters.get("pipeline")) $("pipeline").value = parameters.get("pipeline") === "v2" ? "v2" : "v1";
  if (parameters.get("steps")) $("steps").value = parameters.get("steps");
  const [zoom, fx, fy] = (parameters.get("view") || "").split(",").map(Number);
  const view = [zoom, fx, fy].every(Number.isFinite) && zoom > 0 ? { zoom, fx, fy } : null;
  selectImage(image, { restore: { query: parameters.get("query"), view } });
  return true;
}

// ---- wiring -------------------------------------------------------------------------------------------

$("opacity").addEventListener("input", (event) => {
  $("map").style.opacity = $("map-b").style.opacity = event.target.value;
});
$("threshold").addEventListener("input", drawRegions);
$("compare").addEventListener("change", (event) => compareWith(event.target.value));
$("swipe").addEventListener("input", updateOverlays);
$("download-probmap").addEventListener("click", () => download("probmap"));
$("download-peaks").addEventListener("click", () => download("peaks"));
$("cancel").addEventListener("click", () => {
  const job = state.job;
  state.job = null;
  $("cancel").hidden = true;
  if (job) call("DELETE", `/api/jobs/${job}`).then(() => setStatus("Cancelled.")).catch(() => {});
});
$("pipeline").addEventListener("change", (event) => {
  $("steps").value = event.target.value === "v2" ? "512" : "256_512_768";
});
$("query-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (query && state.image && !state.busy && !$("query").disabled) localise(query);
});
setUpViewer();
loadImages()
  .then(() => restoreFrom(location.hash.slice(1)) || restoreFrom(localStorage.getItem("selo-last") || ""))
  .catch((error) => setStatus(`cannot list the images: ${error.message}`, { error: true }));
