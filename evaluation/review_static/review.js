// realgap review queue: plain DOM, no framework, no network access beyond this server.
"use strict";

const state = {queue: null, episode: null, detail: null, chunks: null, t: 0, maxT: 0, timer: null};
const $ = (id) => document.getElementById(id);

function fmt(x, digits = 3) {
  return x === null || x === undefined ? "–" : Number(x).toPrecision(digits);
}

function rate(label, iv, k, n, unsure) {
  if (iv.estimate === null) return `${label}: ${k}/${n} (nothing decided yet)`;
  return `${label}: ${k}/${n} = ${iv.estimate.toFixed(2)} [${iv.low.toFixed(2)}, ${iv.high.toFixed(2)}] (Wilson 95%; ${unsure} unsure)`;
}

function outcomeText(e) {
  if (e.success === null || e.success === undefined) return `outcome unknown ${e.termination_reason || ""}`;
  return e.success ? "success" : `failure (${e.termination_reason || "?"})`;
}

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ------------------------------------------------------------------------------- queue and summary
function renderSummary(s) {
  const f = s.flagged, m = s.sample;
  $("summary").innerHTML = "";
  const p1 = document.createElement("div");
  p1.id = "precision";
  p1.textContent = rate("flagger precision (real failures / decided flagged)", s.precision,
    f.real_failure, f.real_failure + f.benign, f.unsure) + ` · reviewed ${f.reviewed}/${f.in_queue} flagged`;
  const p2 = document.createElement("div");
  p2.id = "unflagged-rate";
  p2.textContent = rate("real failures in the unflagged sample", s.unflagged_failure_rate,
    m.real_failure, m.real_failure + m.benign, m.unsure) + ` · reviewed ${m.reviewed}/${m.in_queue} sampled`;
  $("summary").append(p1, p2);
}

function renderQueue() {
  const q = state.queue;
  $("suite-name").textContent = q.suite;
  const c = q.calibration;
  $("calibration").textContent = `score ${c.score || "?"} · threshold ${fmt(c.threshold, 4)} · α = ${c.alpha ?? "?"}` +
    ` · n = ${c.n ?? "?"} · ${q.n_flagged}/${q.n_scored} episodes flagged`;
  renderSummary(q.summary);
  const body = $("queue").querySelector("tbody");
  body.innerHTML = "";
  for (const item of q.items) {
    const tr = document.createElement("tr");
    tr.id = `item-${item.episode}`;
    tr.dataset.episode = item.episode;
    const cells = [item.position + 1, item.kind, item.condition, item.seed, fmt(item.score),
      outcomeText(item), (item.verdict || "").replace("_", " ")];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = `kind-${item.kind}`;
      if (i === 6) { td.className = `verdict-cell v-${item.verdict}`; }
      tr.append(td);
    });
    tr.addEventListener("click", () => select(item.episode));
    if (item.episode === state.episode) tr.classList.add("current");
    body.append(tr);
  }
}

async function loadQueue() {
  state.queue = await api("/api/queue");
  renderQueue();
  const m = location.hash.match(/episode=(\d+)/);
  const wanted = m ? Number(m[1]) : null;
  const first = state.queue.items.find((i) => i.episode === wanted) || state.queue.items[0];
  if (first) await select(first.episode);
}

