// motex-stream dashboard page: applies the server's snapshot and frame events to per-model
// state and redraws with Plotly (from the plotly wheel). No build step, no other library.
"use strict";

const MAX_FRAMES = 5000;  // as the server keeps (state.py)
const MAX_TIMELINE = 5000;
const STALE_S = 10;  // no frame for this long: say so (a service restarting, a beam dump)
// diverging, centred on 0: blue = the data want the atom, red = it hurts the fit
const DIVERGING = [[0, "#2166ac"], [0.25, "#67a9cf"], [0.5, "#f7f7f7"],
  [0.75, "#ef8a62"], [1, "#b2182b"]];
const ELEMENT_COLOUR = { W: "#2f6fb0", O: "#d23c3c", Mo: "#6a9c46", P: "#e08a1e", Ga: "#7c5cb0" };
const PLOT_CONFIG = { displaylogo: false, responsive: true, displayModeBar: "hover" };
const CHANGE_COLOUR = "#7b2cbf";  // structure-change markers (heatmap and trends)
const REBUILD_COLOUR = "#6b7280";  // surrogate-rebuild markers (heatmap)
const LABEL_TEXT = { keep: "keep", remove: "remove", uncertain: "uncertain" };
// One vocabulary on the page (issue 22): whether an atom is kept is its label from the
// service (keep: interval below 0; remove: above; uncertain: it contains 0), in the table, the
// 3-D view and every legend. The best catalogue motif's mask is only named as that motif.
const LABEL_STYLE = {  // the badge colours of app.css; a symbol too, for colour-blind readers
  keep: { colour: "#2166ac", symbol: "circle" },
  remove: { colour: "#b2182b", symbol: "circle-open" },
  uncertain: { colour: "#e0a400", symbol: "diamond" },
  "": { colour: "#9aa3b5", symbol: "square-open" },
};
const LABEL_ORDER = ["keep", "uncertain", "remove", ""];
function labelOf(f, k) {  // the published label of column k, or "" (none, or not one of the three)
  const raw = f.labels ? f.labels[k] : null;
  return typeof raw === "string" && Object.prototype.hasOwnProperty.call(LABEL_TEXT, raw) ? raw : "";
}
// Contribution values are on the Rwp scale (docs/method.md §6: for an atom whose effect is
// additive, half the change of Rwp when it is kept); Rwp itself is a dimensionless fraction.
const VALUE_UNIT = "ΔRwp";
const AXIS_FONT = { size: 11 };

const models = {};  // name -> model state
const stats = { firstData: null, firstPlots: null, firstRender: null, snapshotAt: null, plotlyReady: null, latency: [], renders: 0, reconnects: 0 };
window.motex = { models, stats };
let info = { source: "", messages: 0 };
let lastArrival = null;  // dashboard clock (s) of the latest frame
// server time - browser time (s): the largest of (server time sent) - (browser time received),
// a lower bound that tightens with every event (the browser may run on another computer)
let clockSkew = null;
function observeClock(serverTime) {
  const skew = serverTime - Date.now() / 1000;
  if (clockSkew === null || skew > clockSkew) clockSkew = skew;
}
function serverNow() { return Date.now() / 1000 + (clockSkew || 0); }
let connected = false;

// ------------------------------------------------------------------ formatting
function fmt(v, digits = 4) {
  if (v === null || v === undefined || !isFinite(v)) return "—";
  if (v !== 0 && Math.abs(v) < Math.pow(10, -digits + 1)) return v.toExponential(2);
  return v.toFixed(digits);
}
function label(m, i) { return m.elements[i] + m.atoms[i]; }
function atomName(m, n) { const k = m.atoms.indexOf(n); return k >= 0 ? label(m, k) : "#" + n; }
function changeText(m, c) {
  const names = (list) => (list && list.length ? list.map((n) => atomName(m, n)).join(", ") : "none");
  return `structure change at frame ${c.frame} (reported with frame ${c.reported})` +
    `<br>gained: ${names(c.atoms_gained)}<br>lost: ${names(c.atoms_lost)}` +
    `<br>confidence ${fmt(c.confidence, 3)}`;
}

