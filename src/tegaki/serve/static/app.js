// tegaki's drawing page: draw with mouse, touch or pen (pointer events); the drawing is sent to
// POST /api/predict while you draw (one request in flight at a time, debounced), and the answer
// fills the verdict (the calibrated confidence and its status: a digit, "not sure", "not a digit";
// a number of 2+ digits with a box over each), the probability bars, "what the network sees" and,
// when asked, the preprocessing steps and the feature maps (all from that one request).
// The drawing goes as a binary PGM ("P5") made from the canvas's pixels, synchronously: no
// waiting on canvas.toBlob, which takes about a second on a touch screen.
// Every change to the drawing has a number (state.version); a request carries the number of the
// drawing it sent, and an answer for an older drawing is dropped, so what is shown is always the
// current drawing's. Plain JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 90;
const SEND_SIDE = 140;    // the drawing is sent at half the canvas's resolution: 5x MNIST's, enough
                         // for a number of several digits too
const FEATURE_LAYERS = 2; // conv layers whose maps are shown

// everything the page remembers, in one place
const state = {
  pad: null, ctx: null,  // the drawing canvas and its 2-D context
  strokes: [],           // [{size, points: [[x, y], ...]}] in canvas pixels
  current: null,         // the stroke being drawn
  pointer: null,         // the pointer drawing it: a second finger or a palm meanwhile is ignored
  base: null,            // shown under the strokes: a random MNIST test digit {pixels, index, label},
                         // or a photo the person chose {photo: HTMLImageElement or null, file: Blob}
  classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
  inFlight: false, dirty: false, timer: null,
  version: 0,            // the drawing's number: one more at every change
  shown: -1,             // the version whose answer is shown
  waiting: [],           // resolve functions of settled() promises
  boxes: null,           // the digit boxes shown over the drawing, in canvas pixels
};

// talking to the server: every request goes through here ----------------------------------------
async function call(url, options = {}) {
  // -> {res, data}, or null after saying on the page that the server cannot be reached
  try {
    const res = await fetch(url, options);
    return { res, data: await res.json() };
  } catch (err) {
    setStatus(`cannot reach the server (${err.message})`, true);
    return null;
  }
}