// ------------------------------------------------------------------------------------- one episode
async function select(episode) {
  stop();
  state.episode = episode;
  history.replaceState(null, "", `#episode=${episode}`);
  for (const tr of $("queue").querySelectorAll("tbody tr")) {
    tr.classList.toggle("current", Number(tr.dataset.episode) === episode);
  }
  const d = await api(`/api/episode/${episode}`);
  if (state.episode !== episode) return;  // the reviewer moved on while this loaded
  state.detail = d;
  state.chunks = d.has_chunks ? await api(`/api/episode/${episode}/chunks`) : null;
  $("detail").hidden = false;
  $("title").textContent = `#${d.position + 1} · episode ${d.episode} · ${d.condition} seed ${d.seed} · ` +
    `${d.kind === "flagged" ? "flagged" : "unflagged (random sample)"} · score ${fmt(d.score)}`;
  $("instruction").textContent = `task: “${d.instruction || "?"}”`;
  $("outcome").textContent = `outcome: ${outcomeText(d)} after ${d.length ?? "?"} steps` +
    (d.alarm_step !== null ? ` · alarm at step ${d.alarm_step}` : " · no alarm") +
    (d.failure_step !== null && d.failure_step !== undefined ? ` · failure event at step ${d.failure_step}` : "") +
    (d.error ? ` · error: ${d.error}` : "");
  $("params").textContent = JSON.stringify({task: d.task, dr_params: d.dr_params}, null, 1);
  const lastStep = Math.max(d.length || 0, ...d.trace.map((p) => p[0]));
  state.maxT = d.n_frames > 0 ? d.n_frames - 1 : lastStep;
  $("frame-slider").max = state.maxT;
  $("frame").hidden = d.n_frames === 0;
  $("no-frames").hidden = d.n_frames > 0;
  $("no-frames").textContent = "No frames stored for this episode (suite.record_frames keeps them for " +
    "failures, or for none); the trace and chunks are still shown.";
  $("video").innerHTML = "";
  if (d.report_video) {
    const a = document.createElement("a");
    a.href = `/files/${d.report_video}`;
    a.textContent = `report video (${d.report_video})`;
    $("video").append(a);
  }
  showVerdict(d.verdict);
  $("note").value = d.verdict ? d.verdict.note : "";
  $("save-status").textContent = d.verdict ? `saved ${d.verdict.time}` : "not reviewed yet";
  $("save-status").className = "";
  seek(d.alarm_step !== null ? Math.min(d.alarm_step, state.maxT) : 0);
}

function showVerdict(v) {
  for (const b of document.querySelectorAll("button.verdict")) {
    const on = !!v && b.dataset.verdict === v.verdict;
    b.classList.toggle("selected", on);
    b.setAttribute("aria-pressed", on ? "true" : "false");
  }
}

function seek(t) {
  const d = state.detail;
  state.t = Math.max(0, Math.min(state.maxT, Math.round(t)));
  $("frame-slider").value = state.t;
  $("step-label").textContent = `step ${state.t} / ${state.maxT}`;
  if (d.n_frames > 0) {
    $("frame").src = `/api/episode/${d.episode}/frame/${state.t}.png`;
    $("frame").classList.toggle("alarm", d.alarm_step !== null && state.t >= d.alarm_step);
  }
  drawTrace();
  drawChunks();
}

function play() {
  if (state.timer) return stop();
  $("play").textContent = "pause";
  if (state.t >= state.maxT) seek(0);
  state.timer = setInterval(() => (state.t >= state.maxT ? stop() : seek(state.t + 1)), 100);
}

function stop() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  $("play").textContent = "play";
}