// ------------------------------------------------------------------ state
function newModel(name) {
  const tpl = document.getElementById("model-template");
  const el = tpl.content.firstElementChild.cloneNode(true);
  el.dataset.model = name;
  el.querySelector(".name").textContent = name;
  document.getElementById("models").appendChild(el);
  const waiting = document.getElementById("waiting");
  if (waiting) waiting.remove();
  const m = {
    name, el, atoms: [], elements: [], run: "", runs: 0, frames: [], structure: null, changes: [],
    timeline: [], messages: 0, gaps: 0, follow: true, selected: -1,
    pending: [],  // published_at of frames not yet on screen (latency statistics)
  };
  const slider = el.querySelector(".frame-slider");
  slider.addEventListener("input", () => { m.follow = false; m.selected = +slider.value; schedule(m); });
  el.querySelector(".follow").addEventListener("click", () => { m.follow = true; schedule(m); });
  models[name] = m;
  return m;
}

function fromSnapshot(name, s) {
  const m = models[name] || newModel(name);
  Object.assign(m, {
    atoms: s.atoms, elements: s.elements, run: s.run, runs: s.runs, frames: s.frames,
    structure: s.structure, timeline: s.timeline, messages: s.messages, gaps: s.gaps,
    changes: s.changes || [],
  });
  return m;
}

function applyFrame(ev) {
  const m = models[ev.model] || newModel(ev.model);
  const f = ev.frame;
  const sameAtoms = m.atoms.length === ev.atoms.length && m.atoms.every((a, i) => a === ev.atoms[i]);
  const last = m.frames.length ? m.frames[m.frames.length - 1] : null;
  if (sameAtoms) {  // skip what the snapshot this page was built from already held
    if (ev.runs < m.runs || (ev.new_run && ev.runs === m.runs)) return;
    if (!ev.new_run && last && last.seq >= f.seq) return;
  }
  if (ev.new_run || !sameAtoms) {
    m.frames = [];
    m.changes = [];
    m.atoms = ev.atoms;
    m.elements = ev.elements;
    if (!m.follow) m.selected = 0;
  }
  m.run = ev.run; m.runs = ev.runs; m.messages = ev.messages; m.gaps = ev.gaps;
  if (ev.structure) m.structure = ev.structure;
  m.frames.push(f);
  if (ev.change) m.changes.push(ev.change);
  if (m.frames.length > MAX_FRAMES) { m.frames.shift(); if (!m.follow) m.selected = Math.max(0, m.selected - 1); }
  m.timeline.push(ev.point);
  if (m.timeline.length > MAX_TIMELINE) m.timeline.shift();
  if (f.published_at !== null) m.pending.push(f.published_at);
  lastArrival = f.arrived;
  observeClock(f.arrived);
  info.messages += 1;
  schedule(m);
}

// ------------------------------------------------------------------ rendering
const dirty = new Set();
let frameRequested = false;
function schedule(m) {
  dirty.add(m);
  if (!frameRequested) { frameRequested = true; requestAnimationFrame(renderDirty); }
}
function renderDirty() {
  frameRequested = false;
  const todo = Array.from(dirty);
  dirty.clear();
  const plotted = plotlyReady();
  Promise.all(todo.map((m) => render(m, plotted))).then(() => {
    if (stats.firstData === null && todo.some((m) => m.frames.length)) stats.firstData = performance.now();
    if (!plotted) return;  // drawn again, with the plots, once Plotly is ready
    const now = serverNow();
    for (const m of todo) {
      for (const p of m.pending) stats.latency.push(now - p);
      m.pending = [];
    }
    if (stats.latency.length > 10000) stats.latency.splice(0, stats.latency.length - 10000);
    if (stats.firstRender === null && todo.some((m) => m.frames.length)) stats.firstRender = performance.now();
    stats.renders += 1;
  });
  renderHeader();
}

function current(m) {
  const n = m.frames.length;
  if (!n) return -1;
  if (m.follow || m.selected < 0 || m.selected >= n) return n - 1;
  return m.selected;
}

