/* stream_hub dashboard — one metric's curve for one run, in bounded memory.
 *
 * Points are kept sorted by step. When a series grows past `cap` points it is
 * thinned to about half, uniformly in *step* (not in point count): a curve
 * loaded from REST at 500 steps per point and then followed live at one point
 * per step ends up with the same density everywhere, instead of the old part
 * getting coarser with every thinning. Each step bucket keeps its lowest and
 * highest value, so spikes survive, plus its first non-finite point, so a NaN
 * still breaks the line where it happened.
 *
 * Where a point stands for more than one step (the server's buckets, or a
 * thinning here) the series also keeps its envelope: each such stretch of
 * steps, [first, last], with the lowest and highest value it held. The chart
 * draws it behind the line and says the resolution ("1 point ≈ 300 steps").
 */
(function (global) {
  "use strict";

  const DEFAULT_CAP = 5000;

  /** A value from the wire as a number: numbers, "NaN", "Infinity", "-Infinity"; null -> NaN. */
  function toNumber(v) {
    if (typeof v === "number") return v;
    if (v === null || v === undefined || v === "") return NaN;
    if (typeof v === "boolean") return v ? 1 : 0;
    return Number(v);
  }

  class Series {
    constructor(cap = DEFAULT_CAP) {
      this.cap = cap;
      this.steps = [];
      this.values = [];
      // Seq of the REST snapshot this series was loaded from: live events at
      // or below it are already in the curve and must not be added twice.
      this.floor = 0;
      this.rewrites = 0;    // points that replaced or went before an existing step
      this.thinnings = 0;
      // False once points were merged (thinned here, or buckets from REST):
      // a zoom then asks the server for the range at its resolution.
      this.exact = true;
      this.version = 0;     // bumped by every change (caches of drawn forms check it)
      this.structure = 0;   // bumped by every change that is not an append at the end
      this._min = Infinity; // finite value range, kept incrementally;
      this._max = -Infinity; // _rangeValid=false means "recompute lazily"
      this._rangeValid = true;
      this.envelope = null; // where points stand for several steps (see Envelope); null: nowhere
    }

    length() { return this.steps.length; }
    firstStep() { return this.steps.length ? this.steps[0] : null; }
    lastStep() { return this.steps.length ? this.steps[this.steps.length - 1] : null; }

    /** Replace the whole curve with these points. */
    load(steps, values, floor = 0) {
      const n = Math.min(steps.length, values.length);
      const outSteps = [];
      const outValues = [];
      let sorted = true;
      for (let i = 0; i < n; i++) {
        const step = Number(steps[i]);
        if (!Number.isFinite(step)) continue;
        if (outSteps.length && step < outSteps[outSteps.length - 1]) sorted = false;
        outSteps.push(step);
        outValues.push(toNumber(values[i]));
      }
      if (!sorted) {
        // The server sends them sorted; sorting anyway (stable) keeps one odd
        // answer from breaking the binary searches below.
        const order = outSteps.map((_, i) => i).sort((a, b) => outSteps[a] - outSteps[b]);
        this.steps = order.map((i) => outSteps[i]);
        this.values = order.map((i) => outValues[i]);
      } else {
        this.steps = outSteps;
        this.values = outValues;
      }
      this.floor = floor;
      this._rangeValid = false;
      this.version += 1;
      this.structure += 1;
      this.exact = true;
      this.envelope = null;
      if (this.steps.length > this.cap) this.thin();
    }

    /**
     * Replace the whole curve with the server's downsampled one
     * (GET /api/runs/{run}/series): bucket i starts at steps[i], ends with
     * values[i], and saw mins[i]..maxs[i]. When buckets hold several points
     * (exact=false) each becomes up to three points — its extremes inside the
     * bucket and its last value at the bucket's end — so a noisy curve loaded
     * late looks like the same curve followed live. `endStep` is the run's
     * last step, where the newest bucket ends.
     */
    loadBuckets(answer, endStep, floor, exact) {
      const starts = answer.steps || [];
      const lasts = answer.values || [];
      // A compact answer leaves them out when each bucket is one value.
      const mins = answer.mins || lasts;
      const maxs = answer.maxs || lasts;
      if (exact || mins.length !== starts.length || maxs.length !== starts.length) {
        this.load(starts, lasts, floor);
        return;
      }
      const steps = [];
      const values = [];
      const envelope = new Envelope();
      const n = starts.length;
      for (let i = 0; i < n; i++) {
        const start = Number(starts[i]);
        const next = i + 1 < n ? Number(starts[i + 1]) - 1 : Math.max(start, Number(endStep));
        const end = Number.isFinite(next) && next >= start ? next : start;
        const last = toNumber(lasts[i]);
        const lo = toNumber(mins[i]);
        const hi = toNumber(maxs[i]);
        envelope.push(start, end, lo, hi);
        const extremes = [];
        if (Number.isFinite(lo) && lo !== last) extremes.push(lo);
        if (Number.isFinite(hi) && hi !== last && hi !== lo) extremes.push(hi);
        // The extreme farther from where the bucket ends comes first.
        if (extremes.length === 2 && Math.abs(last - extremes[0]) < Math.abs(last - extremes[1])) {
          extremes.reverse();
        }
        const span = end - start;
        const m = extremes.length;
        if (span >= m) {
          // Spread over the bucket: the first at its start, the last value at its end.
          extremes.forEach((value, k) => {
            steps.push(start + Math.round((span * k) / (m + 1)));
            values.push(value);
          });
        }
        if (i === 0 && (m === 0 || span < m) && end > start) {
          steps.push(start); // the curve starts where the run started
          values.push(last);
        }
        steps.push(end);
        values.push(last);
      }
      const thinnings = this.thinnings;
      this.load(steps, values, floor); // (which may thin them, with an envelope of its own)
      this.exact = false;
      const buckets = envelope.finish();
      this.envelope = this.thinnings > thinnings ? Envelope.merge(buckets, this.envelope) : buckets;
    }

    /** Add one point. The common case (a new, higher step) is O(1). */
    add(step, value) {
      const steps = this.steps;
      const n = steps.length;
      if (n === 0 || step > steps[n - 1]) {
        steps.push(step);
        this.values.push(value);
        if (this._rangeValid && Number.isFinite(value)) {
          if (value < this._min) this._min = value;
          if (value > this._max) this._max = value;
        }
      } else {
        // Same step again, or a run that went back (resumed from a checkpoint).
        const i = this.lowerBound(step);
        if (steps[i] === step) {
          this.values[i] = value;
        } else {
          steps.splice(i, 0, step);
          this.values.splice(i, 0, value);
        }
        this.rewrites += 1;
        this._rangeValid = false;
        this.structure += 1;
      }
      this.version += 1;
      if (steps.length > this.cap) this.thin();
    }

    /** Index of the first point whose step is >= step. */
    lowerBound(step) {
      const a = this.steps;
      let lo = 0;
      let hi = a.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (a[mid] < step) lo = mid + 1; else hi = mid;
      }
      return lo;
    }

    /** Index of the point whose step is closest to step, or -1 when empty. */
    nearest(step) {
      const n = this.steps.length;
      if (n === 0) return -1;
      const i = this.lowerBound(step);
      if (i >= n) return n - 1;
      if (i > 0 && step - this.steps[i - 1] <= this.steps[i] - step) return i - 1;
      return i;
    }

    /** [min, max] of the finite values, or null when there are none. */
    valueRange() {
      if (!this._rangeValid) {
        let lo = Infinity;
        let hi = -Infinity;
        for (const v of this.values) {
          if (!Number.isFinite(v)) continue;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        this._min = lo;
        this._max = hi;
        this._rangeValid = true;
      }
      return this._min <= this._max ? [this._min, this._max] : null;
    }

    /** Thin to about cap/2 points: per step bucket keep min, max and the first non-finite point. */
    thin() {
      const { steps, values } = this;
      const n = steps.length;
      if (n < 4) return;
      const buckets = Math.max(2, Math.floor(this.cap / 4));
      const first = steps[0];
      const width = (steps[n - 1] - first) / buckets || 1;
      const bucketOf = (i) => Math.floor((steps[i] - first) / width);
      // The first and last points are kept exactly: the curve's extent and
      // the live edge must not move when it is thinned.
      const outSteps = [steps[0]];
      const outValues = [values[0]];
      // Each thinning bucket of several points becomes a stretch of the envelope.
      const envelope = new Envelope();
      let i = 1;
      while (i < n - 1) {
        const bucket = bucketOf(i);
        const from = i;
        let lo = -1;
        let hi = -1;
        let bad = -1;
        for (; i < n - 1 && bucketOf(i) === bucket; i++) {
          const v = values[i];
          if (Number.isFinite(v)) {
            if (lo < 0 || v < values[lo]) lo = i;
            if (hi < 0 || v > values[hi]) hi = i;
          } else if (bad < 0) {
            bad = i;
          }
        }
        if (i - from > 1 && lo >= 0) envelope.push(steps[from], steps[i - 1], values[lo], values[hi]);
        const keep = [...new Set([lo, hi, bad])].filter((k) => k >= 0).sort((a, b) => a - b);
        for (const k of keep) {
          outSteps.push(steps[k]);
          outValues.push(values[k]);
        }
      }
      outSteps.push(steps[n - 1]);
      outValues.push(values[n - 1]);
      this.steps = outSteps;
      this.values = outValues;
      this.envelope = Envelope.merge(this.envelope, envelope.finish());
      this.thinnings += 1;
      this.exact = false;
      this._rangeValid = false;
      this.version += 1;
      this.structure += 1;
    }
  }

  /**
   * Stretches of steps each shown by fewer points than it held: stretch i is
   * steps[2i]..steps[2i+1] (its first and last step; a curve-like object, so
   * x values come as for a curve) and held values lo[i]..hi[i] (finite, or
   * NaN when it held none). Sorted by step, not overlapping.
   */
  class Envelope {
    constructor() {
      this.steps = [];
      this.lo = [];
      this.hi = [];
      this.version = 0;
      this.structure = 0;
    }

    push(first, last, lo, hi) {
      if (!(last >= first)) return;
      this.steps.push(first, last);
      this.lo.push(Number.isFinite(lo) ? lo : NaN);
      this.hi.push(Number.isFinite(hi) ? hi : NaN);
    }

    get size() { return this.lo.length; }

    /** The steps of the widest stretch overlapping first..last (0 when none does). */
    widest(first, last) {
      const s = this.steps;
      let wide = 0;
      let i = Math.max(0, lowerBound(s, first) - 2) & ~1;
      for (; i < s.length && s[i] <= last; i += 2) {
        if (s[i + 1] >= first) wide = Math.max(wide, s[i + 1] - s[i] + 1);
      }
      return wide;
    }

    finish() {
      this.version += 1;
      this.structure += 1;
      return this.size ? this : null;
    }

    /**
     * The stretches of `inner` (finer data for [first, last]) and, around
     * them, those of `outer` (cut where they meet), in order; null: none.
     */
    static splice(outer, inner, first, last) {
      const out = new Envelope();
      const each = (env, visit) => {
        for (let i = 0; env && i < env.size; i++) visit(env.steps[2 * i], env.steps[2 * i + 1], env.lo[i], env.hi[i]);
      };
      const from = inner && inner.size ? Math.min(first, inner.steps[0]) : first;
      const to = inner && inner.size ? Math.max(last, inner.steps[inner.steps.length - 1]) : last;
      each(outer, (a, b, lo, hi) => {
        if (a < from) out.push(a, Math.min(b, from - 1), lo, hi);
      });
      each(inner, (a, b, lo, hi) => out.push(a, b, lo, hi));
      each(outer, (a, b, lo, hi) => {
        if (b > to) out.push(Math.max(a, to + 1), b, lo, hi);
      });
      return out.finish();
    }

    /** A thinning's stretches over an older envelope: the coarser wins where they meet. */
    static merge(older, newer) {
      if (!older) return newer;
      if (!newer) return older;
      const out = new Envelope();
      let i = 0;
      for (let k = 0; k < newer.size; k++) {
        const a = newer.steps[2 * k];
        const b = newer.steps[2 * k + 1];
        let lo = newer.lo[k];
        let hi = newer.hi[k];
        for (; i < older.size && older.steps[2 * i + 1] < a; i++) {
          out.push(older.steps[2 * i], older.steps[2 * i + 1], older.lo[i], older.hi[i]);
        }
        let from = a;
        let to = b;
        for (; i < older.size && older.steps[2 * i] <= b; i++) {
          // An older stretch inside this one, or reaching into it: held by it.
          from = Math.min(from, older.steps[2 * i]);
          to = Math.max(to, older.steps[2 * i + 1]);
          if (!(older.lo[i] >= lo)) lo = Number.isNaN(lo) ? older.lo[i] : Math.min(lo, older.lo[i]);
          if (!(older.hi[i] <= hi)) hi = Number.isNaN(hi) ? older.hi[i] : Math.max(hi, older.hi[i]);
        }
        if (out.size && out.steps[out.steps.length - 1] >= from) from = out.steps[out.steps.length - 1] + 1;
        out.push(from, to, lo, hi);
      }
      for (; i < older.size; i++) {
        if (out.size && older.steps[2 * i] <= out.steps[out.steps.length - 1]) continue;
        out.push(older.steps[2 * i], older.steps[2 * i + 1], older.lo[i], older.hi[i]);
      }
      return out.finish();
    }
  }

  /** Index of the first element of sorted `a` that is >= v. */
  function lowerBound(a, v) {
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  global.StreamHubSeries = { Series, Envelope, toNumber, DEFAULT_CAP };
})(window);
