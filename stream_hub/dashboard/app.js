/* stream_hub dashboard — the app: state, loading from REST, following SSE,
 * and one render pass per animation frame within a time budget.
 *
 * Data flow:
 *   1. GET /api/status and /api/runs; remember the snapshot's last_seq.
 *   2. Open SSE from that seq at once (events are buffered while loading).
 *   3. GET each run's whole curves (every metric, per rank for a run with
 *      ranks; the whole-run curves the hub keeps, never the events): each
 *      answer carries its own last_seq, the curve's "floor": live events at or
 *      below it are already in the curve.
 *   4. Apply the buffer, then every live event as it comes; then GET the
 *      newest page of the log's record (/api/logs; it can keep a hub with a
 *      long history busy for seconds: the charts do not wait for it). Events change the
 *      data at once (cheap); charts are drawn in animation frames, only those
 *      whose data changed and that can be seen, as many as fit in the frame's
 *      budget (the others in the next frames, least recently drawn first).
 * Any event whose seq is not above the last applied one is a duplicate and
 * dropped; a `gap` event, or a new epoch, reloads from REST. /api/runs is
 * polled for each run's state (running, finished, failed, killed, stale).
 *
 * The view (runs shown, x axis, each chart's settings and zoom, ...) is kept
 * in the URL's hash (urlstate.js): read at start and when the user changes
 * the hash, written (debounced) after each change.
 */