function symmetricRange(m) {
  let top = 0;
  for (const f of m.frames) for (const v of f.values) if (v !== null && Math.abs(v) > top) top = Math.abs(v);
  return top > 0 ? top : 1;
}

function plotlyReady() { return typeof window.Plotly !== "undefined"; }
window.motexPlotlyReady = () => {
  stats.plotlyReady = performance.now();
  for (const m of Object.values(models)) schedule(m);
};
// the page's Content-Security-Policy allows no inline handler: listen here, not in onload=""
const plotlyTag = document.getElementById("plotly-js");
if (plotlyTag) plotlyTag.addEventListener("load", () => window.motexPlotlyReady());
if (plotlyReady()) stats.plotlyReady = performance.now();  // loaded before this script ran

function render(m, plotted) {
  const i = current(m);
  if (i < 0) return Promise.resolve();
  const f = m.frames[i];
  const top = symmetricRange(m);
  const el = m.el;
  el.dataset.frames = m.frames.length;
  el.dataset.selectedSeq = f.seq;
  el.querySelector(".run").textContent = "run " + m.run;
  el.querySelector(".summary").textContent =
    `frame ${f.seq} · ${m.frames.length} frames in run · run ${m.runs} · ${m.messages} messages` +
    (m.gaps ? ` · ${m.gaps} gaps` : "");
  const slider = el.querySelector(".frame-slider");
  slider.max = m.frames.length - 1;
  slider.value = i;
  el.querySelector(".frame-label").textContent = `seq ${f.seq} of ${m.frames[m.frames.length - 1].seq}`;
  el.querySelector(".follow").classList.toggle("on", m.follow);
  renderRanking(m, f, top);
  if (!plotted) return Promise.resolve();
  // the 2-D plots first; the 3-D view (WebGL, the slowest) after the browser has painted them
  return Promise.all([renderHeatmap(m, i, top), renderFit(m, f), renderTrends(m)])
    .then(() => {
      if (stats.firstPlots === null) stats.firstPlots = performance.now();
      return new Promise((resolve) => setTimeout(resolve, 0));
    })
    .then(() => render3d(m, m.frames[current(m)] || f));
}

