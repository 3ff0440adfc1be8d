/* stream_hub dashboard — what is drawn, computed from what is kept:
 * smoothing (EMA), a run's clock (step -> time, for x by wall or relative
 * time), and the reduction of a curve to at most two points per pixel column
 * (min and max, in the order they came), alone or across a run's ranks (mean
 * and min–max band), and of an envelope (what stretches of steps shown by
 * fewer points held) to its band per column. Pure functions and small
 * classes: no DOM.
 */
(function (global) {
  "use strict";

  // ---- smoothing ---------------------------------------------------------------

  /**
   * The series' values smoothed by an exponential moving average of weight
   * `weight` (0 = raw), debiased at the start like TensorBoard's, NaN/inf
   * left where they are. Cached on the series: appends extend it.
   */
  function smoothed(series, weight) {
    if (!(weight > 0)) return series.values;
    let cache = series._ema;
    if (!cache || cache.weight !== weight || cache.structure !== series.structure || cache.n > series.values.length) {
      cache = series._ema = { weight, structure: series.structure, n: 0, last: 0, count: 0, out: [] };
    }
    const values = series.values;
    const out = cache.out;
    let { last, count } = cache;
    for (let i = cache.n; i < values.length; i++) {
      const v = values[i];
      if (Number.isFinite(v)) {
        last = last * weight + (1 - weight) * v;
        count += 1;
        out.push(last / (1 - weight ** count));
      } else {
        out.push(v);
      }
    }
    cache.n = values.length;
    cache.last = last;
    cache.count = count;
    return out;
  }

  // ---- a run's clock -----------------------------------------------------------

  const CLOCK_CAP = 4000;

  /**
   * When each step of a run happened: samples (step, ts) from live events and
   * from REST ranges; times between samples are interpolated, before the
   * first and after the last extrapolated at the run's average pace.
   */
  class Clock {
    constructor() {
      this.steps = [];
      this.ts = [];
      this.version = 0;
    }

    get size() { return this.steps.length; }

    /** A live sample: kept when its step is past the last one. */
    add(step, ts) {
      const n = this.steps.length;
      if (n && step <= this.steps[n - 1]) return;
      this.steps.push(step);
      this.ts.push(ts);
      this.version += 1;
      if (n + 1 > CLOCK_CAP) this._thin();
    }

    /** Samples from the server (sorted by step): merged with what is here. */
    merge(steps, ts) {
      const byStep = new Map();
      this.steps.forEach((s, i) => byStep.set(s, this.ts[i]));
      steps.forEach((s, i) => {
        if (Number.isFinite(s) && Number.isFinite(ts[i])) byStep.set(s, ts[i]);
      });
      const keys = Array.from(byStep.keys()).sort((a, b) => a - b);
      this.steps = keys;
      this.ts = keys.map((k) => byStep.get(k));
      this.version += 1;
      while (this.steps.length > CLOCK_CAP) this._thin();
    }

    _thin() {
      const last = this.steps.length - 1;
      this.steps = this.steps.filter((_, i) => i % 2 === 0 || i === last);
      this.ts = this.ts.filter((_, i) => i % 2 === 0 || i === last);
    }

    _pace() {
      const n = this.steps.length;
      if (n < 2) return 0;
      const span = this.steps[n - 1] - this.steps[0];
      return span > 0 ? (this.ts[n - 1] - this.ts[0]) / span : 0;
    }

    /** The time of `step` (NaN when there are no samples at all). */
    timeAt(step) {
      const { steps, ts } = this;
      const n = steps.length;
      if (n === 0) return NaN;
      if (step <= steps[0]) return ts[0] - (steps[0] - step) * this._pace();
      if (step >= steps[n - 1]) return ts[n - 1] + (step - steps[n - 1]) * this._pace();
      let lo = 0;
      let hi = n - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >>> 1;
        if (steps[mid] <= step) lo = mid; else hi = mid;
      }
      const f = (step - steps[lo]) / (steps[hi] - steps[lo]);
      return ts[lo] + f * (ts[hi] - ts[lo]);
    }

    /** The step at time `t` (the inverse of timeAt, for zooming by time). */
    stepAt(t) {
      const { steps, ts } = this;
      const n = steps.length;
      if (n === 0) return NaN;
      const pace = this._pace();
      if (t <= ts[0]) return pace > 0 ? steps[0] - (ts[0] - t) / pace : steps[0];
      if (t >= ts[n - 1]) return pace > 0 ? steps[n - 1] + (t - ts[n - 1]) / pace : steps[n - 1];
      let lo = 0;
      let hi = n - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >>> 1;
        if (ts[mid] <= t) lo = mid; else hi = mid;
      }
      const dt = ts[hi] - ts[lo];
      return dt > 0 ? steps[lo] + ((t - ts[lo]) / dt) * (steps[hi] - steps[lo]) : steps[lo];
    }

    /** timeAt for sorted steps[i0..i1), into out[i0..i1): one walk, no searches. */
    mapSorted(steps, i0, i1, out) {
      const cs = this.steps;
      const ct = this.ts;
      const n = cs.length;
      if (n < 2) {
        for (let i = i0; i < i1; i++) out[i] = this.timeAt(steps[i]);
        return out;
      }
      const pace = this._pace();
      let k = 0;
      for (let i = i0; i < i1; i++) {
        const s = steps[i];
        if (s <= cs[0]) {
          out[i] = ct[0] - (cs[0] - s) * pace;
        } else if (s >= cs[n - 1]) {
          out[i] = ct[n - 1] + (s - cs[n - 1]) * pace;
        } else {
          while (k < n - 2 && cs[k + 1] <= s) k += 1;
          const f = (s - cs[k]) / (cs[k + 1] - cs[k]);
          out[i] = ct[k] + f * (ct[k + 1] - ct[k]);
        }
      }
      return out;
    }
  }

  // ---- at most two points per pixel ----------------------------------------------

  /** Index of the first element of sorted `a` that is >= v. */
  function lowerBound(a, v, lo = 0, hi = a.length) {
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** A reusable output of `reduce`: pixel x, value, and the finite value range seen. */
  class Trace {
    constructor() {
      this.px = [];
      this.vals = [];
      this.lo = Infinity;
      this.hi = -Infinity;
      this.points = 0;
    }
    clear() {
      this.px.length = 0;
      this.vals.length = 0;
      this.lo = Infinity;
      this.hi = -Infinity;
      this.points = 0;
    }
  }

  /**
   * Reduce points (xs[i] in axis units, values[i]) with xs sorted to at most
   * two per pixel column: each column's min and max in the order they came.
   * Only points inside [x0, x1] and one beyond each side (so lines reach the
   * edges) are looked at. A NaN/inf value (or, on a log axis, one <= 0)
   * breaks the line: a NaN x is pushed. `px = left + (x - x0) * scale`.
   */
  function reduce(xs, values, x0, x1, left, scale, logY, out) {
    out.clear();
    const n = xs.length;
    let i = Math.max(0, lowerBound(xs, x0) - 1);
    const end = Math.min(n, lowerBound(xs, x1, i) + 1);
    let col = NaN;
    let lo = 0;
    let hi = 0;
    let loAt = 0;
    let hiAt = 0;
    let open = false;
    const px = out.px;
    const vals = out.vals;
    const flush = () => {
      if (!open) return;
      const x = left + (col + 0.5);
      if (lo === hi) {
        px.push(x);
        vals.push(lo);
      } else if (loAt < hiAt) {
        px.push(x, x);
        vals.push(lo, hi);
      } else {
        px.push(x, x);
        vals.push(hi, lo);
      }
      open = false;
    };
    let seen = 0;
    let vmin = Infinity;
    let vmax = -Infinity;
    for (; i < end; i++) {
      const v = values[i];
      if (!Number.isFinite(v) || (logY && v <= 0)) {
        flush();
        px.push(NaN);
        vals.push(NaN);
        continue;
      }
      const x = xs[i];
      if (x >= x0 && x <= x1) {
        if (v < vmin) vmin = v;
        if (v > vmax) vmax = v;
      }
      const c = Math.floor((x - x0) * scale);
      if (c !== col || !open) {
        flush();
        col = c;
        lo = hi = v;
        loAt = hiAt = i;
        open = true;
      } else {
        if (v < lo) { lo = v; loAt = i; }
        if (v > hi) { hi = v; hiAt = i; }
      }
      seen += 1;
    }
    flush();
    out.lo = vmin;
    out.hi = vmax;
    out.points = seen;
    return out;
  }

  /**
   * Across a run's ranks, per pixel column: each rank's mean in the column,
   * then their mean (the line) and min and max (the band). `members` are
   * [{xs, values}] with xs sorted. Writes out.px/mean/lo/hi (NaN px breaks).
   */
  function reduceBand(members, x0, x1, left, width, scale, logY, out) {
    const cols = Math.max(1, Math.ceil(width) + 2);
    if (!out.sum || out.sum.length < cols) {
      out.sum = new Float64Array(cols);
      out.cnt = new Uint16Array(cols);
      out.lo = new Float64Array(cols);
      out.hi = new Float64Array(cols);
      out.bad = new Uint8Array(cols);
    }
    const { sum, cnt, lo, hi, bad } = out;
    sum.fill(0, 0, cols);
    cnt.fill(0, 0, cols);
    lo.fill(Infinity, 0, cols);
    hi.fill(-Infinity, 0, cols);
    bad.fill(0, 0, cols);
    // Columns -1 and cols-2 hold the points just outside the range (index shifted by one).
    const commit = (c, s, k) => {
      const j = c + 1;
      if (j < 0 || j >= cols || k === 0) return;
      const m = s / k;
      sum[j] += m;
      cnt[j] += 1;
      if (m < lo[j]) lo[j] = m;
      if (m > hi[j]) hi[j] = m;
    };
    let seen = 0;
    for (const { xs, values } of members) {
      const n = xs.length;
      let i = Math.max(0, lowerBound(xs, x0) - 1);
      const end = Math.min(n, lowerBound(xs, x1, i) + 1);
      let col = NaN;
      let s = 0;
      let k = 0;
      for (; i < end; i++) {
        const c = Math.max(-1, Math.min(cols - 2, Math.floor((xs[i] - x0) * scale)));
        if (c !== col) {
          commit(col, s, k);
          col = c;
          s = 0;
          k = 0;
        }
        const v = values[i];
        if (!Number.isFinite(v) || (logY && v <= 0)) {
          bad[c + 1] = 1;
          continue;
        }
        s += v;
        k += 1;
        seen += 1;
      }
      commit(col, s, k);
    }
    out.px = out.px || [];
    out.mean = out.mean || [];
    out.bandLo = out.bandLo || [];
    out.bandHi = out.bandHi || [];
    out.px.length = out.mean.length = out.bandLo.length = out.bandHi.length = 0;
    let vmin = Infinity;
    let vmax = -Infinity;
    for (let j = 0; j < cols; j++) {
      if (cnt[j] === 0) {
        if (bad[j]) {
          out.px.push(NaN);
          out.mean.push(NaN);
          out.bandLo.push(NaN);
          out.bandHi.push(NaN);
        }
        continue;
      }
      out.px.push(left + (j - 1) + 0.5);
      out.mean.push(sum[j] / cnt[j]);
      out.bandLo.push(lo[j]);
      out.bandHi.push(hi[j]);
      if (j >= 1 && j < cols - 1) {
        if (lo[j] < vmin) vmin = lo[j];
        if (hi[j] > vmax) vmax = hi[j];
      }
    }
    out.vmin = vmin;
    out.vmax = vmax;
    out.points = seen;
    return out;
  }

  /**
   * An envelope (stretch i: x from xs[2i] to xs[2i+1], `steps` likewise, and
   * the lowest and highest value it held, lo[i] and hi[i]; see series.js)
   * per pixel column: each column's lowest and highest value over the
   * stretches reaching into it. Writes out.px (column centres; NaN where no
   * stretch is, which breaks the band), out.bandLo, out.bandHi,
   * out.vmin/vmax (the values of the stretches in [x0, x1]: the y axis must
   * hold them), and out.widest: the most steps one of them stands for (0: none).
   */
  function reduceEnvelope(xs, steps, lo, hi, x0, x1, left, width, scale, logY, out) {
    const cols = Math.max(1, Math.ceil(width) + 1);
    if (!out.clo || out.clo.length < cols) {
      out.clo = new Float64Array(cols);
      out.chi = new Float64Array(cols);
    }
    const { clo, chi } = out;
    clo.fill(Infinity, 0, cols);
    chi.fill(-Infinity, 0, cols);
    const n = lo.length;
    let widest = 0;
    let vmin = Infinity;
    let vmax = -Infinity;
    for (let i = lowerBound(xs, x0) >> 1; i < n && xs[2 * i] <= x1; i++) {
      if (xs[2 * i + 1] < x0) continue;
      widest = Math.max(widest, steps[2 * i + 1] - steps[2 * i] + 1);
      let a = lo[i];
      const b = hi[i];
      if (!(a <= b) || (logY && b <= 0)) continue;
      if (logY && a <= 0) a = b; // its positive part only (the axis holds no more)
      if (a < vmin) vmin = a;
      if (b > vmax) vmax = b;
      const ca = Math.max(0, Math.floor((xs[2 * i] - x0) * scale));
      const cb = Math.min(cols - 1, Math.floor((xs[2 * i + 1] - x0) * scale));
      for (let c = ca; c <= cb; c++) {
        if (a < clo[c]) clo[c] = a;
        if (b > chi[c]) chi[c] = b;
      }
    }
    out.px = out.px || [];
    out.bandLo = out.bandLo || [];
    out.bandHi = out.bandHi || [];
    out.px.length = out.bandLo.length = out.bandHi.length = 0;
    let open = false;
    for (let c = 0; c < cols; c++) {
      if (clo[c] <= chi[c]) {
        out.px.push(left + c + 0.5);
        out.bandLo.push(clo[c]);
        out.bandHi.push(chi[c]);
        open = true;
      } else if (open) {
        out.px.push(NaN);
        out.bandLo.push(NaN);
        out.bandHi.push(NaN);
        open = false;
      }
    }
    out.widest = widest;
    out.vmin = vmin;
    out.vmax = vmax;
    return out;
  }

  global.StreamHubTransforms = { smoothed, Clock, Trace, reduce, reduceBand, reduceEnvelope, lowerBound };
})(window);
