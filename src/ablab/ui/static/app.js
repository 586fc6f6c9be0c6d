// ablab ui: one page, routed by the hash (#/, #/run/ID[,ID...], #/studies, #/study/NAME, #/baselines).
// It reads the JSON endpoints of ablab/ui/server.py and polls them; charts are uPlot (vendor/).
"use strict";

const COLOURS = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#4e342e", "#ad1457"];
const X_AXES = {step: "step", tokens: "tokens", elapsed: "training seconds"};
const main = document.getElementById("main");
let timer = null;      // the current page's polling
let charts = [];       // the current page's uPlot charts

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function fmt(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  if (typeof value === "number" && !Number.isInteger(value)) return Math.abs(value) >= 1000 ? value.toFixed(0) : String(Number(value.toPrecision(5)));
  if (typeof value === "number" && value >= 10000) return value.toLocaleString("en");
  return String(value);
}

function statusCell(status) { return `<span class="${esc(status.replace(" ", "-"))}">${esc(status)}</span>`; }

function setStatus(text) { document.getElementById("status").textContent = text; }

function leave() {
  clearInterval(timer);
  timer = null;
  charts.forEach(chart => chart.destroy());
  charts = [];
}

// -- runs table -------------------------------------------------------------------------------------
const filters = {name: "", status: "", tag: "", where: "", sort: "", columns: "", limit: "500"};

function runsQuery() {
  const q = new URLSearchParams();
  for (const key of ["name", "status", "tag", "sort", "limit"]) if (filters[key]) q.set(key, filters[key]);
  for (const key of ["where", "columns"]) filters[key].split(",").map(s => s.trim()).filter(Boolean).forEach(v => q.append(key, v));
  return q.toString();
}

async function runsPage() {
  main.innerHTML = `<h1>Runs</h1><div class="filters">
    <input id="f-name" placeholder="name (glob)"> <select id="f-status"><option value="">any status</option>
    ${["running", "finished", "diverged", "interrupted", "failed"].map(s => `<option>${s}</option>`).join("")}</select>
    <input id="f-tag" placeholder="tag"> <input id="f-where" placeholder="where: model.d_model=64" size="24">
    <input id="f-columns" placeholder="config columns: optim.lr, model.d_model" size="32" list="config-keys">
    <input id="f-limit" size="5" title="rows"> <button id="overlay">overlay selected</button></div>
    <datalist id="config-keys"></datalist><p id="runs-note" class="muted"></p><table id="runs"></table>`;
  for (const key of ["name", "status", "tag", "where", "columns", "limit"]) {
    const input = document.getElementById(`f-${key}`);
    input.value = filters[key];
    input.addEventListener("change", () => { filters[key] = input.value; drawRuns(); });
  }
  document.getElementById("overlay").onclick = () => {
    const ids = [...document.querySelectorAll("#runs input:checked")].map(box => box.value);
    if (ids.length) location.hash = `#/run/${ids.join(",")}`;
  };
  await drawRuns();
  timer = setInterval(drawRuns, 5000);  // statuses change while runs train
}

async function drawRuns() {
  const table = document.getElementById("runs"), note = document.getElementById("runs-note");
  let found;
  try { found = await api(`/api/runs?${runsQuery()}`); } catch (err) { note.innerHTML = `<span class="error">${esc(err.message)}</span>`; return; }
  const checked = new Set([...document.querySelectorAll("#runs input:checked")].map(box => box.value));
  const keys = document.getElementById("config-keys");
  if (!keys.children.length) keys.innerHTML = found.config_keys.map(k => `<option value="${esc(k)}">`).join("");
  const head = found.columns.map(c => `<th data-key="${esc(c)}">${esc(c)}${filters.sort.replace("-", "") === c ? (filters.sort[0] === "-" ? " ▼" : " ▲") : ""}</th>`).join("");
  const rows = found.rows.map(row => `<tr data-id="${esc(row.id)}"><td><input type="checkbox" value="${esc(row.id)}" ${checked.has(row.id) ? "checked" : ""}></td>` +
    found.columns.map(c => c === "id" ? `<td><a href="#/run/${esc(row.id)}">${esc(row.id)}</a></td>`
      : c === "status" ? `<td>${statusCell(row.status)}</td>`
      : c === "created" ? `<td>${esc(String(row.created).slice(0, 16).replace("T", " "))}</td>`
      : `<td class="${typeof row[c] === "number" ? "num" : ""}">${esc(fmt(row[c]))}</td>`).join("") + "</tr>").join("");
  table.innerHTML = `<thead><tr><th></th>${head}</tr></thead><tbody>${rows}</tbody>`;
  note.textContent = `${found.rows.length} runs shown` + (filters.limit ? ` (at most ${filters.limit}: the newest, or the first in the sort)` : "");
  table.querySelectorAll("th[data-key]").forEach(th => th.onclick = () => {
    const key = th.dataset.key;
    filters.sort = filters.sort === key ? `-${key}` : key;
    drawRuns();
  });
  setStatus(`updated ${new Date().toLocaleTimeString()}`);
}