function renderHeatmap(m, i, top) {
  const x = m.frames.map((f) => f.seq);
  const z = m.atoms.map((_, a) => m.frames.map((f) => f.values[a]));
  const y = m.atoms.map((_, a) => label(m, a));
  // one solid line per reported structure change, at the frame it is dated to
  const shapes = m.changes.map((c) => ({
    type: "line", name: "change", xref: "x", yref: "paper", x0: c.frame, x1: c.frame, y0: 0, y1: 1,
    line: { color: CHANGE_COLOUR, width: 3 },
  }));
  // a dashed line where a rebuilt surrogate took over: values on either side come from
  // different models, so a step there may be the model's, not the sample's
  const rebuilds = m.frames.filter((f) => f.rebuilt);
  for (const f of rebuilds) {
    shapes.push({
      type: "line", name: "rebuild", xref: "x", yref: "paper", x0: f.seq, x1: f.seq, y0: 0, y1: 1,
      line: { color: REBUILD_COLOUR, width: 1, dash: "dash" },
    });
  }
  if (!m.follow) {
    shapes.push({
      type: "line", name: "selected", xref: "x", yref: "paper", x0: m.frames[i].seq,
      x1: m.frames[i].seq, y0: 0, y1: 1, line: { color: "#1d2330", width: 2, dash: "dot" },
    });
  }
  const labelsAt = m.atoms.map((_, a) => m.frames.map((f) => (f.labels && f.labels[a]) || "—"));
  const data = [{
    type: "heatmap", x, y, z, zmin: -top, zmax: top, zmid: 0, colorscale: DIVERGING,
    colorbar: { title: { text: `contribution<br>(${VALUE_UNIT})`, side: "right" }, thickness: 12 },
    customdata: labelsAt,
    hovertemplate: `%{y}, frame %{x}<br>contribution %{z:.4g} ${VALUE_UNIT}<br>label %{customdata}<extra></extra>`,
  }, {
    // hover targets of the change lines (shapes have no hover): a marker on the top row
    type: "scatter", mode: "markers", name: "changes", x: m.changes.map((c) => c.frame),
    y: m.changes.map(() => y[0]), text: m.changes.map((c) => changeText(m, c)),
    hovertemplate: "%{text}<extra></extra>", showlegend: false,
    marker: { symbol: "triangle-down", size: 14, color: CHANGE_COLOUR },
  }, {
    type: "scatter", mode: "markers", name: "rebuilds", x: rebuilds.map((f) => f.seq),
    y: rebuilds.map(() => y[y.length - 1]), hovertemplate: "%{text}<extra></extra>",
    text: rebuilds.map((f) => `surrogate rebuilt at frame ${f.seq}` +
      (f.generation !== null && f.generation !== undefined ? ` (generation ${f.generation})` : "") +
      "<br>values from here on come from the new model"),
    showlegend: false, marker: { symbol: "triangle-up", size: 11, color: REBUILD_COLOUR },
  }];
  const layout = {
    title: { text: "Atom contribution values", font: { size: 14 } },
    margin: { l: 10, r: 10, t: 30, b: 10 }, font: AXIS_FONT,
    xaxis: { title: { text: "frame (seq)" }, automargin: true },
    yaxis: { autorange: "reversed", type: "category", automargin: true }, shapes, uirevision: m.run,
  };
  const div = m.el.querySelector(".heatmap");
  const p = Plotly.react(div, data, layout, PLOT_CONFIG);
  if (!div.dataset.bound) {
    div.dataset.bound = "1";
    div.on("plotly_click", (ev) => {
      const seq = ev.points[0].x;
      if (ev.points[0].data.type !== "heatmap") return;
      const j = m.frames.findIndex((f) => f.seq === seq);
      if (j >= 0) { m.follow = false; m.selected = j; schedule(m); }
    });
  }
  return p;
}

function renderRanking(m, f, top) {
  const order = m.atoms.map((_, a) => a).sort((a, b) => {
    const va = f.values[a], vb = f.values[b];
    if (va === null) return 1;
    if (vb === null) return -1;
    return va - vb;
  });
  // the bar cell is a small plot: 0 in the middle, the value as a bar, its interval as a
  // whisker, all on the run's symmetric range (wider intervals are clipped at the edges)
  let span = top;
  for (const a of order) {
    for (const w of [f.ci_low && f.ci_low[a], f.ci_high && f.ci_high[a]]) {
      if (w !== null && w !== undefined && isFinite(w)) span = Math.max(span, Math.abs(w));
    }
  }
  const pos = (v) => Math.max(0, Math.min(100, 50 + (50 * v) / span));
  // built with DOM calls, every string as text: labels, values and element names come from
  // the network, and innerHTML would run markup hidden in them (issue 19)
  const rows = order.map((a, rank) => {
    const v = f.values[a], s = f.spread[a];
    const lo = f.ci_low ? f.ci_low[a] : null, hi = f.ci_high ? f.ci_high[a] : null;
    const lab = labelOf(f, a);
    const colour = v !== null && v < 0 ? "#2166ac" : "#b2182b";
    const x0 = v === null ? 50 : Math.min(50, pos(v)), x1 = v === null ? 50 : Math.max(50, pos(v));
    const hasInterval = lo !== null && hi !== null && lo !== undefined && hi !== undefined;
    const tr = document.createElement("tr");
    tr.classList.add("label-" + (lab || "none"));
    Object.assign(tr.dataset, {
      atom: String(m.atoms[a]), value: String(v), label: lab, ciLow: String(lo), ciHigh: String(hi),
    });
    const cell = (cls, text) => {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      if (text !== undefined) td.textContent = text;
      tr.appendChild(td);
      return td;
    };
    const box = (cls, left, width, background) => {
      const div = document.createElement("div");
      div.className = cls;
      if (left !== undefined) { div.style.left = left + "%"; div.style.width = width + "%"; }
      if (background) div.style.background = background;
      return div;
    };
    cell("", String(rank + 1));
    cell("atom", label(m, a));
    cell("value", fmt(v));
    cell("interval", hasInterval ? `${fmt(lo)} … ${fmt(hi)}` : "—");
    cell("spread", fmt(s));
    const bar = cell("bar");
    bar.title = "value and its interval";
    bar.append(box("axis"), box("barfill", x0, x1 - x0, colour));
    if (hasInterval) bar.appendChild(box("whisker", pos(lo), Math.max(pos(hi) - pos(lo), 0.5)));
    const badge = document.createElement("span");
    badge.className = "badge" + (lab ? " " + lab : "");
    badge.textContent = LABEL_TEXT[lab] || "—";
    cell("label").appendChild(badge);
    return tr;
  });
  m.el.querySelector(".ranking tbody").replaceChildren(...rows);
}

