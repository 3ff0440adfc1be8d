/* stream_hub dashboard — the DOM around the charts: status pills, the
 * notice, chart legends, the comparison table (every run's metrics at the
 * latest step or at one chosen step), the tooltip, the event rate and the
 * server facts. Names and values from the server are always set as text
 * (never as HTML): run and metric names are user data.
 */
(function (global) {
  "use strict";

  const A = global.StreamHubAxes;
  const { formatValue } = A;
  const $ = (id) => document.getElementById(id);

  const compareNames = (a, b) => a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  // ---- theme --------------------------------------------------------------

  function readTheme() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return {
      grid: v("--grid"), axis: v("--axis"), muted: v("--muted"), text: v("--text"),
      crosshair: v("--crosshair"), panel: v("--panel"), accent: v("--accent"),
      selection: v("--selection"), font: v("--font") || "sans-serif",
      scheme: matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark",
    };
  }

  function onThemeChange(callback) {
    const query = matchMedia("(prefers-color-scheme: light)");
    if (query.addEventListener) query.addEventListener("change", callback);
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

  // ---- legends ------------------------------------------------------------------

  const LEGEND_FOLD = 6; // a legend of more entries shows the first LEGEND_SHOWN and a button for the rest
  const LEGEND_SHOWN = 4;

  /**
   * One button per run (or group) shown in a chart (click: hide or show the
   * run, or every run of the group, everywhere), named with the chart's
   * metric ("loss: exp1"). A legend of more than LEGEND_FOLD entries is
   * folded to its first few and a "+N more" button (its state kept per
   * chart: view.legendOpen); open, it scrolls past a few lines. The focus
   * stays on the same button when the legend is rebuilt.
   * items: [{run, group?, label, title, color, visible, band}]; toggle(item).
   */
  function renderLegend(view, items, toggle) {
    const focused = document.activeElement;
    const inLegend = focused && view.legend.contains(focused);
    const focusedKey = inLegend ? focused.dataset.key : null;
    const folded = items.length > LEGEND_FOLD && !view.legendOpen;
    const shown = folded ? items.slice(0, LEGEND_SHOWN) : items;
    const nodes = shown.map((entry) => {
      const item = document.createElement("button");
      item.type = "button";
      item.className = entry.group != null ? "item group" : "item";
      item.dataset.key = entry.group != null ? `group\u0000${entry.group}` : entry.run;
      if (entry.group != null) item.dataset.group = entry.group; else item.dataset.run = entry.run;
      item.dataset.visible = String(entry.visible);
      item.setAttribute("aria-pressed", String(entry.visible));
      item.style.setProperty("--swatch", entry.color);
      item.title = `${entry.title || entry.label}: click to ${entry.visible ? "hide" : "show"}`;
      item.setAttribute("aria-label", `${view.metric}: ${entry.title || entry.label}`);
      const line = document.createElement("span");
      line.className = entry.band ? "line band" : "line";
      line.setAttribute("aria-hidden", "true");
      const label = document.createElement("span");
      label.textContent = entry.label;
      item.append(line, label);
      item.addEventListener("click", () => toggle(entry));
      return item;
    });
    if (items.length > LEGEND_FOLD) {
      const more = document.createElement("button");
      more.type = "button";
      more.className = "legend-more";
      more.dataset.key = "\u0000more";
      more.setAttribute("aria-expanded", String(!folded));
      if (!view.legend.id) view.legend.id = `legend-${Math.random().toString(36).slice(2, 10)}`;
      more.setAttribute("aria-controls", view.legend.id);
      more.textContent = folded ? `+${items.length - shown.length} more` : "fewer";
      more.setAttribute("aria-label", folded
        ? `${view.metric}: show all ${items.length} in the legend`
        : `${view.metric}: show the legend's first ${LEGEND_SHOWN}`);
      more.title = folded ? `Show all ${items.length} entries` : "Fold the legend";
      more.addEventListener("click", () => {
        view.legendOpen = folded;
        renderLegend(view, items, toggle);
        const again = view.legend.querySelector(".legend-more");
        if (again) again.focus({ preventScroll: true });
      });
      nodes.push(more);
    }
    view.legend.replaceChildren(...nodes);
    view.legend.dataset.open = String(items.length > LEGEND_FOLD && !folded);
    view.legend.dataset.folded = String(folded);
    if (focusedKey != null) {
      const again = nodes.find((node) => node.dataset.key === focusedKey);
      if (again) again.focus({ preventScroll: true });
    }
    view.card.dataset.series = String(items.filter((e) => e.visible).length);
  }

  // ---- the comparison table -----------------------------------------------------
  //
  // Columns are runs, rows their metrics; each cell is the run's latest value,
  // or, once a step is chosen (the step box, or a click on a chart), its value
  // at that step — the point at that step or the last one before it, the mean
  // over ranks for a run with ranks.

  let tableCells = { steps: new Map(), values: new Map(), heads: new Map() };

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
      th.append(swatch, document.createTextNode(run.short || run.name));
      if (run.short && run.short !== run.name) th.title = run.name;
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

  /** A run's value of a metric at `step` (at or before it; mean over ranks): {value, step} or null. */
  function valueAt(run, metric, step) {
    const curves = run.curves.get(metric);
    if (!curves) return null;
    let sum = 0;
    let count = 0;
    let at = null;
    let nonFinite = null;
    for (const series of curves.values()) {
      const i = series.lowerBound(step + 1) - 1;
      if (i < 0) continue;
      const v = series.values[i];
      at = at === null ? series.steps[i] : Math.max(at, series.steps[i]);
      if (Number.isFinite(v)) {
        sum += v;
        count += 1;
      } else {
        nonFinite = v;
      }
    }
    if (at === null) return null;
    return { value: count ? sum / count : nonFinite, step: at };
  }

  /**
   * Fill the table: latest values (step null) or every run's value at `step`;
   * a run that has not reached `step` shows nothing there (its last step in
   * the step cell's tooltip), never a value of an earlier step.
   */
  function updateTable(runs, step) {
    for (const run of runs) {
      const hidden = !run.visible;
      const reached = step == null || (run.lastStep != null && step <= run.lastStep);
      const head = tableCells.heads.get(run.name);
      if (head) head.classList.toggle("hidden-run", hidden);
      const stepCell = tableCells.steps.get(run.name);
      if (stepCell) {
        const shown = step == null ? run.lastStep : reached ? step : null;
        setText(stepCell, shown == null ? "–" : String(shown));
        stepCell.classList.toggle("hidden-run", hidden);
        stepCell.classList.toggle("not-reached", !reached);
        const title = reached ? "" : run.lastStep == null
          ? `${run.name} has no step yet`
          : `${run.name} has not reached step ${step}: its last step is ${run.lastStep}`;
        if (stepCell.title !== title) stepCell.title = title;
      }
      const cells = tableCells.values.get(run.name);
      if (!cells) continue;
      for (const [metric, td] of cells) {
        const item = step == null ? run.latest.get(metric) : reached ? valueAt(run, metric, step) : null;
        setText(td, item ? formatValue(item.value) : "–");
        td.classList.toggle("nonfinite", Boolean(item) && !isFinite(item.value));
        td.classList.toggle("hidden-run", hidden);
        td.classList.toggle("earlier", Boolean(item) && step != null && item.step !== step);
        const title = item ? `${run.name} · ${metric} at step ${item.step}: ${item.value}` : "";
        if (td.title !== title) td.title = title;
      }
    }
    setText($("compare-caption"), step == null ? "latest step of each run" : `step ${step} in every run`);
  }

  // ---- tooltip -------------------------------------------------------------------

  function xLabel(mode, x) {
    if (mode === "wall") return A.formatTimestamp(x);
    if (mode === "relative") return `${A.formatDuration(x)} into the run`;
    return `step ${x}`;
  }

  function showTooltip(info) {
    const tip = $("tooltip");
    if (!info || info.rows.length === 0) {
      tip.hidden = true;
      return;
    }
    const head = document.createElement("div");
    head.className = "tt-head";
    head.textContent = info.xMode === "step" ? `step ${info.step}` : `${xLabel(info.xMode, info.x)} · step ${info.step}`;
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
      let text = formatValue(row.value);
      if (row.range) text += ` (${formatValue(row.range[0])} – ${formatValue(row.range[1])})`;
      if (row.raw !== undefined) text += ` · raw ${formatValue(row.raw)}`;
      value.textContent = text;
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
    showDrops(facts, status, num);
    set("restarts", num(status.restarts));
    set("epoch", typeof status.epoch === "string" ? status.epoch.slice(0, 12) : "–");
    const epochCell = facts.querySelector('[data-fact="epoch"]');
    if (epochCell) epochCell.title = String(status.epoch || "");
  }

  // Events lost, per cause of status.drops (a hosting hub's), and what each means.
  const LOST = [
    ["subscribers", "skipped by clients that fell behind (they got a gap)"],
    ["hub", "forgotten by the hub before it committed them (its loop fell far behind)"],
    ["forwarder", "dropped by joined processes before they reached the hub"],
    ["store", "not written by the store"],
  ];

  /**
   * "dropped": every event lost, whatever lost it, each cause named (the
   * contract's events.dropped counts only the first two); "curves": what
   * the run curves left out or only sampled.
   */
  function showDrops(facts, status, num) {
    const events = status.events || {};
    const drops = status.drops && typeof status.drops === "object" ? status.drops : null;
    const dropped = facts.querySelector('[data-fact="dropped"]');
    const curves = facts.querySelector('[data-fact="curves"]');
    if (!drops) {
      setText(dropped, num(events.dropped));
      setText(curves, "–");
      return;
    }
    const count = (cause) => (typeof drops[cause] === "number" ? drops[cause] : 0);
    const lost = LOST.filter(([cause]) => count(cause) > 0);
    const total = LOST.reduce((sum, [cause]) => sum + count(cause), 0);
    setText(dropped, lost.length > 1 || (lost.length && lost[0][0] !== "subscribers")
      ? `${num(total)} (${lost.map(([cause]) => `${cause} ${num(count(cause))}`).join(" · ")})`
      : num(total));
    const tip = lost.map(([cause, what]) => `${num(count(cause))} ${what}`).join("\n");
    if (dropped.title !== tip) dropped.title = tip;
    const parts = [];
    if (count("sampled")) parts.push(`${num(count("sampled"))} events sampled`);
    if (count("curve")) parts.push(`${num(count("curve"))} values left out`);
    setText(curves, parts.length ? parts.join(" · ") : "every point");
    const curveTip = parts.length
      ? "Sampled: metric events an overloaded hub gave its curves only a sample of (every extreme kept)." +
        "\nLeft out: values of curves past max_series or max_metrics."
      : "";
    if (curves.title !== curveTip) curves.title = curveTip;
  }

  /** A chart's resolution: "1 point ≈ 300 steps" where a point stands for more than one step. */
  function showResolution(view, steps) {
    const label = view.card.querySelector(".chart-resolution");
    if (!label) return;
    label.hidden = !(steps > 1);
    setText(label, steps > 1 ? `1 point \u2248 ${Math.round(steps).toLocaleString("en-US")} steps` : "");
  }

  global.StreamHubPanels = {
    compareNames, readTheme, onThemeChange, setPill, showNotice, renderLegend,
    buildTable, updateTable, valueAt, showTooltip, RateMeter, showRate, showServerFacts, showResolution,
  };
})(window);