// 28x28 images ------------------------------------------------------------------------------------
function grid28(pixels, invert = false) {
  // a 28x28 canvas of grey levels (rows of 0..255; null: black), inverted for ink on paper
  const c = document.createElement("canvas");
  c.width = c.height = 28;
  const g = c.getContext("2d");
  const img = g.createImageData(28, 28);
  for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) {
    const v = pixels ? pixels[y][x] : 0, i = 4 * (y * 28 + x);
    img.data[i] = img.data[i + 1] = img.data[i + 2] = invert ? 255 - v : v;
    img.data[i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  return c;
}

// drawing --------------------------------------------------------------------------------------
function brush() { return Number($("brush").value); }

function paint() {
  const { pad, ctx, base } = state;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.imageSmoothingEnabled = true;
  if (base && base.pixels) ctx.drawImage(grid28(base.pixels, true), 0, 0, pad.width, pad.height);
  if (base && base.photo) drawPhoto(base.photo);
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineCap = ctx.lineJoin = "round";
  for (const s of state.strokes.concat(state.current ? [state.current] : [])) {
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

function drawPhoto(img) {
  // the whole photo, fitted into the canvas (what is sent is the original file, not this)
  const { pad, ctx } = state;
  const s = Math.min(pad.width / img.naturalWidth, pad.height / img.naturalHeight);
  const w = img.naturalWidth * s, h = img.naturalHeight * s;
  ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
}

function point(ev) {
  const r = state.pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * state.pad.width / r.width, (ev.clientY - r.top) * state.pad.height / r.height];
}

function startStroke(ev) {
  if (ev.button !== undefined && ev.button > 0) return;
  ev.preventDefault();
  if (state.current) return;               // another finger is drawing: this one is a palm or a slip
  state.pad.setPointerCapture(ev.pointerId);
  state.pointer = ev.pointerId;
  state.current = { size: brush(), points: [point(ev)] };
  changed();
}

function extendStroke(ev) {
  if (!state.current || ev.pointerId !== state.pointer) return;
  ev.preventDefault();
  const evs = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
  for (const e of (evs.length ? evs : [ev])) state.current.points.push(point(e));
  changed();
}

function endStroke(ev) {
  if (!state.current || ev.pointerId !== state.pointer) return;
  state.strokes.push(state.current);
  state.current = null;
  state.pointer = null;
  changed(0);
}

function setBase(base) {
  // a new picture under the (cleared) strokes; null clears everything
  state.strokes = []; state.current = null; state.pointer = null; state.base = base;
  changed(null);
}

function changed(delay = DEBOUNCE_MS) {
  // the drawing changed: a new version, painted; sent after `delay` ms (null: not now)
  state.version++;
  state.pad.dataset.version = state.version;
  document.body.classList.add("stale");
  paint();
  if (delay !== null) schedule(delay);
}

function choosePhoto() {
  const file = $("photo").files[0];
  $("photo").value = "";
  if (!file) return;
  const img = new Image();
  img.onload = () => {
    setBase({ photo: img, file });
    $("truth").textContent = `photo: ${file.name || "camera"} (${img.naturalWidth}×${img.naturalHeight})`;
    schedule(0);
  };
  img.onerror = () => { setBase({ photo: null, file }); schedule(0); };  // the server may still read it
  img.src = URL.createObjectURL(file);
}

function undo() {
  if (state.strokes.length) state.strokes.pop(); else state.base = null;
  changed(0);
}

function clearAll() {
  setBase(null);
  schedule(0);
}

function isEmpty() { return !state.strokes.length && !state.current && !state.base; }

// sending the drawing ------------------------------------------------------------------------------
function schedule(delay = DEBOUNCE_MS) {
  // send the drawing within `delay` ms (the earliest of the times asked for since the last send)
  state.dirty = true;
  state.due = Math.min(state.due ?? Infinity, performance.now() + delay);
  if (!state.inFlight) arm();               // else the answer's arrival arms it
}

function arm() {
  // send at state.due: now (not even a timer's delay: a lifted finger's drawing goes at once) or later
  clearTimeout(state.timer);
  const wait = state.due - performance.now();
  if (wait <= 0) send(); else state.timer = setTimeout(send, wait);
}

function canvasPGM() {
  // the canvas reduced to SEND_SIDE x SEND_SIDE grey levels, as a binary PGM: synchronous and fast
  // (getImageData), where canvas.toBlob encodes a PNG in the background and may take a second
  const small = document.createElement("canvas");
  small.width = small.height = SEND_SIDE;
  const sctx = small.getContext("2d", { willReadFrequently: true });
  sctx.imageSmoothingEnabled = true;
  sctx.imageSmoothingQuality = "high";
  sctx.drawImage(state.pad, 0, 0, SEND_SIDE, SEND_SIDE);
  const rgba = sctx.getImageData(0, 0, SEND_SIDE, SEND_SIDE).data;
  const head = new TextEncoder().encode(`P5\n${SEND_SIDE} ${SEND_SIDE}\n255\n`);
  const out = new Uint8Array(head.length + SEND_SIDE * SEND_SIDE);
  out.set(head);
  for (let i = 0, j = head.length; i < rgba.length; i += 4, j++) {
    out[j] = (299 * rgba[i] + 587 * rgba[i + 1] + 114 * rgba[i + 2] + 500) / 1000;  // luma
  }
  return new Blob([out], { type: "image/x-portable-graymap" });
}

function body() {
  // -> {init: fetch options, frame: image pixels -> canvas pixels, or null}. A random test digit
  // with nothing drawn over it goes as its own 28x28 pixels, a photo as its file (the photo is
  // shown fitted into the canvas: drawPhoto), anything else as the canvas's pixels (canvasPGM)
  const { base, pad } = state;
  const fd = new FormData();
  let frame = null;
  if (base && !state.strokes.length && !state.current) {
    if (!base.file) {
      return { init: { headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels: base.pixels }) }, frame };
    }
    fd.append("file", base.file, base.file.name || "photo");
    if (base.photo) frame = photoFrame(base.photo);
  } else {
    fd.append("file", canvasPGM(), "drawing.pgm");
    frame = { scale: pad.width / SEND_SIDE, x: 0, y: 0 };
  }
  return { init: { body: fd }, frame };
}