function render3d(m, f) {
  const div = m.el.querySelector(".model3d");
  const s = m.structure;
  if (!s) {
    return Plotly.react(div, [], {
      title: { text: "Starting model (arrives with the next run's first frame)", font: { size: 13 } },
      xaxis: { visible: false }, yaxis: { visible: false },
    }, PLOT_CONFIG);
  }
  const col = {};  // atom number -> column in the values
  m.atoms.forEach((a, k) => { col[a] = k; });
  const labelAt = (n) => (col[n] === undefined ? "" : labelOf(f, col[n]));
  const perm = [], dep = [];
  s.elements.forEach((_, k) => ((col[k + 1] !== undefined) ? perm : dep).push(k));
  const xyz = (idx, c) => idx.map((k) => s.xyz[k][c]);
  // the permutable atoms, one trace per label: the colours and the legend are the table's
  const byLabel = LABEL_ORDER.map((lab) => {
    const idx = perm.filter((k) => labelAt(k + 1) === lab);
    const style = LABEL_STYLE[lab];
    return {
      type: "scatter3d", mode: "markers", name: LABEL_TEXT[lab] || "no label", meta: "permutable",
      x: xyz(idx, 0), y: xyz(idx, 1), z: xyz(idx, 2), hovertemplate: "%{text}<extra></extra>",
      text: idx.map((k) => {
        const c = col[k + 1];
        return `${s.elements[k]} #${k + 1}<br>contribution ${fmt(f.values[c])} ± ${fmt(f.spread[c])} ${VALUE_UNIT}` +
          `<br>label ${LABEL_TEXT[lab] || "none"}`;
      }),
      marker: { size: 8, color: style.colour, symbol: style.symbol, line: { color: style.colour, width: 2 } },
      // every label keeps its trace, empty or not: a change in the number of traces makes
      // Plotly rebuild the WebGL scene, seconds per frame with software rendering
      showlegend: idx.length > 0,
    };
  });
  const depText = dep.map((k) => `${s.elements[k]} #${k + 1}, goes with ` +
    (s.bonded[k].map((n) => `${s.elements[n - 1]}${n} (${LABEL_TEXT[labelAt(n)] || "no label"})`).join(", ") || "none"));
  const bx = [], by = [], bz = [];
  dep.forEach((k) => s.bonded[k].forEach((n) => {
    for (const [arr, c] of [[bx, 0], [by, 1], [bz, 2]]) arr.push(s.xyz[k][c], s.xyz[n - 1][c], null);
  }));
  const hidden = { showticklabels: false, title: { text: "" }, showspikes: false };
  const data = [
    { type: "scatter3d", mode: "lines", name: "bonds", x: bx, y: by, z: bz, hoverinfo: "skip",
      line: { color: "#c3c8d2", width: 2 }, showlegend: false },
    { type: "scatter3d", mode: "markers", name: "other atoms", x: xyz(dep, 0), y: xyz(dep, 1), z: xyz(dep, 2),
      text: depText, hovertemplate: "%{text}<extra></extra>", opacity: 0.35,
      marker: { size: 3, color: dep.map((k) => ELEMENT_COLOUR[s.elements[k]] || "#888") } },
    ...byLabel,
  ];
  // no tick labels: coordinates say nothing here, and in a turned view they ran into each other
  const layout = {
    title: { text: `Starting model, frame ${f.seq}: atoms by label`, font: { size: 13 } },
    margin: { l: 0, r: 0, t: 30, b: 0 }, showlegend: true, uirevision: "keep-camera",
    legend: { title: { text: "label" }, x: 1, xanchor: "right", y: 1, bgcolor: "rgba(255,255,255,0.8)" },
    scene: { aspectmode: "data", camera: { eye: { x: 1.7, y: 1.7, z: 1.1 } },
      xaxis: hidden, yaxis: hidden, zaxis: hidden },
  };
  div.dataset.atoms = perm.length + dep.length;
  return Plotly.react(div, data, layout, PLOT_CONFIG);
}