(function (global) {
  "use strict";

  const { Series } = global.StreamHubSeries;
  const Model = global.StreamHubModel;
  const { fetchJSON, Backoff, SseFeed, WsMonitor, RestMonitor } = global.StreamHubTransports;
  const ui = global.StreamHubPanels;
  const Runs = global.StreamHubRuns;
  const { ChartGrid } = global.StreamHubLayout;
  const { LogPanel } = global.StreamHubLogs;
  const { DetailStore } = global.StreamHubDetail;
  const { ChartViews, SYSTEM_RUN } = global.StreamHubViews;
  const Export = global.StreamHubExport;
  const Loading = global.StreamHubLoading;
  const Inspect = global.StreamHubInspect;
  const { RunSelection } = global.StreamHubSelection;
  const UrlState = global.StreamHubUrlState;
  const { MediaPanels } = global.StreamHubMedia;
  const Sweeps = global.StreamHubSweeps;

  const REST_MAX_POINTS = 1500;   // buckets per curve asked of the server (up to 3 points each)
  const SERIES_CAP = 5000;        // points per curve kept here before thinning
  const RUN_FETCHES = 6;          // curve requests in flight at once (one per run)
  const FRAME_BUDGET_MS = 6;      // script per animation frame for charts after the first one drawn
  const LIVE_REDRAW_MS = 150;     // a chart redrawn for new data at most this often...
  const LIVE_REDRAW_COST = 15;    // ...and at most once per this many times its drawing time
  const LOADING_PASS_MS = 500;    // while loading: DOM and charts refreshed at most this often
  const RUNS_POLL_MS = 5000;      // /api/runs: states, ranks, hyper-parameters
  const PAST_PAGE = 20;           // persisted runs (stream-hub serve) listed at a time
  const LOG_BACKLOG = 1000;       // log lines per page of the record (on load, per run, "Load earlier")
  const EVENT_TYPES = ["metric", "log", "config", "run_end", "alert", "histogram", "image", "status", "gap", "shutdown"];
  const TOKEN = new URLSearchParams(location.search).get("token");

  const settings = new global.StreamHubSettings.Settings();
  const selection = new RunSelection();
  // The run search and grouping (sweeps.js); a run shows when selected and found.
  const finder = new Sweeps.RunFinder({
    change: () => {
      refilter();
      dirty.runs = dirty.tableShape = dirty.params = true;
      markAll(true);
      viewChanged();
    },
  });
  let paramsDiff = false; // the hyper-parameter table: only the keys that differ
  let namesPrefix = null; // the prefix folded out of every run's name (sweeps.js compressNames)
  let chartPrefs = new Map(); // the URL's settings of charts not made yet: view id -> {logY, rankMode, zoom}
  let url = null; // UrlView, once started
  const viewChanged = () => {
    if (url) url.changed();
  };

  const state = {
    epoch: null,
    lastSeq: 0,            // the highest seq taken in; anything at or below is a duplicate
    snapshotSeq: 0,        // last_seq of the latest /api/runs snapshot
    ports: null,
    urls: null,
    status: null,
    runs: new Map(),       // name -> run (see ensureRun)
    loading: false,
    reloadQueued: false,
    generation: 0,         // bumped when everything is thrown away (new epoch)
    buffer: [],            // events received while loading
    booted: false,
    compareStep: null,     // the comparison table's step (null: latest)
    transports: { sse: "connecting", ws: "connecting", rest: "connecting" },
    stats: {
      received: 0, applied: 0, duplicates: 0, belowFloor: 0, gaps: 0, reloads: 0,
      epochChanges: 0, frames: 0, chartDraws: 0, lastFrameMs: 0, maxFrameMs: 0, deferredDraws: 0,
      firstFullRenderMs: null,
    },
    loadedAt: null,        // when the first load finished (for firstFullRenderMs)
    // Persisted runs (a hub serving past runs): a page of them is listed, more on
    // demand; a past run's curves are loaded when it is shown, not at start.
    past: { offset: 0, total: 0, match: "" }, // offset: the next page of the list starts there
  };
  const frameTimes = [];   // ms of each render pass (script), the newest last

  // What the next frame has to redo.
  // Charts in `urgent` were changed by the user (hover, zoom, a setting):
  // drawn in the next frame; the others (new data) at a live pace.
  const dirty = {
    charts: new Set(), urgent: new Set(), entries: new Set(), runs: false, runMeta: false, table: false,
    tableShape: false, params: false,
  };
  let theme = ui.readTheme();
  let frameHandle = 0;
  let lastTableAt = 0;
  let lastRunsAt = 0;
  let tableOnScreen = true;
  const rate = new ui.RateMeter();
  const api = (path, timeout) => fetchJSON(path, { token: TOKEN, timeout });

  const grid = new ChartGrid(document.getElementById("charts"), {
    onVisible: (view) => { if (dirty.charts.has(view.id)) requestFrame(); },
    onResize: (view) => markChart(view.id),
    onLayout: () => {
      requestFrame();
      viewChanged(); // the filter
    },
  });
  const detail = new DetailStore(api);
  const logs = new LogPanel({
    onFilter: viewChanged,
    onEarlier: (run, cursor) => loadLogPage(run, cursor),
    onRun: (run) => loadLogPage(run, null),
  });
  function loadLogPage(run, cursor) {
    const generation = state.generation;
    Loading.loadLogPage(api, logs, run, cursor, LOG_BACKLOG, () => generation === state.generation)
      .then(requestFrame);
  }
  // Histograms and images (media.js): their own cards under the charts.
  const media = new MediaPanels(document.getElementById("media"), {
    api, theme: () => theme, run: (name) => ensureRun(name), changed: () => requestFrame(),
  });
  const views = new ChartViews({
    state, settings, grid, detail,
    theme: () => theme,
    markChart, markEntries,
    toggleRun: (name) => toggleRun(name),
    toggleRuns,
    groupBy: () => finder.group,
    setCompareStep,
    exportCsv, exportJson, exportPng,
    chartPrefs: takeChartPrefs,
    viewChanged,
  });

  // ---- runs, series ------------------------------------------------------------

  function ensureRun(name) {
    let run = state.runs.get(name);
    if (!run) {
      const system = name === SYSTEM_RUN;
      const taken = new Set(Array.from(state.runs.values(), (r) => r.colourSlot));
      const slot = system ? -1 : Runs.colourSlot(name, taken);
      run = Model.createRun(name, {
        system,
        colourSlot: slot,
        color: system ? theme.accent : Runs.slotColour(slot, theme.scheme),
        visible: system || selection.shows(name),
      });
      if (!system) {
        run.matched = finder.matches(run);
        run.visible = run.visible && run.matched;
      }
      state.runs.set(name, run);
      if (!system) logs.knowRun(name);
      dirty.runs = dirty.tableShape = dirty.params = true;
    }
    return run;
  }

  function userRuns() {
    return Array.from(state.runs.values()).filter((run) => !run.system);
  }

  function ensureSeries(run, metric, rankKey) {
    let curves = run.curves.get(metric);
    if (!curves) {
      curves = new Map();
      run.curves.set(metric, curves);
      views.ensure(run.name, metric);
      if (!run.system) dirty.tableShape = true;
    }
    let series = curves.get(rankKey);
    if (!series) {
      series = new Series(SERIES_CAP);
      curves.set(rankKey, series);
      if (rankKey !== "") run.ranks.add(rankKey);
      dirty.entries.add(ChartViews.idOf(run.name, metric));
      if (rankKey !== "") dirty.runMeta = true;
    }
    return series;
  }

  function markChart(id) {
    dirty.charts.add(id);
    dirty.urgent.add(id);
    requestFrame();
  }

  function markEntries(id) {
    dirty.entries.add(id);
    requestFrame();
  }

  function markAll(entries) {
    for (const id of views.views.keys()) {
      dirty.charts.add(id);
      dirty.urgent.add(id);
      if (entries) dirty.entries.add(id);
    }
    requestFrame();
  }

  function toggleRun(name, visible) {
    const run = state.runs.get(name);
    if (!run || run.system) return;
    const shown = visible === undefined ? !run.visible : visible;
    selection.set(name, shown);
    setVisible(run, shown && run.matched !== false);
    viewChanged();
  }

  /** A group's runs (a legend's group button): all hidden when any shows, else all shown. */
  function toggleRuns(names) {
    const runs = names.map((name) => state.runs.get(name)).filter((run) => run && !run.system);
    const shown = !runs.some((run) => run.visible);
    for (const run of runs) {
      selection.set(run.name, shown);
      setVisible(run, shown && run.matched !== false);
    }
    viewChanged();
  }

  /** Which runs the search finds (after it or a run's hyper-parameters changed). */
  function refilter() {
    for (const run of userRuns()) {
      const matched = finder.matches(run);
      if (run.matched !== matched) {
        run.matched = matched;
        dirty.tableShape = dirty.params = dirty.runMeta = true;
        lastRunsAt = 0; // the list follows at once
        for (const metric of run.curves.keys()) dirty.entries.add(ChartViews.idOf(run.name, metric));
      }
      setVisible(run, selection.shows(run.name) && matched);
    }
  }

  /** Short names (the shared prefix folded) for every run; charts relabelled when they change. */
  function renameRuns(users) {
    const { prefix, short } = Sweeps.compressNames(users.map((run) => run.name));
    for (const run of users) run.short = short.get(run.name);
    finder.setKeys(Sweeps.groupKeys(users));
    if (prefix === namesPrefix) return;
    namesPrefix = prefix;
    const note = document.getElementById("runs-prefix");
    note.hidden = !prefix;
    note.textContent = prefix ? `every name starts with ${prefix}\u2026` : "";
    note.title = prefix ? `Shown as \u2026: ${prefix}` : "";
    dirty.tableShape = dirty.params = true;
    for (const id of views.views.keys()) dirty.entries.add(id);
  }

  /** Show only `name`; when it already is the only one shown, show all again. */
  function soloRun(name) {
    const alone = userRuns().every((run) => run.visible === (run.name === name));
    if (alone) selection.showAll(); else selection.solo(name);
    applySelection();
    viewChanged();
  }

  /** Every run shown or hidden as the selection says. */
  function applySelection() {
    for (const run of userRuns()) setVisible(run, selection.shows(run.name) && run.matched !== false);
  }

  function setVisible(run, visible) {
    if (run.visible === visible) return;
    run.visible = visible;
    if (visible && run.past && !run.curvesAsked && !state.loading) loadPastCurves([run]);
    for (const metric of run.curves.keys()) dirty.entries.add(ChartViews.idOf(run.name, metric));
    // The run list is updated in place (not rebuilt: the focus stays on its button), at once.
    dirty.runMeta = dirty.table = dirty.params = true;
    lastRunsAt = 0;
    media.markAll();
    requestFrame();
  }

  function setCompareStep(step) {
    state.compareStep = step == null || !Number.isFinite(step) ? null : Math.round(step);
    document.getElementById("compare-step").value = state.compareStep == null ? "" : String(state.compareStep);
    dirty.table = true;
    lastTableAt = 0;
    requestFrame();
    viewChanged();
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
    const type = event.type;
    if (type === "metric") {
      applyMetric(event);
    } else if (type === "config" || type === "run_end") {
      applyRunEvent(event);
    } else if (type === "alert") {
      applyAlert(event);
      if (logs.add(event)) requestFrame();
    } else if (type === "histogram" || type === "image") {
      if (event.run != null) ensureRun(String(event.run));
      media.add(event);
    } else if (type !== "status" && type !== "shutdown") {
      if (logs.add(event)) requestFrame();
    }
  }

  function applyMetric(event) {
    if (!event.metrics || typeof event.metrics !== "object") return;
    const run = ensureRun(event.run == null ? "default" : String(event.run));
    const changed = Model.applyMetric(run, event, (metric, rankKey) => ensureSeries(run, metric, rankKey),
      state.snapshotSeq);
    for (const metric of changed.metrics) dirty.charts.add(ChartViews.idOf(run.name, metric));
    state.stats.belowFloor += changed.belowFloor;
    state.stats.applied += 1;
    dirty.table = dirty.runMeta = true;
    requestFrame();
  }

  function applyRunEvent(event) {
    if (event.run == null) return;
    Model.applyRunEvent(ensureRun(String(event.run)), event);
    if (event.type === "config") configChanged(); else dirty.runMeta = true;
    requestFrame();
  }

  /** An alert: the run's badge in the run list (and a line in the log). */
  function applyAlert(event) {
    if (event.run == null) return;
    if (Model.applyAlert(ensureRun(String(event.run)), event, state.snapshotSeq)) {
      dirty.runMeta = true;
      requestFrame();
    }
  }

  // ---- loading from REST -----------------------------------------------------

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

  /** What /api/runs says of a run (see Model.applyRunInfo). */
  function applyRunInfo(info, initial) {
    const run = ensureRun(String(info.run));
    if (info.persisted === true) run.past = true; // its curves: when shown (loadPastCurves)
    const changed = Model.applyRunInfo(run, info, initial);
    if (changed.state || changed.alerts) dirty.runMeta = true;
    if (changed.config) configChanged();
    return run;
  }

  /** A run's hyper-parameters changed: the table, the group keys, the search and the groups follow. */
  function configChanged() {
    dirty.params = dirty.runs = true;
    if (finder.match.active) refilter();
    if (finder.group) markAll(true);
  }

  async function loadFromRest() {
    const generation = state.generation;
    const current = () => generation === state.generation;
    state.loading = true;
    state.buffer = [];
    state.stats.reloads += 1;
    try {
      const status = await api("/api/status");
      mark("status");
      if (current()) applyStatus(status);
      if (!current()) return; // a new epoch started a fresh load
      // Every live run, and a page of the persisted ones (as many as were listed before a reload).
      const pastLimit = Math.max(PAST_PAGE, userRuns().filter((run) => run.past).length);
      const match = state.past.match ? `&past_match=${encodeURIComponent(state.past.match)}` : "";
      const snapshot = await api(`/api/runs?past_limit=${pastLimit}${match}`);
      mark("runs");
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
      const listed = (snapshot.runs || []).map((info) => applyRunInfo(info, true));
      state.past.offset = listed.filter((run) => run.past).length;
      if (snapshot.past_total) listed.push(...(await findPastByName(current)));
      showPastTotal(snapshot.past_total);
      // Past runs hidden now get their curves when they are shown (setVisible).
      const runs = listed.filter((run) => !run.past || run.visible);
      const latest = api("/api/metrics/latest").catch(() => null);
      await Loading.pool(runs, RUN_FETCHES, async (run) => {
        if (!current()) return;
        await loadCurves(run, current);
      });
      mark("curves");
      const latestAnswer = await latest;
      if (current()) Loading.applyLatest(latestAnswer, state.snapshotSeq, ensureRun);
      if (current() && settings.xMode !== "step") await loadClocks(runs, current);
    } finally {
      if (current()) finishLoading();
    }
    // After the charts: the record's log lines go in their place among live ones.
    if (current()) {
      loadLogPage("", null);
      const chosen = logs.filters().run;
      if (chosen && !logs.cursors.has(chosen)) {
        logs.cursors.set(chosen, null);
        loadLogPage(chosen, null);
      }
    }
    if (current()) media.load(current);
  }

  /** Past runs the URL shows by name that the page did not list: found by name (a shared link). */
  async function findPastByName(current) {
    if (!selection.only) return [];
    const missing = Array.from(selection.names).filter((name) => !state.runs.has(name)).slice(0, PAST_PAGE);
    const answers = await Promise.all(missing.map((name) =>
      api(`/api/runs?past_limit=${PAST_PAGE}&past_match=${encodeURIComponent(name)}`).catch(() => null)));
    if (!current()) return [];
    const found = [];
    answers.forEach((answer, i) => {
      const info = answer && (answer.runs || []).find((item) => item.persisted === true && item.run === missing[i]);
      if (info) found.push(applyRunInfo(info, true));
    });
    return found;
  }

  /** A run's whole curves from REST (see Loading.loadRunCurves); a past run's once. */
  async function loadCurves(run, current) {
    if (run.past) run.curvesAsked = true;
    const loaded = await Loading.loadRunCurves(api, run, REST_MAX_POINTS, ensureSeries, state.snapshotSeq, current);
    for (const metric of loaded) dirty.charts.add(ChartViews.idOf(run.name, metric));
    requestFrame();
  }

  /** Past runs shown whose curves were not asked for yet: ask (a few at a time). */
  let pastQueue = Promise.resolve();
  function loadPastCurves(runs) {
    const wanted = runs.filter((run) => run.past && run.visible && !run.curvesAsked);
    if (!wanted.length) return pastQueue;
    for (const run of wanted) run.curvesAsked = true;
    const generation = state.generation;
    const current = () => generation === state.generation;
    pastQueue = pastQueue.then(() => Loading.pool(wanted, RUN_FETCHES, (run) => (current() ? loadCurves(run, current) : null)));
    return pastQueue;
  }

  /** The next page of persisted runs (or, with a new `match`, the first page of those matching). */
  async function listMorePast(match) {
    const fresh = match !== undefined && match !== state.past.match;
    if (fresh) state.past.match = match;
    const offset = fresh ? 0 : state.past.offset;
    const query = `past_offset=${offset}&past_limit=${PAST_PAGE}` +
      (state.past.match ? `&past_match=${encodeURIComponent(state.past.match)}` : "");
    let answer;
    try {
      answer = await api(`/api/runs?${query}`);
    } catch (error) {
      ui.showNotice(`Cannot list past runs: ${error.message || error}`);
      return;
    }
    const added = (answer.runs || []).filter((info) => info.persisted === true).map((info) => applyRunInfo(info, true));
    state.past.offset = offset + added.length;
    showPastTotal(answer.past_total);
    dirty.runs = dirty.tableShape = dirty.params = true;
    requestFrame();
    await loadPastCurves(added);
  }

  function showPastTotal(total) {
    if (typeof total === "number") state.past.total = total;
    const box = document.getElementById("past-runs");
    box.hidden = !state.past.total && !state.past.match;
    const listed = userRuns().filter((run) => run.past).length;
    const what = state.past.match ? `past runs matching \u201c${state.past.match}\u201d` : "past runs";
    document.getElementById("past-runs-count").textContent =
      `${listed.toLocaleString("en-US")} listed · ${state.past.total.toLocaleString("en-US")} ${what}`;
    document.getElementById("past-runs-more").hidden = state.past.offset >= state.past.total;
  }

  function finishLoading() {
    state.loading = false;
    const buffered = state.buffer;
    state.buffer = [];
    for (const event of buffered) apply(event);
    dirty.runs = dirty.table = dirty.tableShape = dirty.params = true;
    if (state.stats.firstFullRenderMs === null) state.loadedAt = performance.now();
    mark("loaded");
    markAll(true);
    if (state.reloadQueued) {
      state.reloadQueued = false;
      scheduleReload();
    }
  }

  async function loadClocks(runs, current) {
    await Loading.pool(runs, RUN_FETCHES, (run) => Loading.loadClock(api, run, current));
    markAll(false);
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

  async function pollRuns() {
    if (!state.booted || state.loading) return;
    try {
      // The live runs' states; past runs do not change (past_limit=0: not listed again).
      const snapshot = await api("/api/runs?past_limit=0", 4000);
      if (snapshot.epoch && state.epoch && snapshot.epoch !== state.epoch) return; // the status poll resets
      for (const info of snapshot.runs || []) applyRunInfo(info, false);
      requestFrame();
    } catch (_) {
      // The REST pill says so.
    }
  }

  /** A new epoch: the server lost its history (a new process). Start over. */
  function epochChanged(epoch) {
    state.stats.epochChanges += 1;
    state.generation += 1;
    state.loading = false;
    state.epoch = epoch;
    chartPrefs = readView().charts; // the charts come back with their settings
    state.lastSeq = 0;
    state.snapshotSeq = 0;
    state.buffer = [];
    grid.removeAll();
    views.clear();
    detail.clearAll();
    logs.reset();
    media.reset();
    state.runs.clear();
    dirty.charts.clear();
    dirty.entries.clear();
    dirty.runs = dirty.tableShape = dirty.table = dirty.params = true;
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

  // ---- downloads ---------------------------------------------------------------

  let lastExport = null;
  /** A chart's data as a file: `download(metric, runs, token)` over the runs it shows. */
  function exportData(view, kind, download) {
    const names = view.system
      ? [SYSTEM_RUN]
      : userRuns().filter((run) => run.visible && run.curves.has(view.metric)).map((run) => run.name);
    if (!names.length) return Promise.resolve(null);
    lastExport = download(view.metric, names, TOKEN, (note) => { if (note) ui.showNotice(note); }).catch((error) => {
      ui.showNotice(`${kind} export failed: ${error.message || error}`);
      return null;
    });
    return lastExport;
  }

  function exportCsv(view) {
    return exportData(view, "CSV", Export.downloadCsv);
  }

  function exportJson(view) {
    return exportData(view, "JSON", Export.downloadJson);
  }

  function exportPng(view) {
    return Export.downloadPng(view, theme);
  }

  // ---- rendering -------------------------------------------------------------

  /** A mark on the page's performance timeline (the benchmark reads them). */
  function mark(name) {
    if (state.stats.firstFullRenderMs === null && performance.mark) performance.mark(`stream_hub:${name}`);
  }

  function requestFrame() {
    if (!frameHandle) frameHandle = requestAnimationFrame(frame);
  }

  /** A frame in `ms` (work that waits for its pace), unless one comes sooner. */
  let laterTimer = 0;
  let laterAt = Infinity;
  function requestFrameIn(ms) {
    const at = performance.now() + ms;
    if (at >= laterAt - 1) return;
    clearTimeout(laterTimer);
    laterAt = at;
    laterTimer = setTimeout(() => {
      laterAt = Infinity;
      requestFrame();
    }, Math.max(0, ms));
  }

  let lastLoadingPass = 0;
  function frame(now) {
    frameHandle = 0;
    if (state.loading && now - lastLoadingPass < LOADING_PASS_MS) {
      // Curves are arriving: every one of them would redo the DOM and the
      // charts; show progress twice a second and draw for real once loaded.
      requestFrameIn(LOADING_PASS_MS - (now - lastLoadingPass));
      return;
    }
    lastLoadingPass = now;
    const started = performance.now();
    const runs = Array.from(state.runs.values());
    const users = runs.filter((run) => !run.system);
    const found = users.filter((run) => run.matched !== false);
    if (dirty.runs) {
      renameRuns(users);
      Runs.renderRuns(users, { toggle: (name) => toggleRun(name), solo: soloRun }, finder.group);
      finder.showCount(found.length, users.length);
      dirty.runs = false;
      dirty.runMeta = false;
      lastRunsAt = now;
    }
    for (const id of dirty.entries) {
      const view = views.views.get(id);
      if (!view) continue;
      views.rebuild(view, runs);
      dirty.charts.add(id);
      if (view.zoomPending && !state.loading) {
        // A zoom from the URL: its finer data, now that the chart has its runs.
        view.zoomPending = false;
        views.zoomed(view, view.chart.zoom);
      }
    }
    dirty.entries.clear();
    if (dirty.tableShape) {
      const metrics = Array.from(views.views.values()).filter((v) => !v.system).map((v) => v.metric);
      ui.buildTable(found, metrics);
      dirty.tableShape = false;
      dirty.table = true;
    }
    if (dirty.params) {
      Runs.renderParams(found, paramsDiff);
      dirty.params = false;
    }
    logs.render();
    media.render();
    // Numbers that change 50 times a second cannot be read anyway: the table
    // follows 4 times a second while on screen (once off it), the run list twice.
    if (dirty.table && now - lastTableAt >= (tableOnScreen ? 250 : 1000)) {
      ui.updateTable(found, state.compareStep);
      dirty.table = false;
      lastTableAt = now;
    }
    if (dirty.runMeta && now - lastRunsAt >= 500) {
      Runs.updateRuns(users);
      finder.showCount(found.length, users.length);
      dirty.runMeta = false;
      lastRunsAt = now;
    }
    drawCharts(now);
    if (dirty.table) requestFrameIn(Math.max(0, (tableOnScreen ? 250 : 1000) - (now - lastTableAt)));
    if (dirty.runMeta) requestFrameIn(Math.max(0, 500 - (now - lastRunsAt)));
    const ms = performance.now() - started;
    if (frameTimes.length >= 10000) frameTimes.splice(0, 5000);
    frameTimes.push(ms);
    state.stats.frames += 1;
    state.stats.lastFrameMs = ms;
    state.stats.maxFrameMs = Math.max(state.stats.maxFrameMs, ms);
  }

  /**
   * Draw the charts that changed and can be seen: those the user changed
   * first, then those with new data whose live pace allows (least recently
   * drawn first); one chart, and more while the frame's budget lasts.
   */
  function drawCharts(now) {
    const due = [];
    let wait = Infinity;
    for (const id of dirty.charts) {
      const view = views.views.get(id);
      if (!view) {
        dirty.charts.delete(id);
        dirty.urgent.delete(id);
        continue;
      }
      if (!grid.drawable(view)) continue;
      if (dirty.urgent.has(id)) {
        due.push(view);
        continue;
      }
      const gap = Math.max(LIVE_REDRAW_MS, LIVE_REDRAW_COST * view.chart.lastDrawMs);
      const ready = view.lastDrawAt + gap - now;
      if (ready <= 0) due.push(view); else wait = Math.min(wait, ready);
    }
    due.sort((a, b) => Number(dirty.urgent.has(b.id)) - Number(dirty.urgent.has(a.id)) || a.lastDrawAt - b.lastDrawAt);
    const budgetStart = performance.now();
    let drawn = 0;
    for (const view of due) {
      if (drawn > 0 && performance.now() - budgetStart > FRAME_BUDGET_MS) {
        state.stats.deferredDraws += 1;
        requestFrame();
        break;
      }
      views.draw(view);
      dirty.charts.delete(view.id);
      dirty.urgent.delete(view.id);
      state.stats.chartDraws += 1;
      drawn += 1;
    }
    if (wait < Infinity) requestFrameIn(wait);
    if (state.loadedAt !== null && state.stats.firstFullRenderMs === null) noteFullRender();
  }

  /** The first time every chart on screen has been drawn with everything loaded (ms since navigation). */
  function noteFullRender() {
    const shown = Array.from(views.views.values()).filter((view) => grid.drawable(view));
    if (!shown.length) return;
    if (shown.every((view) => view.lastDrawAt >= state.loadedAt)) {
      state.stats.firstFullRenderMs = performance.now();
      mark("full-render");
    }
  }

  function redrawAll() {
    theme = ui.readTheme();
    for (const run of state.runs.values()) {
      run.color = run.system ? theme.accent : Runs.slotColour(run.colourSlot, theme.scheme);
    }
    dirty.runs = dirty.tableShape = dirty.params = true;
    media.markAll();
    markAll(true);
  }

  // ---- settings controls -------------------------------------------------------

  function bindControls() {
    const $ = (id) => document.getElementById(id);
    settings.bind({
      smoothing: () => {
        markAll(false);
        viewChanged();
      },
      xMode: (mode) => setXMode(mode),
      rankMode: () => {
        for (const view of views.views.values()) view.rankMode = null; // every chart follows
        markAll(true);
        viewChanged();
      },
    });
    const showAll = (shown) => {
      if (shown) selection.showAll(); else selection.showNone();
      applySelection();
      viewChanged();
    };
    $("past-runs-more").addEventListener("click", () => listMorePast());
    $("past-runs-match").addEventListener("change", (event) => listMorePast(event.target.value.trim()));
    $("runs-all").addEventListener("click", () => showAll(true));
    $("runs-none").addEventListener("click", () => showAll(false));
    const step = $("compare-step");
    step.addEventListener("change", () => setCompareStep(step.value === "" ? null : Number(step.value)));
    $("compare-latest").addEventListener("click", () => setCompareStep(null));
    $("params-diff").addEventListener("click", () => setParamsDiff(!paramsDiff));
    new IntersectionObserver((entries) => {
      tableOnScreen = entries.some((e) => e.isIntersecting);
      if (tableOnScreen && dirty.table) requestFrame();
    }).observe($("latest-panel"));
  }

  function setParamsDiff(on) {
    if (paramsDiff === Boolean(on)) return;
    paramsDiff = Boolean(on);
    dirty.params = true;
    requestFrame();
    viewChanged();
  }

  /** x by step, wall time or relative time; zooms are dropped (another unit). */
  function setXMode(mode) {
    if (!settings.setXMode(mode)) return Promise.resolve();
    for (const view of views.views.values()) {
      view.chart.zoom = null;
      view.zoomPending = false;
      view.tools.querySelector('[data-tool="reset"]').hidden = true;
    }
    detail.clearAll();
    markAll(false);
    viewChanged();
    if (mode === "step") return Promise.resolve();
    const generation = state.generation;
    return loadClocks(Array.from(state.runs.values()), () => generation === state.generation);
  }

  // ---- the view in the URL ---------------------------------------------------------

  /** The URL's settings of a chart being made (taken: from now on the chart has them). */
  function takeChartPrefs(id) {
    const prefs = chartPrefs.get(id) || null;
    chartPrefs.delete(id);
    return prefs;
  }

  /** The view now, as urlstate.js parses and formats it. */
  function readView() {
    const charts = new Map(chartPrefs);
    for (const view of views.views.values()) charts.set(view.id, views.prefs(view));
    const logFilters = logs.filters();
    return {
      xMode: settings.xMode,
      rankMode: settings.rankMode,
      smoothing: settings.smoothing,
      selection: selection.describe(),
      runSearch: finder.query,
      groupBy: finder.group,
      paramsDiff,
      filter: grid.saved.filter,
      compareStep: state.compareStep,
      logRun: logFilters.run,
      logLevel: logFilters.level,
      charts,
    };
  }

  /** Show the view a URL describes (at start, and when the user changes the hash). */
  function applyView(view, atStart = false) {
    selection.assign(view.selection);
    const searched = finder.setQuery(view.runSearch);
    const grouped = finder.setGroup(view.groupBy);
    if (searched) refilter();
    if (searched || grouped) {
      dirty.runs = dirty.tableShape = dirty.params = true;
      markAll(true);
    }
    applySelection();
    setParamsDiff(view.paramsDiff);
    // Smoothing left out: none, but a page opened without a view starts from the user's default.
    const smoothing = view.smoothing != null ? view.smoothing : atStart && view.empty ? settings.defaultSmoothing : 0;
    if (settings.setSmoothing(smoothing)) markAll(false);
    if (settings.setRankMode(view.rankMode)) markAll(true);
    setXMode(view.xMode);
    grid.setFilter(view.filter);
    setCompareStep(view.compareStep);
    logs.setFilters(view.logRun, view.logLevel);
    chartPrefs = new Map(view.charts);
    for (const chart of views.views.values()) views.applyPrefs(chart, takeChartPrefs(chart.id));
  }

  function debug() {
    const described = Inspect.describe({
      state, settings, views, grid, detail, logs, rate, sse, ws, systemRun: SYSTEM_RUN,
    });
    described.url = location.hash;
    described.media = media.describe();
    described.selection = selection.describe();
    described.sweeps = {
      search: finder.query, error: finder.match.error, group: finder.group, groupKeys: finder.keys.slice(),
      prefix: namesPrefix || "", paramsDiff,
    };
    return described;
  }

  function viewOf(metric) {
    return views.views.get(metric) || views.views.get(ChartViews.idOf(SYSTEM_RUN, metric));
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

  applyView(UrlState.parse(location.hash), true);
  url = new UrlState.UrlView(readView, (view) => applyView(view));
  bindControls();
  ui.onThemeChange(redrawAll);
  setInterval(() => {
    ui.showRate(rate.value(), rate.history());
    dirty.runMeta = true; // "updated 3 s ago" ages without events too
    requestFrame();
  }, 500);
  setInterval(pollRuns, RUNS_POLL_MS);

  global.streamHub = {
    debug,
    reload: () => scheduleReload(),
    setRunVisible: (name, visible) => toggleRun(name, visible),
    /** Zoom a chart to [x0, x1] (null: all); resolves with its info once drawn with finer data. */
    zoom: (metric, x0, x1) => {
      const view = viewOf(metric);
      return view ? views.zoomTo(view, x0 == null ? null : [x0, x1]) : Promise.resolve(null);
    },
    setXMode,
    pollRuns,
    /** The render passes' durations (ms) so far; `clear` starts a new list. */
    frameTimes: (clear) => (clear ? frameTimes.splice(0) : frameTimes.slice()),
    lastExport: () => lastExport,
    /** Write the view into the URL now (it is written 250 ms after a change otherwise). */
    flushUrl: () => url.flush(),
  };

  rest.start();
  boot();
})(window);
