/* stream_hub dashboard — the DOM around the charts: status pills, the run
 * list, chart cards and legends, the latest-values table, the tooltip, the
 * event rate and the server facts. Names and values from the server are
 * always set as text (never as HTML): run and metric names are user data.
 */
(function (global) {
  "use strict";

  const { formatValue } = global.StreamHubChart;
  const $ = (id) => document.getElementById(id);

  // Distinct on dark and light backgrounds; more runs get golden-angle hues.
  const PALETTE = [
    "#4e9eff", "#f28e2b", "#3fb950", "#e5534b", "#b083f0",
    "#2bbbad", "#e3b341", "#ec6cb9", "#9fa8b3", "#8ddb8c",
  ];

  function runColor(index) {
    if (index < PALETTE.length) return PALETTE[index];
    return `hsl(${Math.round((index * 137.508) % 360)}, 65%, 60%)`;
  }

  const compareNames = (a, b) => a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });

  // ---- theme --------------------------------------------------------------

  function readTheme() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return {
      grid: v("--grid"), axis: v("--axis"), muted: v("--muted"), text: v("--text"),
      crosshair: v("--crosshair"), panel: v("--panel"), accent: v("--accent"),
      font: v("--font") || "sans-serif",
    };
  }

  function onThemeChange(callback) {
    const query = matchMedia("(prefers-color-scheme: light)");
    if (query.addEventListener) query.addEventListener("change", callback);
  }

  // ---- hidden runs survive a reload of the page ----------------------------

  const STORAGE_KEY = "stream_hub:hidden-runs";
  const hiddenRuns = new Set();
  try {
    for (const name of JSON.parse(localStorage.getItem(STORAGE_KEY) || "[]")) hiddenRuns.add(name);
  } catch (_) {
    // No storage (private mode, file policy): every run starts visible.
  }

  function saveHiddenRuns(runs) {
    for (const run of runs.values()) {
      if (run.visible) hiddenRuns.delete(run.name); else hiddenRuns.add(run.name);
    }
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(Array.from(hiddenRuns)));
    } catch (_) {
      // Not persisted; the toggle still works for this page.
    }
  }

  // ---- status pills ---------------------------------------------------------

  function setPill(name, state, text) {
    const pill = $(`status-${name}`);
    if (!pill) return;
    pill.dataset.state = state;
    pill.querySelector(".detail").textContent = text || state;
  }

  /** A sentence above the page (null hides it). */
  function showNotice(text) {
    const notice = $("notice");
    notice.hidden = !text;
    setText(notice, text || "");
  }

  // ---- runs -----------------------------------------------------------------

  function bindRunButtons(showAll, hideAll) {
    $("runs-all").addEventListener("click", showAll);
    $("runs-none").addEventListener("click", hideAll);
  }

  function renderRuns(runs, toggle) {
    const list = $("runs-list");
    list.replaceChildren();
    for (const run of runs) {
      const item = document.createElement("li");
      item.className = "run";
      item.dataset.run = run.name;
      item.dataset.visible = String(run.visible);
      item.tabIndex = 0;
      item.setAttribute("role", "checkbox");
      item.setAttribute("aria-checked", String(run.visible));
      item.style.setProperty("--swatch", run.color);
      item.title = `${run.name}: click to ${run.visible ? "hide" : "show"}`;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      const name = document.createElement("span");
      name.className = "run-name";
      name.textContent = run.name;
      const step = document.createElement("span");
      step.className = "run-step";
      const meta = document.createElement("span");
      meta.className = "run-meta";
      item.append(swatch, name, step, meta);
      item.addEventListener("click", () => toggle(run.name));
      item.addEventListener("keydown", (event) => {
        if (event.key === " " || event.key === "Enter") {
          event.preventDefault();
          toggle(run.name);
        }
      });
      list.append(item);
    }
    $("runs-empty").hidden = runs.length > 0;
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  function age(ts) {
    if (typeof ts !== "number") return "";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 2) return "updated now";
    if (s < 90) return `updated ${Math.round(s)} s ago`;
    if (s < 5400) return `updated ${Math.round(s / 60)} min ago`;
    return `updated ${Math.round(s / 3600)} h ago`;
  }

  function updateRunMeta(runs) {
    const list = $("runs-list");
    for (const item of list.children) {
      const run = runs.find((r) => r.name === item.dataset.run);
      if (!run) continue;
      setText(item.querySelector(".run-step"), run.lastStep == null ? "" : `step ${run.lastStep}`);
      const events = `${run.events} event${run.events === 1 ? "" : "s"}`;
      const updated = age(run.lastTs);
      setText(item.querySelector(".run-meta"), updated ? `${events} · ${updated}` : events);
    }
  }

  // ---- chart cards -----------------------------------------------------------

  function createChartCard(metric, views) {
    const card = $("chart-template").content.firstElementChild.cloneNode(true);
    card.dataset.metric = metric;
    const title = card.querySelector(".chart-title");
    title.textContent = metric;
    title.title = metric;
    const container = $("charts");
    let before = null;
    for (const [other, view] of views) {
      if (compareNames(metric, other) < 0 && (!before || compareNames(other, before.dataset.metric) < 0)) {
        before = view.card;
      }
    }
    container.insertBefore(card, before);
    return {
      metric,
      card,
      canvas: card.querySelector(".chart-canvas"),
      legend: card.querySelector(".chart-legend"),
      wrap: card.querySelector(".canvas-wrap"),
      chart: null,
    };
  }

  const sized = new Map(); // canvas-wrap element -> [view, callback]
  const resizer = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const target = sized.get(entry.target);
      if (!target) continue;
      const [view, callback] = target;
      if (!view.card.isConnected) {
        resizer.unobserve(entry.target);
        sized.delete(entry.target);
        continue;
      }
      const box = entry.contentRect;
      if (view.chart.resize(box.width, box.height, window.devicePixelRatio || 1)) callback();
    }
  });

  function observeSize(view, callback) {
    sized.set(view.wrap, [view, callback]);
    resizer.observe(view.wrap);
  }

  function renderLegend(view, entries) {
    const items = entries.map((entry) => {
      const item = document.createElement("span");
      item.className = "item";
      item.dataset.run = entry.key;
      item.dataset.visible = String(entry.visible);
      item.style.setProperty("--swatch", entry.color);
      item.style.cursor = "pointer";
      item.title = `${entry.label}: click to ${entry.visible ? "hide" : "show"}`;
      const line = document.createElement("span");
      line.className = "line";
      const label = document.createElement("span");
      label.textContent = entry.label;
      item.append(line, label);
      return item;
    });
    view.legend.replaceChildren(...items);
    view.card.dataset.series = String(entries.filter((e) => e.visible).length);
  }

  // ---- latest values -----------------------------------------------------------

  let tableCells = { steps: new Map(), values: new Map() };

  function buildTable(runs, metrics) {
    const table = $("latest-table");
    const head = document.createElement("tr");
    const corner = document.createElement("th");
    corner.scope = "col";
    corner.textContent = "metric";
    head.append(corner);
    for (const run of runs) {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.run = run.name;
      const swatch = document.createElement("span");
      swatch.className = "swatch-inline";
      th.style.setProperty("--swatch", run.color);
      th.append(swatch, document.createTextNode(run.name));
      head.append(th);
    }
    const body = document.createElement("tbody");
    tableCells = { steps: new Map(), values: new Map(), heads: new Map() };
    for (const th of head.querySelectorAll("th[data-run]")) tableCells.heads.set(th.dataset.run, th);
    const addRow = (label, className) => {
      const row = document.createElement("tr");
      if (className) row.className = className;
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = label;
      row.append(th);
      body.append(row);
      return row;
    };
    const stepRow = addRow("step", "step-row");
    for (const run of runs) {
      const td = document.createElement("td");
      td.dataset.run = run.name;
      stepRow.append(td);
      tableCells.steps.set(run.name, td);
    }
    for (const metric of metrics.slice().sort(compareNames)) {
      const row = addRow(metric);
      row.dataset.metric = metric;
      for (const run of runs) {
        const td = document.createElement("td");
        td.dataset.run = run.name;
        td.dataset.metric = metric;
        row.append(td);
        let cells = tableCells.values.get(run.name);
        if (!cells) tableCells.values.set(run.name, (cells = new Map()));
        cells.set(metric, td);
      }
    }
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceWith(body);
    table.hidden = metrics.length === 0;
    $("latest-empty").hidden = metrics.length > 0;
  }

  function updateTable(runs) {
    for (const run of runs) {
      const hidden = !run.visible;
      const head = tableCells.heads.get(run.name);
      if (head) head.classList.toggle("hidden-run", hidden);
      const stepCell = tableCells.steps.get(run.name);
      if (stepCell) {
        setText(stepCell, run.lastStep == null ? "–" : String(run.lastStep));
        stepCell.classList.toggle("hidden-run", hidden);
      }
      const cells = tableCells.values.get(run.name);
      if (!cells) continue;
      for (const [metric, td] of cells) {
        const item = run.latest.get(metric);
        setText(td, item ? formatValue(item.value) : "–");
        td.classList.toggle("nonfinite", Boolean(item) && !isFinite(item.value));
        td.classList.toggle("hidden-run", hidden);
        if (item) td.title = `${run.name} · ${metric} at step ${item.step}: ${item.value}`;
      }
    }
  }

  // ---- tooltip -------------------------------------------------------------------

  function showTooltip(info) {
    const tip = $("tooltip");
    if (!info || info.rows.length === 0) {
      tip.hidden = true;
      return;
    }
    const head = document.createElement("div");
    head.className = "tt-head";
    head.textContent = `step ${info.step}`;
    const rows = info.rows.map((row) => {
      const line = document.createElement("div");
      line.className = "tt-row";
      line.style.setProperty("--swatch", row.color);
      const swatch = document.createElement("span");
      swatch.className = "tt-swatch";
      const label = document.createElement("span");
      label.className = "tt-run";
      label.textContent = row.label;
      if (row.step !== info.step) {
        const at = document.createElement("span");
        at.className = "tt-step";
        at.textContent = `@${row.step}`;
        label.append(at);
      }
      const value = document.createElement("span");
      value.className = "tt-val";
      value.textContent = formatValue(row.value);
      line.append(swatch, label, value);
      return line;
    });
    tip.replaceChildren(head, ...rows);
    tip.hidden = false;
    const gap = 14;
    const { width, height } = tip.getBoundingClientRect();
    let x = info.clientX + gap;
    let y = info.clientY + gap;
    if (x + width > window.innerWidth - 4) x = info.clientX - gap - width;
    if (y + height > window.innerHeight - 4) y = info.clientY - gap - height;
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${Math.max(4, y)}px`;
  }

  // ---- event rate ------------------------------------------------------------------

  /** Events per second over the last 5 s, in 250 ms buckets. */
  class RateMeter {
    constructor() {
      this.bucketMs = 250;
      this.buckets = new Array(20).fill(0);
      this.current = Math.floor(performance.now() / this.bucketMs);
      this.started = performance.now();
      this.samples = [];
    }
    _advance(now) {
      const index = Math.floor(now / this.bucketMs);
      const steps = Math.min(index - this.current, this.buckets.length);
      for (let i = 1; i <= steps; i++) this.buckets[(this.current + i) % this.buckets.length] = 0;
      if (index > this.current) this.current = index;
    }
    count() {
      const now = performance.now();
      this._advance(now);
      this.buckets[this.current % this.buckets.length] += 1;
    }
    value() {
      const now = performance.now();
      this._advance(now);
      const windowS = Math.min(this.buckets.length * this.bucketMs, Math.max(now - this.started, 1000)) / 1000;
      return this.buckets.reduce((a, b) => a + b, 0) / windowS;
    }
    history() {
      this.samples.push(this.value());
      if (this.samples.length > 120) this.samples.shift();
      return this.samples;
    }
  }

  function showRate(value, history) {
    setText($("event-rate"), value >= 100 ? String(Math.round(value)) : value.toFixed(value >= 10 ? 0 : 1));
    const canvas = $("rate-spark");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (history.length < 2) return;
    const max = Math.max(1, ...history);
    // Inset by the line's width, so the newest point (at the right) and the
    // peak (at the top) are drawn whole instead of half outside the canvas;
    // the samples kept so far span the whole width.
    const pad = 1.5;
    const dx = (w - 2 * pad) / (history.length - 1);
    const points = history.map((v, i) => [pad + i * dx, h - pad - (v / max) * (h - 2 * pad)]);
    const accentColor = readAccent();
    ctx.beginPath();
    ctx.moveTo(points[0][0], h);
    for (const [x, y] of points) ctx.lineTo(x, y);
    ctx.lineTo(points[points.length - 1][0], h);
    ctx.closePath();
    ctx.globalAlpha = 0.18;
    ctx.fillStyle = accentColor;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.strokeStyle = accentColor;
    ctx.lineWidth = 1.25;
    ctx.stroke();
  }

  let accent = null;
  function readAccent() {
    if (!accent) accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim();
    return accent;
  }
  onThemeChange(() => { accent = null; });

  // ---- server facts -------------------------------------------------------------------

  function duration(seconds) {
    if (typeof seconds !== "number") return "–";
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function showServerFacts(status) {
    const facts = $("server-facts");
    const set = (name, text) => setText(facts.querySelector(`[data-fact="${name}"]`), text);
    const num = (v) => (typeof v === "number" ? v.toLocaleString("en-US") : "–");
    const history = status.history || {};
    const clients = status.clients || {};
    const events = status.events || {};
    set("uptime", duration(status.uptime_s));
    set("last_seq", num(status.last_seq));
    set("history", `${num(history.size)} / ${num(history.capacity)}`);
    set("clients", `SSE ${num(clients.sse)} · WS ${num(clients.ws)}`);
    set("published", num(events.published));
    set("dropped", num(events.dropped));
    set("restarts", num(status.restarts));
    set("epoch", typeof status.epoch === "string" ? status.epoch.slice(0, 12) : "–");
    const epochCell = facts.querySelector('[data-fact="epoch"]');
    if (epochCell) epochCell.title = String(status.epoch || "");
  }

  global.StreamHubPanels = {
    runColor, compareNames, readTheme, onThemeChange, hiddenRuns, saveHiddenRuns,
    setPill, showNotice, bindRunButtons, renderRuns, updateRunMeta,
    createChartCard, observeSize, renderLegend,
    buildTable, updateTable, showTooltip, RateMeter, showRate, showServerFacts,
  };
})(window);
