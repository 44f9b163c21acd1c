// tegaki's drawing page: draw with mouse, touch or pen (pointer events); the drawing is sent to
// POST /api/predict as a PNG while you draw (one request in flight at a time, debounced), and the
// answer fills the probability bars and "what the network sees". Plain JavaScript, no build step.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 90;

let strokes = [];        // [{size, points: [[x, y], ...]}] in canvas pixels
let current = null;      // the stroke being drawn
let base = null;         // shown under the strokes: a random MNIST test digit {pixels, index, label},
                         // or a photo the person chose {photo: HTMLImageElement, file: Blob}
let classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let inFlight = false, dirty = false, timer = null, generation = 0;

// drawing --------------------------------------------------------------------------------------
function brush() { return Number($("brush").value); }

function paint() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (base && base.pixels) drawBase(base.pixels);
  if (base && base.photo) drawPhoto(base.photo);
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineCap = ctx.lineJoin = "round";
  for (const s of strokes.concat(current ? [current] : [])) {
    const p = s.points;
    if (p.length === 1) {
      ctx.beginPath(); ctx.arc(p[0][0], p[0][1], s.size / 2, 0, 2 * Math.PI); ctx.fill();
      continue;
    }
    ctx.lineWidth = s.size;
    ctx.beginPath(); ctx.moveTo(p[0][0], p[0][1]);
    for (let i = 1; i < p.length; i++) ctx.lineTo(p[i][0], p[i][1]);
    ctx.stroke();
  }
}

function drawBase(pixels) {
  // the 28x28 MNIST digit, white on black, shown enlarged as dark ink on white paper
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const sctx = small.getContext("2d");
  const img = sctx.createImageData(28, 28);
  for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) {
    const v = 255 - pixels[y][x], i = 4 * (y * 28 + x);
    img.data[i] = img.data[i + 1] = img.data[i + 2] = v; img.data[i + 3] = 255;
  }
  sctx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, pad.width, pad.height);
}

function drawPhoto(img) {
  // the whole photo, fitted into the canvas (what is sent is the original file, not this)
  const s = Math.min(pad.width / img.naturalWidth, pad.height / img.naturalHeight);
  const w = img.naturalWidth * s, h = img.naturalHeight * s;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
}

function point(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

pad.addEventListener("pointerdown", (ev) => {
  if (ev.button !== undefined && ev.button > 0) return;
  ev.preventDefault();
  pad.setPointerCapture(ev.pointerId);
  current = { size: brush(), points: [point(ev)] };
  paint();
  schedule();
});
pad.addEventListener("pointermove", (ev) => {
  if (!current) return;
  ev.preventDefault();
  const evs = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
  for (const e of (evs.length ? evs : [ev])) current.points.push(point(e));
  paint();
  schedule();
});
function endStroke() {
  if (!current) return;
  strokes.push(current);
  current = null;
  paint();
  schedule(0);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("lostpointercapture", endStroke);

$("brush").addEventListener("input", () => { $("brush-out").textContent = brush(); });
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
$("random").addEventListener("click", randomDigit);
$("photo").addEventListener("change", () => {
  const file = $("photo").files[0];
  $("photo").value = "";
  if (!file) return;
  const img = new Image();
  img.onload = () => {
    strokes = []; current = null;
    base = { photo: img, file };
    $("truth").textContent = `photo: ${file.name || "camera"} (${img.naturalWidth}×${img.naturalHeight})`;
    paint();
    schedule(0);
  };
  img.onerror = () => {  // the browser cannot show it; the server may still read it
    strokes = []; current = null;
    base = { photo: null, file };
    paint();
    schedule(0);
  };
  img.src = URL.createObjectURL(file);
});
document.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
  if (ev.key === "Escape") clearAll();
});
$("show-steps").addEventListener("change", () => schedule(0));
$("show-features").addEventListener("change", () => schedule(0));

function undo() {
  if (strokes.length) strokes.pop(); else base = null;
  paint();
  schedule(0);
}

function clearAll() {
  strokes = []; current = null; base = null;
  paint();
  schedule(0);
}

function isEmpty() { return !strokes.length && !current && !base; }