function photoFrame(img) {
  // where drawPhoto puts the photo: canvas = (x, y) + scale * photo pixels
  const { pad } = state;
  const scale = Math.min(pad.width / img.naturalWidth, pad.height / img.naturalHeight);
  return { scale, x: (pad.width - img.naturalWidth * scale) / 2, y: (pad.height - img.naturalHeight * scale) / 2 };
}

async function send() {
  state.dirty = false;
  state.due = null;
  const seq = state.version;                // the drawing this request is for
  if (isEmpty()) { showEmpty("draw a digit"); settle(seq); return; }
  state.inFlight = true;
  try {
    const features = $("show-features").checked ? FEATURE_LAYERS : 0;
    const url = `/api/predict?steps=${$("show-steps").checked}&features=${features}&seq=${seq}`;
    const { init, frame } = body();
    const answer = await call(url, { method: "POST", ...init });
    if (seq !== state.version) return;     // an older drawing's answer: dropped
    if (answer) showAnswer(answer, frame);
    else showEmpty("no answer");           // the server is down: the last answer was another drawing's
    settle(seq);
  } finally {
    state.inFlight = false;
    if (state.dirty) arm();
  }
}

function showAnswer({ res, data }, frame) {
  if (res.ok) {
    showPrediction(data, frame);
    showFeatures(data.features);
    setStatus(`server time ${res.headers.get("X-Process-Time") || "?"} ms`);
  } else if (data.no_digit) {
    showEmpty("no digit");
    setStatus(data.detail);
  } else {                                 // refused (not an image, too large ...): no answer for this drawing,
    showEmpty("no answer");               // so none is shown, least of all the previous drawing's
    setStatus(data.detail || `error ${res.status}`, true);
  }
}

function settle(seq) {
  // what is shown is now the answer for drawing `seq`
  state.shown = seq;
  $("result-panel").dataset.seq = seq;
  document.body.classList.toggle("stale", seq !== state.version);
  if (seq !== state.version) return;
  for (const resolve of state.waiting.splice(0)) resolve();
}

function settled() {
  // a promise: resolved once the shown answer is the current drawing's
  if (state.shown === state.version && !state.dirty && !state.inFlight) return Promise.resolve();
  if (!state.dirty && !state.inFlight) schedule(0);
  return new Promise((resolve) => state.waiting.push(resolve));
}

async function randomDigit() {
  setStatus("fetching a random MNIST test digit…");
  const asked = state.version;
  const answer = await call("/api/random");
  if (asked !== state.version) { setStatus("random digit dropped: the drawing changed while it came"); return; }
  if (!answer) return;
  const { res, data } = answer;
  if (!res.ok) { setStatus(data.detail, true); return; }
  setBase({ index: data.index, label: data.true_label, pixels: data.pixels });
  if (data.prediction) showPrediction(data.prediction, null); else showEmpty("no digit");
  settle(state.version);
  const ok = data.prediction && data.prediction.label === data.true_label;
  $("truth").textContent = `MNIST test image #${data.index}: true label ${data.true_label}` +
    (data.prediction ? (ok ? " ✓" : " ✗ (a mistake)") : "");
  setStatus("draw over it, or clear");
  if ($("show-steps").checked || $("show-features").checked) schedule(0);
}

