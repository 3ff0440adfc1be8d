/* stream_hub dashboard — level of detail for a zoomed chart.
 *
 * Curves kept here are thinned (Series) or came from REST in buckets, so a
 * zoom into a long run would show a few coarse points. When a chart is zoomed,
 * each visible run whose curve is not exact is asked for the zoomed step range
 * at the resolution the hub holds (GET /api/runs/{run}/series?metric=&from_step=
 * &to_step=&max_points=, answered from the ring, or from the whole-run series
 * where the ring does not reach), about two points per pixel. The finer points
 * (and their envelope, where they are still buckets) replace the coarse ones
 * inside the range when drawn; outside it, and for live points after it, the
 * kept curve is used.
 */
(function (global) {
  "use strict";

  const { Series, Envelope } = global.StreamHubSeries;
  const { lowerBound } = global.StreamHubTransforms;
  const FETCHES = 4; // range requests in flight at once, per zoom

  /** Is every bucket of a range answer a single point (min = max = value)? */
  function exactAnswer(curve) {
    const { values = [], mins = [], maxs = [] } = curve;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null && mins[i] === null && maxs[i] === null) continue;
      if (mins[i] !== v || maxs[i] !== v) return false;
    }
    return true;
  }

  class DetailStore {
    /** api(path, timeout) -> Promise of JSON. */
    constructor(api) {
      this.api = api;
      this.byView = new Map(); // view id -> {token, ranges: Map(run -> [from, to]), curves: Map(key -> Series), state}
      this.tokens = 0;
      this.fetched = 0;
    }

    state(viewId) {
      const d = this.byView.get(viewId);
      return d ? d.state : "none";
    }

    clear(viewId) {
      this.byView.delete(viewId);
    }

    clearAll() {
      this.byView.clear();
    }

    /**
     * Fetch finer data for a zoomed view. `wants` is [{run, from, to,
     * rankKeys}] (step ranges per run, only runs whose curves are coarse);
     * `maxPoints` per curve. Resolves when every answer is in (or failed).
     */
    async request(view, metric, wants, maxPoints) {
      const token = ++this.tokens;
      const detail = { token, ranges: new Map(), curves: new Map(), state: "loading", source: null };
      this.byView.set(view.id, detail);
      if (!wants.length) {
        detail.state = "none";
        return detail;
      }
      let next = 0;
      const worker = async () => {
        while (next < wants.length) {
          const want = wants[next++];
          const from = Math.floor(want.from);
          const to = Math.ceil(want.to);
          const path = `/api/runs/${encodeURIComponent(want.run)}/series?metric=${encodeURIComponent(metric)}` +
            `&from_step=${from}&to_step=${to}&max_points=${maxPoints}`;
          let answer;
          try {
            answer = await this.api(path, 15000);
          } catch (_) {
            continue; // the coarse curve stays
          }
          if (this.byView.get(view.id) !== detail) return; // zoomed elsewhere meanwhile
          this.fetched += 1;
          detail.ranges.set(want.run, [from, to]);
          const parts = answer.ranks ? Object.entries(answer.ranks) : [["", answer]];
          for (const [rankKey, curve] of parts) {
            const series = new Series(Infinity);
            const steps = curve.steps || [];
            // Where the last bucket ends: before the next one (the server says
            // where that starts when the buckets are the whole-run curve's),
            // else at its last point in the range.
            const last = typeof curve.next_step === "number" ? curve.next_step - 1
              : steps.length ? Math.min(to, Math.max(...steps.slice(-1))) : to;
            series.loadBuckets(curve, last, 0, exactAnswer(curve));
            detail.curves.set(`${want.run}\u0000${rankKey}`, series);
            detail.source = curve.source || detail.source;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(FETCHES, wants.length) }, worker));
      if (this.byView.get(view.id) === detail) detail.state = "loaded";
      return detail;
    }

    /**
     * The curve to draw for (view, run, rank): the kept one, or, when finer
     * points of a zoom are here, those inside their range and the kept ones
     * outside it. Merged curves are cached until either side changes.
     */
    curve(viewId, run, rankKey, base) {
      const detail = this.byView.get(viewId);
      if (!detail) return base;
      const key = `${run}\u0000${rankKey}`;
      const fine = detail.curves.get(key);
      const range = detail.ranges.get(run);
      if (!fine || !range || !fine.steps.length) return base;
      let merged = detail[`merged:${key}`];
      if (merged && merged.baseVersion === base.version && merged.baseStructure === base.structure) return merged;
      const [from, to] = range;
      const end = Math.max(to, fine.steps[fine.steps.length - 1]);
      const i = lowerBound(base.steps, from);
      const j = lowerBound(base.steps, end + 1);
      merged = {
        steps: base.steps.slice(0, i).concat(fine.steps, base.steps.slice(j)),
        values: base.values.slice(0, i).concat(fine.values, base.values.slice(j)),
        version: (merged ? merged.version : 0) + 1,
        structure: (merged ? merged.structure : 0) + 1,
        baseVersion: base.version,
        baseStructure: base.structure,
        exact: true,
        // Where the finer data is still buckets (the ring no longer holds the range):
        // their envelope inside the range, the kept curve's outside it.
        envelope: base.envelope || fine.envelope ? Envelope.splice(base.envelope, fine.envelope, from, end) : null,
      };
      detail[`merged:${key}`] = merged;
      return merged;
    }
  }

  global.StreamHubDetail = { DetailStore, exactAnswer };
})(window);