function renderFit(m, f) {
  const div = m.el.querySelector(".fit");
  const fit = f.fit;
  if (!fit && !f.fitAsked) {  // the snapshot holds only the latest fit: ask for this one
    f.fitAsked = true;
    fetch(`/api/fit?model=${encodeURIComponent(m.name)}&seq=${f.seq}`)
      .then((r) => (r.ok ? r.json() : null))
      .then((got) => { if (got) { f.fit = got; schedule(m); } })
      .catch(() => {});
  }
  if (!fit) {
    return Plotly.react(div, [], { title: { text: `No fit curve stored for frame ${f.seq}`, font: { size: 13 } } }, PLOT_CONFIG);
  }
  const diff = fit.g.map((g, k) => (g === null || fit.g_calc[k] === null ? null : g - fit.g_calc[k]));
  const finite = (a) => a.filter((v) => v !== null);
  const low = Math.min(...finite(fit.g), ...finite(fit.g_calc));
  const offset = low - Math.max(...finite(diff), 0) - 0.1 * (Math.max(...finite(fit.g)) - low);
  const data = [
    { type: "scatter", mode: "markers", name: "G(r) data", x: fit.r, y: fit.g, marker: { size: 3, color: "#1d2330" } },
    { type: "scatter", mode: "lines", name: "best catalogue motif", x: fit.r, y: fit.g_calc, line: { color: "#d23c3c", width: 1.5 } },
    { type: "scatter", mode: "lines", name: "difference", x: fit.r, y: diff.map((d) => (d === null ? null : d + offset)),
      line: { color: "#1b7f3b", width: 1 } },
  ];
  // the best-fitting motif of the catalogue (its mask), named as that: not the atoms' labels
  const size = f.mask.reduce((a, b) => a + b, 0);
  const layout = {
    // a title and a subtitle: one long line ran under the plot's tool bar
    title: { text: `G(r) · frame ${f.seq} · Rwp ${fmt(f.rwp)}`, font: { size: 13 }, x: 0.01, xanchor: "left",
      subtitle: { text: `best catalogue motif (red): ${size} of ${f.mask.length} atoms`, font: { size: 12 } } },
    margin: { l: 10, r: 10, t: 55, b: 10 }, font: AXIS_FONT,
    // the legend inside, top right, where G(r) has decayed: below the plot it ran into the
    // r axis title, above it into the title
    legend: { x: 1, xanchor: "right", y: 1, yanchor: "top", bgcolor: "rgba(255,255,255,0.75)" },
    xaxis: { title: { text: "r (Å)" }, automargin: true },
    yaxis: { title: { text: "G (Å⁻²)" }, automargin: true }, uirevision: m.run,
  };
  div.dataset.points = fit.r.length;
  return Plotly.react(div, data, layout, PLOT_CONFIG);
}

const TREND_POINTS = 600;  // drawn per trend line (every k-th point beyond): SVG stays quick

function maeAt(t, at) {  // the model error of the timeline point nearest to time ``at``
  let best = null;
  for (const p of t) if (best === null || Math.abs(p[0] - at) < Math.abs(best[0] - at)) best = p;
  return best ? best[1] : null;
}