async function save(label) {
  // files the current drawing as class `label`, once the page shows that drawing's own prediction;
  // the server reads the same body again and says what it predicted ("predicted")
  if (isEmpty()) { setStatus("draw a digit first", true); return; }
  setStatus("saving…");
  await settled();
  const answer = await call(`/api/save?label=${label}`, { method: "POST", ...body().init });
  if (!answer) return;
  const { res, data } = answer;
  if (!res.ok) { setStatus(data.detail, true); return; }
  const read = state.classes[data.predicted];
  setStatus(`saved as ${data.name} (${data.count} so far; the network reads it as ${read ?? "?"}): ` +
    `${data.saved}. Measure the model on your drawings: ${data.use}`);
}

async function loadModel() {
  const answer = await call("/api/model");
  if (!answer) return;
  const m = answer.data;
  if (m.classes && m.classes.join() !== state.classes.join()) { state.classes = m.classes; buildBars(); }
  const acc = m.metrics && m.metrics.test_accuracy;
  $("model-line").textContent = `Model: ${m.name}` +
    (acc ? `, ${(100 * acc).toFixed(2)}% on the ${m.metrics.dataset || ""} test set.` : ".");
  if (!m.server) return;
  if (!m.server.mnist) { $("random").disabled = true; $("random").title = m.server.mnist_note || "no MNIST test set"; }
  if (!m.server.drawings) $("save-buttons").querySelectorAll("button").forEach((b) => { b.disabled = true; });
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
  const sb = $("save-buttons");
  sb.textContent = "";
  state.classes.forEach((name, i) => {
    const li = document.createElement("li");
    li.dataset.label = i;
    li.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct">–</span>`;
    li.querySelector(".name").textContent = name;
    ol.appendChild(li);
    const b = document.createElement("button");
    b.type = "button"; b.textContent = name; b.title = `save this drawing as a ${name}`;
    b.addEventListener("click", () => save(i));
    sb.appendChild(b);
  });
}

function showBars(probabilities, top) {
  document.querySelectorAll("#bars li").forEach((li, i) => {
    const v = probabilities ? probabilities[i] || 0 : null;
    li.querySelector(".fill").style.width = v === null ? "0" : `${(100 * v).toFixed(1)}%`;
    li.querySelector(".pct").textContent = v === null ? "–" : `${(100 * v).toFixed(1)}%`;
    li.classList.toggle("top", i === top);
  });
}

const STATUS_TEXT = { "not sure": "not sure", "not a digit": "not a digit" };

function showPrediction(p, frame) {
  // the whole image read as one digit, or, when the answer's "number" has 2+ digits, the number
  const lab = $("prediction-label");
  const digits = p.number && p.number.digits && p.number.digits.length >= 2 ? p.number.digits : null;
  const status = p.status || "digit";
  lab.textContent = digits ? p.number.text : p.name;
  lab.dataset.label = p.label;
  lab.dataset.number = digits ? p.number.text : "";
  lab.dataset.status = digits ? "number" : status;
  lab.classList.toggle("number", !!digits);
  $("prediction-text").textContent = digits ? numberText(p.number) : confidenceText(p, status);
  const flag = $("prediction-status");
  flag.textContent = digits ? "" : STATUS_TEXT[status] || "";
  flag.dataset.status = status;
  flag.hidden = !flag.textContent;
  const { base } = state;
  if (!base || state.strokes.length) $("truth").textContent = "";
  else if (base.file && !$("truth").textContent) $("truth").textContent = "photo";
  $("whole-note").hidden = !digits;         // a number: the bars, the 28x28 and the steps are the whole image's
  showBars(p.probabilities, p.label);
  showSeen(p.input);
  showSteps(p.steps, p.info);
  showBoxes(digits, frame);
}

function confidenceText(p, status) {
  // the calibrated confidence is a probability among the classes; under "not sure" or "not a digit"
  // (the drawing is unlike the digits the network learned) it holds only if it is a digit at all
  const pct = `${(100 * p.confidence).toFixed(1)}%`;
  return status === "digit" ? `${pct} sure` : `if it is a digit: ${pct} a ${p.name}`;
}

