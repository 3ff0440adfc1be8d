/* stream_hub dashboard — what the app asks REST for besides the status:
 * every curve of a run in one request, the log panel's pages of the record,
 * the latest values, and each run's clock (for x by time). Each function
 * takes what it writes to; `current()` says whether the answer still matters
 * (false once the page started over for a new epoch).
 */
(function (global) {
  "use strict";

  const { toNumber } = global.StreamHubSeries;

  /** Run `work` over `items`, at most `size` at once. */
  async function pool(items, size, work) {
    let next = 0;
    const worker = async () => {
      while (next < items.length) await work(items[next++]);
    };
    await Promise.all(Array.from({ length: Math.min(size, items.length) }, worker));
  }

  /**
   * Every curve of a run (all metrics; per rank for a run with ranks) in one
   * request, each loaded into its Series (`series(run, metric, rankKey)`).
   * Returns the metrics loaded (none when the request failed: the live feed
   * still fills the curves from now on).
   */
  async function loadRunCurves(api, run, maxPoints, series, floorDefault, current) {
    let answer;
    try {
      const name = encodeURIComponent(run.name);
      answer = await api(`/api/runs/${name}/series?max_points=${maxPoints}&compact=true`, 20000);
    } catch (_) {
      return [];
    }
    if (!current()) return [];
    const floor = Number(answer.last_seq);
    const parts = answer.ranks ? Object.entries(answer.ranks) : [["", answer.series || {}]];
    const loaded = [];
    for (const [rankKey, metrics] of parts) {
      for (const [metric, curve] of Object.entries(metrics || {})) {
        const target = series(run, metric, rankKey);
        const steps = curve.steps || [];
        // points_seen above the bucket count: buckets hold several points each.
        const exact = !(Number(curve.points_seen) > steps.length);
        target.loadBuckets(curve, run.lastStep, isFinite(floor) ? floor : floorDefault, exact);
        if (steps.length && (run.firstStep == null || steps[0] < run.firstStep)) run.firstStep = steps[0];
        loaded.push(metric);
      }
    }
    return loaded;
  }

  // The hub encodes the events nobody has read yet to answer a history
  // request: a million of them keep it busy for seconds.
  const HISTORY_TIMEOUT_MS = 120000;

  /**
   * A page of text events from the record (GET /api/logs: logs, alerts; the
   * store, then the ring; a past run's files) into the log panel: the newest
   * of `run` ("": every run of the hub) or, with `before`, the page before it.
   */
  async function loadLogPage(api, logs, run, before, limit, current) {
    const params = new URLSearchParams({ limit: String(limit) });
    if (run) params.set("run", run);
    if (before) params.set("before", before);
    let answer;
    logs.setLoading(true);
    try {
      answer = await api(`/api/logs?${params}`, HISTORY_TIMEOUT_MS);
    } catch (_) {
      return;
    } finally {
      logs.setLoading(false);
    }
    if (!current()) return;
    logs.takePage(run, answer, Boolean(before));
  }

  /**
   * For x by time: a run's clock from the ring — its first event there, then
   * the times of one of its curves from that step on (REST range answers
   * carry them). Steps older than the ring are placed at the run's pace.
   */
  async function loadClock(api, run, current) {
    const metric = run.curves.keys().next().value;
    if (!current() || metric === undefined) return;
    const name = encodeURIComponent(run.name);
    try {
      const first = await api(`/api/history?run=${name}&types=metric&since=0&limit=1`);
      const event = (first.events || []).find((e) => e.type === "metric" && typeof e.step === "number");
      if (!event || !current()) return;
      run.clock.merge([event.step], [event.ts]);
      const rank = event.rank == null ? "" : `&rank=${event.rank}`;
      const answer = await api(`/api/runs/${name}/series?metric=${encodeURIComponent(metric)}` +
        `&from_step=${event.step}&max_points=500${rank}`);
      if (current() && Array.isArray(answer.ts)) run.clock.merge(answer.steps, answer.ts);
    } catch (_) {
      // Live events still teach the clock.
    }
  }

  /** The latest value of every metric (GET /api/metrics/latest), unless a live one is newer. */
  function applyLatest(answer, seq, ensureRun) {
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

  global.StreamHubLoading = { pool, loadRunCurves, loadLogPage, loadClock, applyLatest };
})(window);