// -- charts -----------------------------------------------------------------------------------------
function chart(title, xLabel, series, data, bands, marks = () => []) {
  const box = document.createElement("div");
  box.className = "chart";
  const plot = new uPlot({title, width: 560, height: 300, bands,
    scales: {x: {time: false}}, axes: [{label: xLabel, values: (u, ticks) => ticks.map(compact)}, {label: "loss"}],
    series: [{label: xLabel}, ...series], hooks: {draw: [u => drawMarks(u, marks())]}}, data, box);
  charts.push(plot);
  return [box, plot];
}

function drawMarks(u, marks) {  // events (a loss spike, divergence) as dashed red lines at their x
  const ctx = u.ctx, {top, height} = u.bbox;
  ctx.save();
  ctx.strokeStyle = "#c62828";
  ctx.setLineDash([4, 4]);
  ctx.lineWidth = devicePixelRatio;
  for (const x of marks) {
    const at = u.valToPos(x, "x", true);
    ctx.beginPath();
    ctx.moveTo(at, top);
    ctx.lineTo(at, top + height);
    ctx.stroke();
  }
  ctx.restore();
}

function compact(value) {  // 1,200,000 -> 1.2M: tokens on an axis stay readable
  const abs = Math.abs(value);
  for (const [size, unit] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (abs >= size) return `${+(value / size).toPrecision(3)}${unit}`;
  return String(+value.toPrecision(4));
}

function points(data) { return data.slice(1).reduce((n, ys) => n + ys.filter(y => y !== null && y !== undefined).length, 0); }

// -- run page: one run, or several overlaid ----------------------------------------------------------
async function runPage(ids) {
  const runs = await Promise.all(ids.map(id => api(`/api/runs/${encodeURIComponent(id)}`)));
  const rows = Object.fromEntries(runs.map(run => [run.id, []]));
  const state = Object.fromEntries(runs.map(run => [run.id, run.status]));
  let axis = "step";
  const title = runs.length === 1 ? `Run ${esc(runs[0].id)} ${esc(runs[0].name)}` : `${runs.length} runs overlaid`;
  main.innerHTML = `<h1>${title}</h1><p>x: <select id="axis">${Object.entries(X_AXES).map(([k, v]) => `<option value="${k}">${v}</option>`).join("")}</select>
</p><p id="states"></p><div class="charts" id="charts"></div><div id="details"></div>`;
  const plots = {};
  let events = [];  // a single run's events, marked on its charts at their step's x
  const MARKED = new Set(["loss_spike", "diverged"]);
  function eventMarks() {
    if (runs.length !== 1) return [];
    const steps = rows[runs[0].id];
    return events.filter(e => MARKED.has(e.kind)).map(e => {
      if (axis === "step") return e.step;
      const near = steps.find(r => r.step >= e.step);  // tokens or seconds: those of the next logged row
      return near ? near[axis] : undefined;
    }).filter(x => x !== undefined);
  }
  const series = runs.map((run, i) => ({label: `${run.id} ${run.name}`, stroke: COLOURS[i % COLOURS.length], spanGaps: true, width: 1.5}));

  function tables(metric) { return runs.map(run => [rows[run.id].map(r => r[axis]), rows[run.id].map(r => r[metric] ?? null)]); }
  function aligned(metric) {
    const parts = tables(metric).map(([xs, ys]) => { const keep = xs.map((x, i) => x !== undefined && ys[i] !== null); return [xs.filter((_, i) => keep[i]), ys.filter((_, i) => keep[i])]; });
    return parts.every(([xs]) => !xs.length) ? [[], ...parts.map(() => [])] : uPlot.join(parts.map(([xs, ys]) => [xs, ys]));
  }
  function draw() {
    leaveCharts();
    const holder = document.getElementById("charts");
    for (const metric of ["train_loss", "val_loss"]) {
      const [box, plot] = chart(metric, X_AXES[axis], series, aligned(metric), undefined, eventMarks);
      plots[metric] = plot;
      holder.appendChild(box);
    }
  }
  function leaveCharts() { charts.forEach(c => c.destroy()); charts = []; document.getElementById("charts").innerHTML = ""; }
  function refresh() { for (const metric in plots) plots[metric].setData(aligned(metric)); }
  function latest(run) {  // the newest logged values: what a training run is at now
    const last = rows[run.id][rows[run.id].length - 1], val = [...rows[run.id]].reverse().find(r => r.val_loss !== undefined);
    if (!last) return "";
    return ` step ${fmt(last.step)}, ${compact(last.tokens)} tokens` + (last.train_loss !== undefined ? `, loss ${fmt(last.train_loss)}` : "") +
      (val ? `, val ${fmt(val.val_loss)} @${val.step}` : "") + (last.tokens_per_s ? `, ${compact(last.tokens_per_s)} tok/s` : "");
  }
  function showStates() { document.getElementById("states").innerHTML = runs.map(run => `${esc(run.id)} ${statusCell(state[run.id])}${esc(latest(run))}`).join("<br>"); }

  async function poll() {
    let grew = false;
    for (const run of runs) {
      if (rows[run.id].length && state[run.id] !== "running") continue;  // a run that ended gains no rows
      const since = rows[run.id].length ? rows[run.id][rows[run.id].length - 1].step : -1;
      const answer = await api(`/api/runs/${encodeURIComponent(run.id)}/metrics?since=${since}`);
      rows[run.id].push(...answer.rows);
      grew = grew || answer.rows.length > 0;
      state[run.id] = answer.status;
      if (runs.length === 1) { events = answer.events; showEvents(events); }
    }
    if (grew) refresh();
    showStates();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  }
  document.getElementById("axis").onchange = event => { axis = event.target.value; draw(); };
  window.ablab.points = () => plots.train_loss ? points(plots.train_loss.data) + points(plots.val_loss.data) : 0;
  window.ablab.marks = () => eventMarks().length;
  draw();
  let polls = 0;
  if (runs.length === 1) { showRun(runs[0]); await showSamples(runs[0].id); }
  await poll();
  timer = setInterval(async () => {
    await poll();
    if (runs.length === 1 && state[runs[0].id] === "running" && ++polls % 10 === 0) await showSamples(runs[0].id);
  }, 1000);
}

async function showSamples(runId) {
  const holder = document.getElementById("samples");
  const found = (await api(`/api/runs/${encodeURIComponent(runId)}/samples`)).rows;
  if (!holder) return;
  const steps = [...new Set(found.map(r => r.step))];
  if (!steps.length) { holder.innerHTML = `<p class="muted">none (the run's config has no eval.prompts)</p>`; return; }
  const chosen = holder.querySelector("select") ? Number(holder.querySelector("select").value) : steps[steps.length - 1];
  const at = steps.includes(chosen) ? chosen : steps[steps.length - 1];
  const byPrompt = {};
  found.filter(r => r.step === at).forEach(r => { (byPrompt[r.prompt] ||= {})[r.mode] = r.error || r.text; });
  holder.innerHTML = `<p>at step <select>${steps.map(s => `<option ${s === at ? "selected" : ""}>${s}</option>`).join("")}</select></p>
    <table class="samples"><tr><th>prompt</th><th>greedy</th><th>sampled</th></tr>${Object.entries(byPrompt).map(([prompt, t]) =>
    `<tr><td>${esc(prompt)}</td><td>${esc(visible(t.greedy))}</td><td>${esc(visible(t.sampled))}</td></tr>`).join("")}</table>`;
  holder.querySelector("select").onchange = () => showSamples(runId);
}

function showEvents(events) {
  const holder = document.getElementById("events");
  if (holder) holder.innerHTML = events.length ? `<table><tr><th>step</th><th>kind</th><th>message</th></tr>${events.map(e =>
    `<tr><td class="num">${e.step}</td><td>${esc(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join("")}</table>` : `<p class="muted">none</p>`;
}

function pairs(values) { return `<dl>${Object.entries(values).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(typeof v === "object" && v !== null && !Array.isArray(v) ? JSON.stringify(v) : fmt(v))}</dd>`).join("")}</dl>`; }

function showRun(run) {
  const final = run.result.final || {};
  const result = {status: run.status, seed: run.seed, steps: run.result.steps, tokens: run.result.tokens_seen,
    "train seconds": run.result.train_seconds, "stop reason": run.result.stop_reason,
    ...Object.fromEntries(Object.entries(final).map(([k, v]) => [`final ${k}`, v]))};
  document.getElementById("details").innerHTML = `<h2>Result</h2>${pairs(Object.fromEntries(Object.entries(result).filter(([, v]) => v !== undefined && v !== null)))}
    ${run.studies.length ? `<h2>Studies</h2><p>${run.studies.map(s => `<a href="#/study/${esc(s.study)}">${esc(s.study)}</a> (${esc(s.arm)}, seed ${s.seed})`).join(", ")}</p>` : ""}
    <h2>Events</h2><div id="events"></div><h2>Samples (the eval.prompts suite)</h2><div id="samples"></div>
    <h2>Provenance</h2>${pairs(run.provenance)}
    <h2>Config</h2>${Object.entries(run.config).map(([section, v]) => typeof v === "object" ? `<h3>${esc(section)}</h3>${pairs(v)}` : pairs({[section]: v})).join("")}
    ${run.notes.length ? `<h2>Notes</h2>${run.notes.map(n => `<p><span class="muted">${esc(n.time)}</span> ${esc(n.text)}</p>`).join("")}` : ""}`;
}

// -- studies ------------------------------------------------------------------------------------------
async function studiesPage() {
  const found = await api("/api/studies");
  main.innerHTML = `<h1>Studies</h1><table><tr><th>study</th><th>baseline</th><th>question</th><th>cells finished</th><th>concluded</th></tr>
    ${found.map(s => `<tr><td><a href="#/study/${esc(s.name)}">${esc(s.name)}</a></td><td>${esc(s.baseline)}</td><td>${esc(s.question)}</td>
      <td class="num">${s.finished} / ${s.cells}</td><td>${s.concluded ? "yes" : ""}</td></tr>`).join("")}</table>`;
}

async function studyPage(name) {
  let shown = "";
  async function draw() {
    const study = await api(`/api/studies/${encodeURIComponent(name)}`);
    const text = JSON.stringify(study);
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
    if (text === shown) return;  // unchanged: keep the page (and where it is scrolled to) as it is
    shown = text;
    const spec = study.spec, arms = Object.keys(spec.arms);
    const verdicts = arms.filter(arm => study.arms[arm] && study.arms[arm].verdict).map(arm => {
      const v = study.arms[arm].verdict, c = study.arms[arm].comparison;
      return `<p><b>${esc(arm)}</b>: <span class="verdict ${esc(v.outcome)}">${esc(v.outcome)}</span> ${esc(v.reason)}
        ${c ? `<span class="muted">(mean difference ${fmt(c.mean_diff)}, p ${fmt(c.p)}, n ${c.n})</span>` : ""}</p>`;
    }).join("");
    const cell = (arm, seed) => study.grid.find(c => c.arm === arm && c.seed === seed);
    const grid = `<table class="grid"><tr><th>arm \\ seed</th>${spec.seeds.map(s => `<th>${s}</th>`).join("")}</tr>${arms.map(arm =>
      `<tr><th>${esc(arm)}</th>${spec.seeds.map(seed => { const c = cell(arm, seed);
        return `<td>${c.run ? `<a href="#/run/${esc(c.run)}">${esc(c.run)}</a><br>` : ""}${statusCell(c.status)}</td>`; }).join("")}</tr>`).join("")}</table>`;
    const diff = study.diff.length ? `<table><tr><th>arm</th><th>key</th><th>baseline ${esc(study.baseline)}</th><th>this arm</th></tr>${study.diff.map(d =>
      `<tr><td>${esc(d.arm)}</td><td>${esc(d.key)}</td><td>${esc(fmt(d.baseline))}</td><td>${esc(fmt(d.arm_value))}</td></tr>`).join("")}</table>` : "";
    const ladder = spec.kind === "ladder";
    const judged = ladder ? `<p class="muted">a scaling ladder has no prediction to judge; \`ablab scaling fit --study ${esc(study.name)}\` fits it</p>`
      : study.complete ? verdicts || `<p class="muted">no arm to judge</p>` : `<p class="muted">in progress: the verdict comes when every cell has finished</p>`;
    main.innerHTML = `<h1>${ladder ? "Ladder" : "Study"} ${esc(study.name)}</h1><p>${esc(spec.question)}</p>
      <p class="muted">against ${esc(study.baseline)}${ladder ? "" : `; prediction: ${esc(spec.metric)} ${esc(spec.direction)}s by at least ${fmt(spec.min_effect)} (read at ${esc(spec.read_at)})`}</p>
      <h2>Verdict</h2>${judged}
      <h2>Arms × seeds</h2>${grid}<h2>Plan: each arm against the baseline</h2>${diff}
      <h2>Curves per arm (mean over seeds, band: lowest to highest seed)</h2><div class="charts" id="charts"></div>
      ${sideBySide(study.samples)}
      ${study.conclusion ? `<h2>Conclusion</h2>${pairs(study.conclusion)}` : ""}`;
    charts.forEach(c => c.destroy());
    charts = [];
    for (const metric of ["val_loss", "train_loss"]) {
      const parts = [], series = [], bands = [];
      arms.forEach((arm, i) => {
        const curve = study.curves[arm][metric], colour = COLOURS[i % COLOURS.length], at = series.length + 1;
        if (!curve.step.length) return;
        parts.push([curve.step, curve.mean], [curve.step, curve.high], [curve.step, curve.low]);
        series.push({label: arm, stroke: colour, width: 2, spanGaps: true},
                    {label: `${arm} highest`, stroke: colour + "55", width: 1, spanGaps: true},
                    {label: `${arm} lowest`, stroke: colour + "55", width: 1, spanGaps: true});
        bands.push({series: [at + 1, at + 2], fill: colour + "22"});
      });
      if (parts.length) document.getElementById("charts").appendChild(chart(metric, "step", series, uPlot.join(parts), bands)[0]);
    }
  }
  await draw();
  timer = setInterval(draw, 2000);  // cells finish, a conclusion is written, the study is extended
}

function visible(text) { return String(text ?? "").replace(/\n/g, "↵"); }  // a continuation's line breaks, kept in one row

function sideBySide(samples) {  // the prompt suite, the baseline's and each arm's text at one step and seed
  if (!samples) return "";
  return `<h2>Samples: the baseline and each arm at step ${samples.step}, seed ${samples.seed}</h2><table class="samples">
    <tr><th>prompt</th><th>mode</th>${samples.arms.map(a => `<th>${esc(a)}</th>`).join("")}</tr>${samples.rows.map(r =>
    `<tr><td>${esc(r.prompt)}</td><td>${esc(r.mode)}</td>${samples.arms.map(a => `<td>${esc(visible(r.texts[a]))}</td>`).join("")}</tr>`).join("")}</table>`;
}

// -- baselines ----------------------------------------------------------------------------------------
async function baselinesPage() {
  const found = await api("/api/baselines");
  const link = names => names.map(n => `<a href="#/study/${esc(n)}">${esc(n)}</a>`).join(", ");
  main.innerHTML = `<h1>Baselines</h1><table><tr><th>baseline</th><th>current</th><th>seeds</th><th>promoted from</th>
    <th>justified by</th><th>promoted into</th><th>studies against it</th><th>noise floor (val_loss)</th></tr>${found.map(b =>
    `<tr><td>${esc(b.ref)}</td><td>${b.current ? "yes" : ""}</td><td>${esc(b.seeds.join(", "))}</td><td>${esc(b.parent)}</td>
     <td>${link(b.justified_by)}</td><td>${esc(b.children.join(", "))}</td><td>${link(b.studies)}</td>
     <td class="num">${esc(fmt(b.noise_floor && b.noise_floor.val_loss))}</td></tr>`).join("")}</table>`;
}

// -- routing ------------------------------------------------------------------------------------------
window.ablab = {points: () => 0, marks: () => 0};  // what a test (or a curious reader) asks of the page

async function route() {
  leave();
  window.ablab.points = window.ablab.marks = () => 0;
  const [, page, arg] = location.hash.split("/");
  try {
    if (page === "run" && arg) await runPage(decodeURIComponent(arg).split(","));
    else if (page === "studies") await studiesPage();
    else if (page === "study" && arg) await studyPage(decodeURIComponent(arg));
    else if (page === "baselines") await baselinesPage();
    else await runsPage();
  } catch (err) {
    main.innerHTML = `<p class="error">${esc(err.message)}</p>`;
  }
}

window.addEventListener("hashchange", route);
route();