function numberText(number) {
  // "4 digits: 2 99.3% · 0 98.1% ..." with each digit's calibrated confidence, and its status
  const parts = number.digits.map((d) => `${d.name} ${(100 * d.confidence).toFixed(1)}%` +
    (d.status && d.status !== "digit" ? ` (${d.status})` : ""));
  return `${number.digits.length} digits: ${parts.join(" · ")}` + (number.note ? `. ${number.note}` : "");
}

function showBoxes(digits, frame) {
  // each digit's box over the drawing: image pixels -> canvas pixels through `frame`
  const over = $("boxes"), g = over.getContext("2d");
  g.clearRect(0, 0, over.width, over.height);
  state.boxes = digits && frame ? digits.map((d) => {
    const [x0, y0, x1, y1] = d.box;
    return { x: frame.x + x0 * frame.scale, y: frame.y + y0 * frame.scale,
             w: (x1 - x0) * frame.scale, h: (y1 - y0) * frame.scale, name: d.name, status: d.status || "digit" };
  }) : null;
  over.dataset.boxes = state.boxes ? JSON.stringify(state.boxes.map((b) => [b.x, b.y, b.w, b.h].map(Math.round))) : "";
  if (!state.boxes) return;
  g.lineWidth = 2;
  g.font = "bold 16px system-ui, sans-serif";
  g.textBaseline = "bottom";
  for (const b of state.boxes) {
    const sure = b.status === "digit";
    g.strokeStyle = g.fillStyle = sure ? "#c2410c" : "#5b6575";
    g.setLineDash(sure ? [] : [5, 4]);
    g.strokeRect(b.x, b.y, b.w, b.h);
    g.fillText(b.name, b.x + 2, Math.max(16, b.y - 2));
  }
}

function showEmpty(text) {
  const lab = $("prediction-label");
  lab.textContent = "?";
  lab.dataset.label = "";
  lab.dataset.number = "";
  lab.dataset.status = "";
  lab.classList.remove("number");
  $("prediction-text").textContent = text;
  $("prediction-status").hidden = true;
  $("truth").textContent = "";
  $("whole-note").hidden = true;
  showBars(null, -1);
  showSeen(null);
  showBoxes(null, null);
  $("steps-panel").hidden = true;
  $("features-panel").hidden = true;
}

function showSeen(input) {
  $("seen").getContext("2d").drawImage(grid28(input), 0, 0);
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

function showFeatures(features) {
  if (!features) { $("features-panel").hidden = true; return; }
  const box = $("features");
  box.textContent = "";
  for (const layer of features.layers) {
    const scale = Math.max(1, Math.floor(220 / layer.width));
    box.appendChild(figure(layer.png, layer.width * scale,
      `${layer.name} → ${layer.read}: ${layer.shape[0]} maps of ${layer.shape[1]}×${layer.shape[2]}`));
  }
  if (features.note) box.appendChild(document.createTextNode(features.note));
  $("features-panel").hidden = false;
}

// start -----------------------------------------------------------------------------------------
function init() {
  state.pad = $("pad");
  state.ctx = state.pad.getContext("2d");
  const pad = state.pad;
  pad.addEventListener("pointerdown", startStroke);
  pad.addEventListener("pointermove", extendStroke);
  for (const ev of ["pointerup", "pointercancel", "lostpointercapture"]) pad.addEventListener(ev, endStroke);
  $("brush").addEventListener("input", () => { $("brush-out").textContent = brush(); });
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearAll);
  $("random").addEventListener("click", randomDigit);
  $("photo").addEventListener("change", choosePhoto);
  $("show-steps").addEventListener("change", () => schedule(0));
  $("show-features").addEventListener("change", () => schedule(0));
  document.addEventListener("keydown", (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
    if (ev.key === "Escape") clearAll();
  });
  buildBars();
  paint();
  showSeen(null);
  loadModel();
}

init();