// -------------------------------------------------------------------------------------------- plots
function drawTrace() {
  const d = state.detail, cv = $("trace"), g = cv.getContext("2d");
  const W = cv.width, H = cv.height, L = 40, R = 10, T = 10, B = 22;
  g.clearRect(0, 0, W, H);
  const thr = state.queue.calibration.threshold;
  const scores = d.trace.map((p) => p[1]).filter((s) => s !== null);
  const ymax = Math.max(1e-9, ...scores, thr ?? 0) * 1.1;
  const xmax = Math.max(1, state.maxT);
  const X = (s) => L + (W - L - R) * s / xmax, Y = (v) => H - B - (H - B - T) * v / ymax;
  g.strokeStyle = "#999"; g.lineWidth = 1;
  g.strokeRect(L, T, W - L - R, H - T - B);
  g.fillStyle = "#444"; g.font = "11px sans-serif";
  g.fillText(fmt(ymax, 2), 2, T + 8); g.fillText("0", 2, H - B);
  g.fillText("env step", W / 2 - 20, H - 6); g.fillText(String(xmax), W - R - 20, H - 6);
  if (thr !== null && thr !== undefined) {
    g.setLineDash([5, 4]); g.strokeStyle = "#888";
    g.beginPath(); g.moveTo(L, Y(thr)); g.lineTo(W - R, Y(thr)); g.stroke(); g.setLineDash([]);
    g.fillText("threshold", W - R - 55, Y(thr) - 3);
  }
  const vline = (s, color, label) => {
    g.strokeStyle = color; g.fillStyle = color; g.lineWidth = 2;
    g.beginPath(); g.moveTo(X(s), T); g.lineTo(X(s), H - B); g.stroke();
    if (label) g.fillText(label, X(s) + (X(s) > W - 60 ? -g.measureText(label).width - 3 : 3), T + 10);
  };
  if (d.alarm_step !== null) vline(d.alarm_step, "#d00", "alarm");
  if (d.failure_step !== null && d.failure_step !== undefined && !d.success) vline(d.failure_step, "#80c", "failure");
  g.strokeStyle = "#1f5fbf"; g.fillStyle = "#1f5fbf"; g.lineWidth = 1.5;
  // a replan's score holds until the next replan: draw steps, not interpolated lines
  d.trace.forEach(([s, v], i) => {
    if (v === null) return;
    const next = i + 1 < d.trace.length ? d.trace[i + 1][0] : Math.max(s + 1, d.length ?? s + 1);
    g.beginPath(); g.moveTo(X(s), Y(v)); g.lineTo(X(next), Y(v)); g.stroke();
  });
  for (const [s, v] of d.trace) if (v !== null) { g.beginPath(); g.arc(X(s), Y(v), 2.5, 0, 7); g.fill(); }
  vline(state.t, "#0a0", null);
  cv.onclick = (ev) => seek((ev.offsetX - L) / (W - L - R) * xmax);
}

function currentReplan() {
  const c = state.chunks;
  if (!c || !c.available) return null;
  let best = null;
  for (const r of c.replans) if (r.step <= state.t) best = r;
  return best || c.replans[0];
}