function renderTrends(m) {
  const t = m.timeline;
  const rateAt = (k) => {
    const back = Math.min(k, 10);
    if (back < 1) return null;
    const span = t[k][0] - t[k - back][0];
    return span > 0 ? back / span : null;
  };
  const step = Math.max(1, Math.ceil(t.length / TREND_POINTS));
  const idx = [];
  for (let k = (t.length - 1) % step; k < t.length; k += step) idx.push(k);  // keeps the last
  const x = idx.map((k) => new Date(t[k][0] * 1000));
  const line = { width: 1.5 };
  const data = [
    { type: "scatter", mode: "lines", name: "model MAE", x, y: idx.map((k) => t[k][1]), line },
    { type: "scatter", mode: "lines", name: "latency (s)", x, y: idx.map((k) => t[k][2]), yaxis: "y2", line },
    { type: "scatter", mode: "lines", name: "frames/s", x, y: idx.map(rateAt), yaxis: "y3", line },
    { type: "scatter", mode: "markers", name: "changes", x: m.changes.map((c) => new Date(c.at * 1000)),
      y: m.changes.map((c) => maeAt(t, c.at)), text: m.changes.map((c) => changeText(m, c)),
      hovertemplate: "%{text}<extra></extra>", marker: { symbol: "triangle-down", size: 12, color: CHANGE_COLOUR } },
  ];
  const shapes = m.changes.map((c) => ({
    type: "line", name: "change", xref: "x", yref: "paper", x0: new Date(c.at * 1000),
    x1: new Date(c.at * 1000), y0: 0, y1: 1, line: { color: CHANGE_COLOUR, width: 2 },
  }));
  // one time axis, under the lowest panel (anchored to the top one, its tick labels were
  // drawn across the middle panel); gaps between the panels leave room for their tick labels
  const layout = {
    margin: { l: 10, r: 10, t: 10, b: 10 }, showlegend: false, font: AXIS_FONT,
    xaxis: { type: "date", anchor: "y3", automargin: true },
    yaxis: { domain: [0.72, 1], title: { text: "model MAE" }, automargin: true },
    yaxis2: { domain: [0.38, 0.64], title: { text: "latency (s)" }, automargin: true },
    yaxis3: { domain: [0.04, 0.3], title: { text: "frames/s" }, automargin: true },
    shapes, uirevision: m.name,
  };
  return Plotly.react(m.el.querySelector(".trends"), data, layout, PLOT_CONFIG);
}

function renderHeader() {
  const status = document.getElementById("status");
  const now = serverNow();
  let cls, text;
  if (!connected) { cls = "reconnecting"; text = "reconnecting to the dashboard…"; }
  else if (lastArrival === null) { cls = "stale"; text = "connected, no frames yet"; }
  else if (now - lastArrival > STALE_S) { cls = "stale"; text = `no frames for ${Math.round(now - lastArrival)} s`; }
  else { cls = "live"; text = "live"; }
  status.className = "status " + cls;
  status.textContent = text;
  document.getElementById("source").textContent = info.source ? "from " + info.source : "";
  const names = Object.keys(models);
  document.getElementById("counters").textContent =
    `${names.length} model${names.length === 1 ? "" : "s"} · ${info.messages} messages`;
}

// ------------------------------------------------------------------ connection
function connect() {
  const events = new EventSource("/events");
  events.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    connected = true;
    info = { source: snap.source, messages: snap.messages };
    observeClock(snap.now);
    if (stats.snapshotAt === null) stats.snapshotAt = performance.now();
    lastArrival = snap.last_arrival;
    for (const [name, s] of Object.entries(snap.models)) schedule(fromSnapshot(name, s));
    renderHeader();
  });
  events.addEventListener("frame", (e) => applyFrame(JSON.parse(e.data)));
  events.onerror = () => {  // the browser retries by itself (retry: 1000 ms)
    if (connected) stats.reconnects += 1;
    connected = false;
    renderHeader();
  };
}
setInterval(renderHeader, 1000);
connect();