// talking to the server ------------------------------------------------------------------------
function schedule(delay = DEBOUNCE_MS) {
  dirty = true;
  if (inFlight) return;               // the answer's arrival schedules the next request
  clearTimeout(timer);
  timer = setTimeout(send, delay);
}

const SEND_SIDE = 140;    // the drawing is sent at half the canvas's resolution: 5x MNIST's, plenty

function canvasBlob() {
  const small = document.createElement("canvas");
  small.width = small.height = SEND_SIDE;
  const sctx = small.getContext("2d");
  sctx.imageSmoothingEnabled = true;
  sctx.imageSmoothingQuality = "high";
  sctx.drawImage(pad, 0, 0, SEND_SIDE, SEND_SIDE);
  return new Promise((resolve) => small.toBlob(resolve, "image/png"));
}

async function body() {
  // a random test digit with nothing drawn over it goes as its own 28x28 pixels; anything else as the PNG
  if (base && !strokes.length && !current) {
    if (base.file) {
      const fd = new FormData();
      fd.append("file", base.file, base.file.name || "photo");
      return { body: fd };
    }
    return { headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels: base.pixels }) };
  }
  const fd = new FormData();
  fd.append("file", await canvasBlob(), "drawing.png");
  return { body: fd };
}

async function send() {
  dirty = false;
  const gen = ++generation;
  if (isEmpty()) { showEmpty("draw a digit"); return; }
  inFlight = true;
  try {
    const steps = $("show-steps").checked;
    const req = await body();
    const res = await fetch(`/api/predict?steps=${steps}`, { method: "POST", ...req });
    const data = await res.json();
    if (gen !== generation && dirty) return;
    if (res.ok) {
      showPrediction(data);
      if ($("show-features").checked) await features(await body());
      else $("features-panel").hidden = true;
      setStatus(`server time ${res.headers.get("X-Process-Time") || "?"} ms`);
    } else if (data.no_digit) {
      showEmpty("no digit");
      setStatus(data.detail);
    } else {
      setStatus(data.detail || `error ${res.status}`, true);
    }
  } catch (err) {
    setStatus(`cannot reach the server (${err.message})`, true);
  } finally {
    inFlight = false;
    if (dirty) { clearTimeout(timer); timer = setTimeout(send, DEBOUNCE_MS); }
  }
}

async function features(req) {
  const res = await fetch("/api/features", { method: "POST", ...req });
  const data = await res.json();
  const box = $("features");
  box.textContent = "";
  if (!res.ok) { $("features-panel").hidden = true; return; }
  for (const layer of data.layers) {
    const scale = Math.max(1, Math.floor(220 / layer.width));
    box.appendChild(figure(layer.png, layer.width * scale,
      `${layer.name} → ${layer.read}: ${layer.shape[0]} maps of ${layer.shape[1]}×${layer.shape[2]}`));
  }
  if (data.note) box.appendChild(document.createTextNode(data.note));
  $("features-panel").hidden = false;
}

async function randomDigit() {
  setStatus("fetching a random MNIST test digit…");
  try {
    const res = await fetch("/api/random");
    const data = await res.json();
    if (!res.ok) { setStatus(data.detail, true); return; }
    strokes = []; current = null;
    base = { index: data.index, label: data.true_label, pixels: data.pixels };
    paint();
    if (data.prediction) showPrediction(data.prediction);
    const ok = data.prediction && data.prediction.label === data.true_label;
    $("truth").textContent = `MNIST test image #${data.index}: true label ${data.true_label}` +
      (data.prediction ? (ok ? " ✓" : " ✗ (a mistake)") : "");
    setStatus("draw over it, or clear");
    if ($("show-steps").checked || $("show-features").checked) schedule(0);
  } catch (err) {
    setStatus(`cannot reach the server (${err.message})`, true);
  }
}

async function save(label) {
  if (isEmpty()) { setStatus("draw a digit first", true); return; }
  try {
    const req = await body();
    const res = await fetch(`/api/save?label=${label}`, { method: "POST", ...req });
    const data = await res.json();
    if (!res.ok) { setStatus(data.detail, true); return; }
    setStatus(`saved as ${data.name} (${data.count} so far): ${data.saved}. ` +
      `Measure the model on your drawings: ${data.use}`);
  } catch (err) {
    setStatus(`cannot reach the server (${err.message})`, true);
  }
}