function drawChunks() {
  const cv = $("chunks"), g = cv.getContext("2d"), gp = $("gripper").getContext("2d");
  const W = cv.width, H = cv.height, gw = $("gripper").width, gh = $("gripper").height;
  g.clearRect(0, 0, W, H); gp.clearRect(0, 0, gw, gh);
  const r = currentReplan(), c = state.chunks;
  if (!r) {
    $("chunks-label").textContent = state.detail.has_chunks ? "no chunks were sampled in this episode" :
      "no sampled chunks in the store (the suite ran without record_chunks)";
    return;
  }
  const start = Math.max(0, (c.n_obs_steps ?? 1) - 1);  // row start-1 of a chunk is the current step's action
  const paths = r.samples.map((chunk) => {
    let x = 0, y = 0; const p = [[0, 0]];
    for (const a of chunk.slice(start)) { x += a[0]; y += a[1]; p.push([x, y]); }
    return p;
  });
  const nExec = c.n_action_steps ?? 8;
  const exec = [[0, 0]];
  for (const a of c.actions.slice(r.step, r.step + nExec)) {
    if (a[0] === null) break;
    exec.push([exec[exec.length - 1][0] + a[0], exec[exec.length - 1][1] + a[1]]);
  }
  const ext = Math.max(1e-6, ...paths.flat().map(([x, y]) => Math.max(Math.abs(x), Math.abs(y))),
    ...exec.map(([x, y]) => Math.max(Math.abs(x), Math.abs(y)))) * 1.1;
  const X = (x) => W / 2 + (W / 2 - 8) * x / ext, Y = (y) => H / 2 - (H / 2 - 8) * y / ext;
  g.strokeStyle = "#ddd"; g.beginPath(); g.moveTo(W / 2, 0); g.lineTo(W / 2, H); g.moveTo(0, H / 2); g.lineTo(W, H / 2); g.stroke();
  const K = paths.length;
  paths.forEach((p, k) => {
    g.strokeStyle = `hsl(${Math.round(360 * k / K)},70%,45%)`;
    g.lineWidth = k === 0 ? 3 : 1.2;
    g.beginPath(); p.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y)))); g.stroke();
  });
  g.strokeStyle = "#000"; g.setLineDash([3, 3]); g.lineWidth = 1.5;
  g.beginPath(); exec.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y)))); g.stroke();
  g.setLineDash([]);
  g.fillStyle = "#444"; g.font = "11px sans-serif";
  g.fillText(`top-down, replan at step ${r.step}`, 4, 12);
  g.fillText(`±${fmt(ext, 2)} (summed dx, dy)`, 4, H - 4);
  // gripper command of each sample along the horizon (bimodal by nature: open vs close)
  gp.strokeStyle = "#ddd"; gp.beginPath(); gp.moveTo(0, gh / 2); gp.lineTo(gw, gh / 2); gp.stroke();
  const hor = r.samples[0].length;
  r.samples.forEach((chunk, k) => {
    gp.strokeStyle = `hsl(${Math.round(360 * k / K)},70%,45%)`; gp.lineWidth = k === 0 ? 2.5 : 1;
    gp.beginPath();
    chunk.forEach((a, j) => {
      const x = 6 + (gw - 12) * j / Math.max(1, hor - 1), y = gh / 2 - (gh / 2 - 6) * Math.max(-1, Math.min(1, a[a.length - 1]));
      j ? gp.lineTo(x, y) : gp.moveTo(x, y);
    });
    gp.stroke();
  });
  gp.fillStyle = "#444"; gp.font = "11px sans-serif"; gp.fillText("gripper along the horizon (>0 closes)", 4, 11);
  $("chunks-label").textContent = `${K} sampled chunks (sample 0, thick, was executed; dashed: executed actions from the store)`;
}

// ----------------------------------------------------------------------------------------- verdicts
async function submit(verdict) {
  const d = state.detail;
  if (!d) return;
  const status = $("save-status");
  status.className = ""; status.textContent = "saving…";
  try {
    const res = await api("/api/verdict", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({episode: d.episode, verdict, note: $("note").value}),
    });
    d.verdict = res.saved;
    showVerdict(res.saved);
    status.textContent = `saved ${res.saved.time}`;
    const item = state.queue.items.find((i) => i.episode === d.episode);
    item.verdict = res.saved.verdict;
    state.queue.summary = res.summary;
    renderQueue();
  } catch (e) {
    status.className = "error"; status.textContent = `not saved: ${e.message}`;
  }
}

function move(delta) {
  const items = state.queue.items, i = items.findIndex((it) => it.episode === state.episode);
  const next = items[Math.max(0, Math.min(items.length - 1, i + delta))];
  if (next) select(next.episode);
}

for (const b of document.querySelectorAll("button.verdict")) b.addEventListener("click", () => submit(b.dataset.verdict));
$("save-note").addEventListener("click", () => {
  const v = state.detail && state.detail.verdict;
  if (!v) { $("save-status").className = "error"; $("save-status").textContent = "choose a verdict first"; return; }
  submit(v.verdict);
});
$("play").addEventListener("click", play);
$("frame-slider").addEventListener("input", (e) => { stop(); seek(Number(e.target.value)); });
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "TEXTAREA" || e.target.tagName === "INPUT" || !state.detail) return;
  const keys = {"1": "real_failure", "2": "benign", "3": "unsure"};
  if (keys[e.key]) submit(keys[e.key]);
  else if (e.key === "j") move(1);
  else if (e.key === "k") move(-1);
  else if (e.key === " ") { e.preventDefault(); play(); }
});
loadQueue().catch((e) => { document.body.prepend(Object.assign(document.createElement("p"), {className: "error", textContent: `could not load the queue: ${e.message}`})); });
