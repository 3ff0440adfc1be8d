/* stream_hub dashboard — a run as the page knows it, and what each kind of
 * event or REST answer changes in it: its curves (one Series per metric and
 * rank), latest values, steps, clock, state (running, finished, failed,
 * killed, stale), ranks, hyper-parameters, alerts and drops. No DOM here: each function
 * returns what changed, and the app redraws that.
 */
(function (global) {
  "use strict";

  const { toNumber } = global.StreamHubSeries;
  const { Clock } = global.StreamHubTransforms;
  const END_STATES = ["finished", "failed", "killed"];
  const ALERT_LEVELS = ["info", "warning", "error"]; // mildest first

  /** A run the page has just heard of. */
  function createRun(name, { system, colourSlot, color, visible }) {
    return {
      name,
      system,               // the machine's own metrics (run "_system"): not a run to show as one
      colourSlot,
      color,
      visible,
      state: "running",
      ended: new Map(),     // rank key ("" without ranks) -> how it ended
      ranks: new Set(),     // rank keys
      rankLastTs: {},       // rank key -> when it last logged a metric (GET /api/runs)
      config: {},           // hyper-parameters (config events)
      alerts: { count: 0, level: null, title: null }, // alert events: how many, the worst level, the latest title
      dropped: {},          // what the hub says is missing of the run, per cause (GET /api/runs)
      lastStep: null,
      firstStep: null,
      lastTs: null,
      events: 0,
      curves: new Map(),    // metric -> Map(rank key -> Series)
      latest: new Map(),    // metric -> {value, step, seq}
      clock: new Clock(),   // step -> time, for x by time
      _origin: null,
      _originAt: -1,
      /** When the run's first step happened: relative time counts from it. */
      origin() {
        if (this._originAt !== this.clock.version) {
          this._origin = this.clock.timeAt(this.firstStep == null ? 0 : this.firstStep);
          this._originAt = this.clock.version;
        }
        return this._origin;
      },
    };
  }

  /**
   * A metric event: each value into its Series (`series(metric, rankKey)`)
   * unless the Series already holds it (seq at or below its REST floor).
   * Returns {metrics: the metrics added to, belowFloor, stateChanged}.
   */
  function applyMetric(run, event, series, snapshotSeq) {
    const seq = typeof event.seq === "number" ? event.seq : Infinity;
    const rankKey = event.rank == null ? "" : String(event.rank);
    const step = typeof event.step === "number" ? event.step : run.lastStep == null ? 0 : run.lastStep + 1;
    const added = [];
    let belowFloor = 0;
    for (const [metric, raw] of Object.entries(event.metrics)) {
      const value = toNumber(raw);
      const target = series(metric, rankKey);
      if (seq <= target.floor) {
        belowFloor += 1;
      } else {
        target.add(step, value);
        added.push(metric);
      }
      const previous = run.latest.get(metric);
      if (!previous || seq >= previous.seq) run.latest.set(metric, { value, step, seq });
    }
    if (seq > snapshotSeq) run.events += 1;
    run.lastStep = run.lastStep == null ? step : Math.max(run.lastStep, step);
    if (run.firstStep == null || step < run.firstStep) run.firstStep = step;
    if (typeof event.ts === "number") {
      run.lastTs = event.ts;
      run.clock.add(step, event.ts);
    }
    let stateChanged = false;
    if ((run.ended.size && run.ended.delete(rankKey)) || run.state === "stale") {
      run.state = "running"; // logging again after an end, or after a silence
      stateChanged = true;
    }
    return { metrics: added, belowFloor, stateChanged };
  }

  /**
   * config: the run's hyper-parameters; run_end: how a rank (or the run)
   * ended — the run has ended once every rank has, the worst of theirs
   * (killed, failed, finished), as the server decides.
   */
  function applyRunEvent(run, event) {
    const data = event.data && typeof event.data === "object" ? event.data : {};
    if (event.type === "config") {
      Object.assign(run.config, data);
    } else {
      const status = END_STATES.includes(data.status) ? data.status : "finished";
      run.ended.set(event.rank == null ? "" : String(event.rank), status);
      const keys = run.ranks.size ? Array.from(run.ranks) : [""];
      if (keys.every((k) => run.ended.has(k))) {
        const ends = keys.map((k) => run.ended.get(k));
        run.state = ["killed", "failed", "finished"].find((s) => ends.includes(s));
      }
    }
    if (typeof event.ts === "number") run.lastTs = event.ts;
  }

  /** The worse of two alert levels (`a` null: none yet). */
  function worseLevel(a, b) {
    const level = ALERT_LEVELS.includes(b) ? b : "warning";
    return a && ALERT_LEVELS.indexOf(a) >= ALERT_LEVELS.indexOf(level) ? a : level;
  }

  /**
   * An alert event (the hub's or a user's): the run's count, worst level and
   * latest title. One the REST snapshot already counted (seq at or below
   * `snapshotSeq`) is not counted again. Returns whether anything changed.
   */
  function applyAlert(run, event, snapshotSeq) {
    const seq = typeof event.seq === "number" ? event.seq : Infinity;
    if (seq <= snapshotSeq) return false;
    const data = event.data && typeof event.data === "object" ? event.data : {};
    run.alerts.count += 1;
    run.alerts.level = worseLevel(run.alerts.level, data.level);
    run.alerts.title = typeof data.title === "string" ? data.title : "";
    return true;
  }

  /**
   * What GET /api/runs says of a run: its state, ranks and hyper-parameters
   * (and, on a full load, its counts and last step), and its alerts (a full
   * load takes the snapshot's; a poll only a count the page fell behind).
   * Its drops (per cause) are taken as they are.
   * Returns {state, config, alerts, dropped}: whether each changed.
   */
  function applyRunInfo(run, info, initial) {
    if (initial) {
      if (typeof info.last_step === "number") run.lastStep = info.last_step;
      if (typeof info.events === "number") run.events = info.events;
      if (typeof info.last_ts === "number") run.lastTs = info.last_ts;
      if (typeof info.last_step === "number" && typeof info.last_ts === "number") {
        run.clock.merge([info.last_step], [info.last_ts]);
      }
    }
    const changed = { state: false, config: false, alerts: false, dropped: false };
    if (info.dropped && typeof info.dropped === "object") {
      const dropped = {};
      for (const [cause, n] of Object.entries(info.dropped)) if (typeof n === "number" && n > 0) dropped[cause] = n;
      changed.dropped = JSON.stringify(dropped) !== JSON.stringify(run.dropped);
      run.dropped = dropped;
    }
    const alerts = info.alerts && typeof info.alerts === "object" ? info.alerts : null;
    const count = alerts && typeof alerts.count === "number" ? alerts.count : 0;
    if (initial ? count !== run.alerts.count : count > run.alerts.count) {
      run.alerts = {
        count,
        level: alerts && count ? worseLevel(null, alerts.level) : null,
        title: alerts && typeof alerts.title === "string" ? alerts.title : null,
      };
      changed.alerts = true;
    }
    if (typeof info.state === "string" && info.state !== run.state) {
      run.state = info.state;
      changed.state = true;
    }
    for (const rank of info.ranks || []) run.ranks.add(String(rank));
    if (info.rank_last_ts && typeof info.rank_last_ts === "object") run.rankLastTs = { ...info.rank_last_ts };
    if (info.config && typeof info.config === "object" && Object.keys(info.config).length) {
      const before = JSON.stringify(run.config);
      Object.assign(run.config, info.config);
      changed.config = JSON.stringify(run.config) !== before;
    }
    return changed;
  }

  global.StreamHubModel = { createRun, applyMetric, applyRunEvent, applyAlert, applyRunInfo };
})(window);
