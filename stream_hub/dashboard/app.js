/* stream_hub dashboard — the app: state, loading from REST, following SSE,
 * and one render pass per animation frame.
 *
 * Data flow:
 *   1. GET /api/status and /api/runs; remember the snapshot's last_seq.
 *   2. Open SSE from that seq at once (events are buffered while loading).
 *   3. GET each run's whole-run curve per metric; each answer carries its own
 *      last_seq, the series' "floor": live events at or below it are already in
 *      the curve.
 *   4. Apply the buffer, then every live event as it comes. Events are applied
 *      to the data immediately (cheap) and drawn in the next animation frame;
 *      only charts whose data changed are redrawn.
 * Any event whose seq is not above the last applied one is a duplicate and
 * dropped; a `gap` event, or a new epoch, reloads the curves from REST.
 */
(function () {
  "use strict";

  const { Series, toNumber } = window.StreamHubSeries;
  const { LineChart } = window.StreamHubChart;
  const { fetchJSON, Backoff, SseFeed, WsMonitor, RestMonitor } = window.StreamHubTransports;
  const ui = window.StreamHubPanels;

  const REST_MAX_POINTS = 1500;   // buckets per curve asked of the server (up to 3 points each)
  const SERIES_CAP = 5000;        // points per curve kept here before thinning
  const SERIES_FETCHES = 4;       // curve requests in flight at once
  const EVENT_TYPES = ["metric", "log", "status", "gap", "shutdown"];
  const TOKEN = new URLSearchParams(location.search).get("token");

  const state = {
    epoch: null,
    lastSeq: 0,            // the highest seq taken in; anything at or below is a duplicate
    snapshotSeq: 0,        // last_seq of the latest /api/runs snapshot
    ports: null,
    urls: null,
    status: null,          // the last /api/status answer
    runs: new Map(),       // name -> run (see ensureRun)
    views: new Map(),      // metric -> chart view (see ensureView)
    loading: false,
    reloadQueued: false,
    generation: 0,         // bumped when everything is thrown away (new epoch)
    buffer: [],            // events received while loading
    booted: false,
    transports: { sse: "connecting", ws: "connecting", rest: "connecting" },
    stats: {
      received: 0, applied: 0, duplicates: 0, belowFloor: 0, gaps: 0, reloads: 0,
      epochChanges: 0, frames: 0, chartDraws: 0, lastFrameMs: 0, maxFrameMs: 0,
    },
  };

  // What the next frame has to redo: charts to draw, charts whose set of runs
  // changed, the run list, the table's numbers and its rows and columns.
  const dirty = {
    charts: new Set(), entries: new Set(), runs: false, runMeta: false, table: false, tableShape: false,
  };
  let theme = ui.readTheme();
  let frameHandle = 0;
  let lastTableAt = 0;
  const rate = new ui.RateMeter();

  // ---- runs, series, chart views -------------------------------------------

  function ensureRun(name) {
    let run = state.runs.get(name);
    if (!run) {
      run = {
        name,
        color: ui.runColor(state.runs.size),
        visible: !ui.hiddenRuns.has(name),
        lastStep: null,
        events: 0,
        lastTs: null,
        series: new Map(),   // metric -> Series
        latest: new Map(),   // metric -> {value, step, seq}
      };
      state.runs.set(name, run);
      dirty.runs = dirty.tableShape = true;
    }
    return run;
  }

  function ensureSeries(run, metric) {
    let series = run.series.get(metric);
    if (!series) {
      series = new Series(SERIES_CAP);
      run.series.set(metric, series);
      ensureView(metric);
      dirty.entries.add(metric);
      dirty.tableShape = true;
    }
    return series;
  }

  function ensureView(metric) {
    let view = state.views.get(metric);
    if (!view) {
      view = ui.createChartCard(metric, state.views);
      view.chart = new LineChart(view.canvas, {
        onHover: (info) => ui.showTooltip(info),
        onChange: () => markChart(metric),
      });
      view.legend.addEventListener("click", (event) => {
        const item = event.target.closest("[data-run]");
        if (item) toggleRun(item.dataset.run);
      });
      ui.observeSize(view, () => markChart(metric));
      state.views.set(metric, view);
    }
    return view;
  }

  function markChart(metric) {
    dirty.charts.add(metric);
    requestFrame();
  }

  function toggleRun(name, visible) {
    const run = state.runs.get(name);
    if (!run) return;
    run.visible = visible === undefined ? !run.visible : visible;
    ui.saveHiddenRuns(state.runs);
    for (const metric of run.series.keys()) dirty.entries.add(metric);
    dirty.runs = dirty.table = true;
    requestFrame();
  }

  // ---- applying events -------------------------------------------------------

  function receive(type, event) {
    if (!event || typeof event !== "object") return;
    state.stats.received += 1;
    if (event.epoch && state.epoch && event.epoch !== state.epoch) {
      epochChanged(event.epoch);
      return;
    }
    const seq = typeof event.seq === "number" ? event.seq : null;
    if (type === "gap") {
      // History lost between us and the server: the curves have holes, so
      // fetch them again; events keep flowing meanwhile (into the buffer).
      state.stats.gaps += 1;
      if (seq !== null && seq > state.lastSeq) state.lastSeq = seq;
      scheduleReload();
      return;
    }
    if (seq !== null) {
      if (seq <= state.lastSeq) {
        state.stats.duplicates += 1;
        return;
      }
      state.lastSeq = seq;
    }
    rate.count();
    if (state.loading) {
      state.buffer.push(event);
      return;
    }
    apply(event);
  }

  function apply(event) {
    if (event.type !== "metric" || !event.metrics || typeof event.metrics !== "object") return;
    const seq = typeof event.seq === "number" ? event.seq : Infinity;
    const run = ensureRun(event.run == null ? "default" : String(event.run));
    const step = typeof event.step === "number" ? event.step : run.lastStep == null ? 0 : run.lastStep + 1;
    for (const [metric, raw] of Object.entries(event.metrics)) {
      const value = toNumber(raw);
      const series = ensureSeries(run, metric);
      if (seq <= series.floor) {
        state.stats.belowFloor += 1;
      } else {
        series.add(step, value);
        dirty.charts.add(metric);
      }
      const previous = run.latest.get(metric);
      if (!previous || seq >= previous.seq) run.latest.set(metric, { value, step, seq });
    }
    if (seq > state.snapshotSeq) run.events += 1;
    run.lastStep = run.lastStep == null ? step : Math.max(run.lastStep, step);
    if (typeof event.ts === "number") run.lastTs = event.ts;
    state.stats.applied += 1;
    dirty.table = dirty.runMeta = true;
    requestFrame();
  }

  // ---- loading from REST -----------------------------------------------------

  const api = (path, timeout) => fetchJSON(path, { token: TOKEN, timeout });

  function applyStatus(status) {
    state.status = status;
    const portsChanged = state.ports && status.ports &&
      ["sse", "ws"].some((k) => state.ports[k] !== status.ports[k]);
    state.ports = status.ports || state.ports;
    state.urls = status.urls || state.urls;
    ui.showServerFacts(status);
    if (status.epoch && state.epoch && status.epoch !== state.epoch) {
      epochChanged(status.epoch);
    } else if (portsChanged && state.booted) {
      sse.stop();
      sse.start();
      ws.stop();
      ws.start();
    }
  }

  async function loadFromRest() {
    const generation = state.generation;
    const current = () => generation === state.generation;
    state.loading = true;
    state.buffer = [];
    state.stats.reloads += 1;
    try {
      const status = await api("/api/status");
      if (current()) applyStatus(status);
      if (!current()) return; // a new epoch started a fresh load
      const snapshot = await api("/api/runs");
      if (!current()) return;
      state.epoch = snapshot.epoch || status.epoch || state.epoch;
      state.snapshotSeq = Number(snapshot.last_seq) || 0;
      if (!state.booted) {
        // Follow live from the snapshot on; what the curves below already hold
        // is skipped per series by its floor.
        state.lastSeq = state.snapshotSeq;
        state.booted = true;
        sse.start();
        ws.start();
      }
      const jobs = [];
      for (const info of snapshot.runs || []) {
        const run = ensureRun(String(info.run));
        if (typeof info.last_step === "number") run.lastStep = info.last_step;
        if (typeof info.events === "number") run.events = info.events;
        if (typeof info.last_ts === "number") run.lastTs = info.last_ts;
        for (const metric of info.metrics || []) jobs.push([run, metric]);
      }
      const latest = api("/api/metrics/latest").catch(() => null);
      await pool(jobs, SERIES_FETCHES, ([run, metric]) => current() && loadSeries(run, metric, current));
      const latestAnswer = await latest;
      if (current()) applyLatest(latestAnswer, state.snapshotSeq);
    } finally {
      if (current()) finishLoading();
    }
  }

  function finishLoading() {
    state.loading = false;
    const buffered = state.buffer;
    state.buffer = [];
    for (const event of buffered) apply(event);
    dirty.runs = dirty.table = dirty.tableShape = true;
    requestFrame();
    if (state.reloadQueued) {
      state.reloadQueued = false;
      scheduleReload();
    }
  }

  async function loadSeries(run, metric, current) {
    const path = `/api/runs/${encodeURIComponent(run.name)}/series` +
      `?metric=${encodeURIComponent(metric)}&max_points=${REST_MAX_POINTS}`;
    let answer;
    try {
      answer = await api(path, 15000);
    } catch (_) {
      return; // the live feed still fills this curve from now on
    }
    if (!current()) return;
    const series = ensureSeries(run, metric);
    const floor = Number(answer.last_seq);
    const steps = answer.steps || [];
    // points_seen above the bucket count: buckets hold several points each.
    const exact = !(Number(answer.points_seen) > steps.length);
    series.loadBuckets(answer, run.lastStep, isFinite(floor) ? floor : state.snapshotSeq, exact);
    markChart(metric);
  }

  function applyLatest(answer, seq) {
    if (!answer || typeof answer.runs !== "object") return;
    for (const [name, info] of Object.entries(answer.runs)) {
      if (!info || typeof info.metrics !== "object") continue;
      const run = ensureRun(name);
      for (const [metric, raw] of Object.entries(info.metrics)) {
        const previous = run.latest.get(metric);
        if (previous && previous.seq > seq) continue;
        run.latest.set(metric, { value: toNumber(raw), step: info.step, seq });
      }
    }
  }

  async function pool(items, size, work) {
    let next = 0;
    const worker = async () => {
      while (next < items.length) await work(items[next++]);
    };
    await Promise.all(Array.from({ length: Math.min(size, items.length) }, worker));
  }

  let reloadTimer = 0;
  const reloadBackoff = new Backoff(150, 8000);
  function scheduleReload(delay = 150) {
    if (state.loading) {
      state.reloadQueued = true;
      return;
    }
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => {
      loadFromRest().then(
        () => reloadBackoff.reset(),
        () => scheduleReload(reloadBackoff.next()),
      );
    }, delay);
  }

  /** A new epoch: the server lost its history (a new process). Start over. */
  function epochChanged(epoch) {
    state.stats.epochChanges += 1;
    state.generation += 1;
    state.loading = false;
    state.epoch = epoch;
    state.lastSeq = 0;
    state.snapshotSeq = 0;
    state.buffer = [];
    for (const view of state.views.values()) view.card.remove();
    state.views.clear();
    state.runs.clear();
    dirty.charts.clear();
    dirty.entries.clear();
    dirty.runs = dirty.tableShape = dirty.table = true;
    state.booted = false;
    sse.stop();
    ws.stop();
    boot();
  }

  // ---- transports ------------------------------------------------------------

  function baseUrl(kind) {
    // Same host as this page (the name the user typed), the server's port.
    const port = state.ports && state.ports[kind];
    if (port) {
      const scheme = kind === "ws" ? (location.protocol === "https:" ? "wss:" : "ws:") : location.protocol;
      return `${scheme}//${location.hostname}:${port}`;
    }
    return (state.urls && state.urls[kind]) || "";
  }

  function withToken(url) {
    return TOKEN ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : url;
  }

  function setTransport(name, status, text) {
    state.transports[name] = status;
    ui.setPill(name, status, text);
  }

  const sse = new SseFeed({
    types: EVENT_TYPES,
    // The epoch lets the server tell a resume point of a previous process
    // from one of its own (it then replays its history after a gap event).
    url: () => withToken(`${baseUrl("sse")}/events?last_event_id=${state.lastSeq}` +
      (state.epoch ? `&epoch=${encodeURIComponent(state.epoch)}` : "")),
    onEvent: receive,
    onState: (status, text) => setTransport("sse", status, text),
    beforeReconnect: async () => applyStatus(await api("/api/status", 2000)),
  });

  const ws = new WsMonitor({
    url: () => withToken(`${baseUrl("ws")}/`),
    onState: (status, text) => setTransport("ws", status, text),
  });

  const rest = new RestMonitor({
    interval: 2000,
    token: TOKEN,
    onState: (status, text) => setTransport("rest", status, text),
    onTick: (status) => {
      // The facts panel, and the way a restarted server with a new epoch or
      // new ports is noticed even while no event arrives.
      if (status === "connected" && state.booted) api("/api/status", 2000).then(applyStatus, () => {});
    },
  });

  // ---- rendering -------------------------------------------------------------

  function requestFrame() {
    if (!frameHandle) frameHandle = requestAnimationFrame(frame);
  }

  function frame(now) {
    frameHandle = 0;
    const started = performance.now();
    const runs = Array.from(state.runs.values());
    if (dirty.runs) {
      ui.renderRuns(runs, toggleRun);
      dirty.runs = false;
      dirty.runMeta = true;
    }
    for (const metric of dirty.entries) {
      const view = state.views.get(metric);
      if (!view) continue;
      const entries = runs.filter((run) => run.series.has(metric)).map((run) => ({
        key: run.name, label: run.name, color: run.color, visible: run.visible, series: run.series.get(metric),
      }));
      view.chart.setEntries(entries);
      ui.renderLegend(view, entries);
      dirty.charts.add(metric);
    }
    dirty.entries.clear();
    if (dirty.tableShape) {
      ui.buildTable(runs, Array.from(state.views.keys()));
      dirty.tableShape = false;
      dirty.table = true;
    }
    // Numbers that change 50 times a second cannot be read anyway: the table
    // and the run list follow at most 10 times a second.
    if ((dirty.table || dirty.runMeta) && now - lastTableAt >= 100) {
      if (dirty.table) ui.updateTable(runs);
      if (dirty.runMeta) ui.updateRunMeta(runs);
      dirty.table = dirty.runMeta = false;
      lastTableAt = now;
    } else if (dirty.table || dirty.runMeta) {
      requestFrame();
    }
    for (const metric of dirty.charts) {
      const view = state.views.get(metric);
      if (!view) continue;
      view.chart.draw(theme);
      state.stats.chartDraws += 1;
    }
    dirty.charts.clear();
    const ms = performance.now() - started;
    state.stats.frames += 1;
    state.stats.lastFrameMs = ms;
    state.stats.maxFrameMs = Math.max(state.stats.maxFrameMs, ms);
  }

  function redrawAll() {
    theme = ui.readTheme();
    for (const metric of state.views.keys()) dirty.charts.add(metric);
    requestFrame();
  }

  // ---- inspection (used by the browser test; handy in the console) ----------

  function debug() {
    const series = {};
    for (const run of state.runs.values()) {
      series[run.name] = {};
      for (const [metric, s] of run.series) {
        series[run.name][metric] = {
          points: s.length(),
          minStep: s.firstStep(),
          maxStep: s.lastStep(),
          lastValue: s.length() ? s.values[s.length() - 1] : null,
          floor: s.floor,
          rewrites: s.rewrites,
          thinnings: s.thinnings,
        };
      }
    }
    const charts = {};
    for (const [metric, view] of state.views) charts[metric] = view.chart.info();
    const latest = {};
    for (const run of state.runs.values()) {
      latest[run.name] = {};
      for (const [metric, item] of run.latest) latest[run.name][metric] = { value: item.value, step: item.step };
    }
    return {
      epoch: state.epoch,
      lastSeq: state.lastSeq,
      loading: state.loading,
      transports: { ...state.transports },
      connects: { sse: sse.connects, ws: ws.connects },
      wsMessages: ws.messages,
      runs: Array.from(state.runs.values(), (run) => ({
        run: run.name, visible: run.visible, lastStep: run.lastStep, events: run.events, color: run.color,
      })),
      metrics: Array.from(state.views.keys()),
      series,
      charts,
      latest,
      rate: rate.value(),
      stats: { ...state.stats },
    };
  }

  // ---- start -----------------------------------------------------------------

  const bootBackoff = new Backoff(500, 8000);
  function boot() {
    loadFromRest().then(
      () => {
        bootBackoff.reset();
        ui.showNotice(null);
      },
      (error) => {
        if (error && error.status === 401) {
          ui.showNotice("This server needs a read token: open the dashboard as /?token=<read token>.");
        } else if (!state.booted) {
          ui.showNotice(`Cannot load from the server (${(error && error.message) || error}); retrying.`);
        }
        if (!state.booted) setTimeout(boot, bootBackoff.next());
        else scheduleReload(reloadBackoff.next());
      },
    );
  }

  ui.bindRunButtons(
    () => { for (const run of state.runs.values()) toggleRun(run.name, true); },
    () => { for (const run of state.runs.values()) toggleRun(run.name, false); },
  );
  ui.onThemeChange(redrawAll);
  setInterval(() => {
    ui.showRate(rate.value(), rate.history());
    dirty.runMeta = true; // "updated 3 s ago" ages without events too
    requestFrame();
  }, 500);

  window.streamHub = {
    debug,
    reload: () => scheduleReload(),
    setRunVisible: (name, visible) => toggleRun(name, visible),
  };

  rest.start();
  boot();
})();