// showing --------------------------------------------------------------------------------------
function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text || "";
  s.classList.toggle("error", !!error);
}

function buildBars() {
  const ol = $("bars");
  ol.textContent = "";
  classes.forEach((name, i) => {
    const li = document.createElement("li");
    li.dataset.label = i;
    li.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct">–</span>`;
    li.querySelector(".name").textContent = name;
    ol.appendChild(li);
  });
  const sb = $("save-buttons");
  sb.textContent = "";
  classes.forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = name; b.title = `save this drawing as a ${name}`;
    b.addEventListener("click", () => save(i));
    sb.appendChild(b);
  });
}

function showPrediction(p) {
  const lab = $("prediction-label");
  lab.textContent = p.name;
  lab.dataset.label = p.label;
  $("prediction-text").textContent = `${(100 * p.confidence).toFixed(1)}% sure`;
  if (!base || strokes.length) $("truth").textContent = "";
  else if (base.file && !$("truth").textContent) $("truth").textContent = "photo";
  document.querySelectorAll("#bars li").forEach((li, i) => {
    const v = p.probabilities[i] || 0;
    li.querySelector(".fill").style.width = `${(100 * v).toFixed(1)}%`;
    li.querySelector(".pct").textContent = `${(100 * v).toFixed(1)}%`;
    li.classList.toggle("top", i === p.label);
  });
  showSeen(p.input);
  showSteps(p.steps, p.info);
}

function showEmpty(text) {
  const lab = $("prediction-label");
  lab.textContent = "?";
  lab.dataset.label = "";
  $("prediction-text").textContent = text;
  $("truth").textContent = "";
  document.querySelectorAll("#bars li").forEach((li) => {
    li.querySelector(".fill").style.width = "0";
    li.querySelector(".pct").textContent = "–";
    li.classList.remove("top");
  });
  showSeen(null);
  $("steps-panel").hidden = true;
  $("features-panel").hidden = true;
}

function showSeen(input) {
  const sctx = $("seen").getContext("2d");
  const img = sctx.createImageData(28, 28);
  for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) {
    const v = input ? input[y][x] : 0, i = 4 * (y * 28 + x);
    img.data[i] = img.data[i + 1] = img.data[i + 2] = v; img.data[i + 3] = 255;
  }
  sctx.putImageData(img, 0, 0);
}

function figure(src, width, caption) {
  const f = document.createElement("figure");
  const img = new Image();
  img.src = src; img.width = width; img.alt = caption;
  const c = document.createElement("figcaption");
  c.textContent = caption;
  f.append(img, c);
  return f;
}

function showSteps(steps, info) {
  if (!steps) { $("steps-panel").hidden = true; return; }
  const box = $("steps");
  box.textContent = "";
  for (const s of steps) {
    const scale = Math.max(1, Math.floor(112 / Math.max(s.width, s.height)));
    box.appendChild(figure(s.png, s.width * scale, `${s.name} ${s.shape[1]}×${s.shape[0]}`));
  }
  $("steps-info").textContent = info ? Object.entries(info).map(([k, v]) => `${k}: ${v}`).join(" · ") : "";
  $("steps-panel").hidden = false;
}

async function loadModel() {
  try {
    const res = await fetch("/api/model");
    const m = await res.json();
    if (m.classes && m.classes.join() !== classes.join()) { classes = m.classes; buildBars(); }
    const acc = m.metrics && m.metrics.test_accuracy;
    $("model-line").textContent = `Model: ${m.name}` +
      (acc ? `, ${(100 * acc).toFixed(2)}% on the ${m.metrics.dataset || ""} test set.` : ".");
    if (!m.server.mnist) { $("random").disabled = true; $("random").title = m.server.mnist_note || "no MNIST test set"; }
    if (!m.server.drawings) $("save-buttons").querySelectorAll("button").forEach((b) => { b.disabled = true; });
  } catch (err) {
    setStatus(`cannot reach the server (${err.message})`, true);
  }
}

buildBars();
paint();
showSeen(null);
loadModel();
