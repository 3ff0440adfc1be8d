/* stream_hub dashboard — one metric's curve for one run, in bounded memory.
 *
 * Points are kept sorted by step. When a series grows past `cap` points it is
 * thinned to about half, uniformly in *step* (not in point count): a curve
 * loaded from REST at 500 steps per point and then followed live at one point
 * per step ends up with the same density everywhere, instead of the old part
 * getting coarser with every thinning. Each step bucket keeps its lowest and
 * highest value, so spikes survive, plus its first non-finite point, so a NaN
 * still breaks the line where it happened.
 */
(function (global) {
  "use strict";

  var DEFAULT_CAP = 5000;

  /** A value from the wire as a number: numbers, "NaN", "Infinity", "-Infinity"; null -> NaN. */
  function toNumber(v) {
    if (typeof v === "number") return v;
    if (v === null || v === undefined || v === "") return NaN;
    if (typeof v === "boolean") return v ? 1 : 0;
    return Number(v);
  }

  function Series(cap) {
    this.cap = cap || DEFAULT_CAP;
    this.steps = [];
    this.values = [];
    // Seq of the REST snapshot this series was loaded from: live events at or
    // below it are already in the curve and must not be added twice.
    this.floor = 0;
    this.version = 0;       // bumped on every change; charts compare it
    this.rewrites = 0;      // points that replaced or went before an existing step
    this.thinnings = 0;
    this._min = Infinity;   // finite value range, kept incrementally;
    this._max = -Infinity;  // _rangeValid=false means "recompute lazily"
    this._rangeValid = true;
  }

  Series.prototype.length = function () { return this.steps.length; };

  /** Replace the whole curve (a REST snapshot). */
  Series.prototype.load = function (steps, values, floor) {
    var n = Math.min(steps.length, values.length);
    var pts = [];
    for (var i = 0; i < n; i++) {
      var s = Number(steps[i]);
      if (isFinite(s)) pts.push([s, toNumber(values[i])]);
    }
    // The server sends them sorted; sort anyway so one odd answer cannot break
    // the binary searches below.
    pts.sort(function (a, b) { return a[0] - b[0]; });
    this.steps = pts.map(function (p) { return p[0]; });
    this.values = pts.map(function (p) { return p[1]; });
    this.floor = floor || 0;
    this._rangeValid = false;
    this.version++;
    if (this.steps.length > this.cap) this.thin();
  };

  /**
   * Replace the whole curve with the server's downsampled one
   * (GET /api/runs/{run}/series): bucket i starts at steps[i], ends with
   * values[i], and saw mins[i]..maxs[i]. When buckets hold several points
   * (exact=false) each becomes up to three points — its extremes inside the
   * bucket and its last value at the bucket's end — so a noisy curve loaded
   * late looks like the same curve followed live. `endStep` is the run's last
   * step, where the newest bucket ends.
   */
  Series.prototype.loadBuckets = function (answer, endStep, floor, exact) {
    var starts = answer.steps || [], last = answer.values || [];
    var mins = answer.mins || [], maxs = answer.maxs || [];
    if (exact || mins.length !== starts.length || maxs.length !== starts.length) {
      this.load(starts, last, floor);
      return;
    }
    var steps = [], values = [], n = starts.length;
    for (var i = 0; i < n; i++) {
      var s = Number(starts[i]);
      var next = i + 1 < n ? Number(starts[i + 1]) - 1 : Math.max(s, Number(endStep));
      var end = isFinite(next) && next >= s ? next : s;
      var v = toNumber(last[i]), lo = toNumber(mins[i]), hi = toNumber(maxs[i]);
      var extremes = [];
      if (isFinite(lo) && lo !== v) extremes.push(lo);
      if (isFinite(hi) && hi !== v && hi !== lo) extremes.push(hi);
      // The extreme farther from where the bucket ends comes first.
      if (extremes.length === 2 && Math.abs(v - extremes[0]) < Math.abs(v - extremes[1])) extremes.reverse();
      var span = end - s, m = extremes.length;
      if (span >= m) {
        // Spread over the bucket: the first at its start, the last value at its end.
        for (var k = 0; k < m; k++) {
          steps.push(s + Math.round((span * k) / (m + 1)));
          values.push(extremes[k]);
        }
      }
      if (i === 0 && (m === 0 || span < m) && end > s) {
        steps.push(s); // the curve starts where the run started
        values.push(v);
      }
      steps.push(end);
      values.push(v);
    }
    this.load(steps, values, floor);
  };

  /** Add one point. The common case (a new, higher step) is O(1). */
  Series.prototype.add = function (step, value) {
    var steps = this.steps, n = steps.length;
    if (n === 0 || step > steps[n - 1]) {
      steps.push(step);
      this.values.push(value);
      if (this._rangeValid && isFinite(value)) {
        if (value < this._min) this._min = value;
        if (value > this._max) this._max = value;
      }
    } else {
      // Same step again, or a run that went back (resumed from a checkpoint).
      var i = this.lowerBound(step);
      if (steps[i] === step) {
        this.values[i] = value;
      } else {
        steps.splice(i, 0, step);
        this.values.splice(i, 0, value);
      }
      this.rewrites++;
      this._rangeValid = false;
    }
    this.version++;
    if (steps.length > this.cap) this.thin();
  };

  /** Index of the first point whose step is >= step. */
  Series.prototype.lowerBound = function (step) {
    var a = this.steps, lo = 0, hi = a.length;
    while (lo < hi) {
      var mid = (lo + hi) >>> 1;
      if (a[mid] < step) lo = mid + 1; else hi = mid;
    }
    return lo;
  };

  /** Index of the point whose step is closest to step, or -1 when empty. */
  Series.prototype.nearest = function (step) {
    var n = this.steps.length;
    if (n === 0) return -1;
    var i = this.lowerBound(step);
    if (i >= n) return n - 1;
    if (i > 0 && step - this.steps[i - 1] <= this.steps[i] - step) return i - 1;
    return i;
  };

  /** [min, max] of the finite values, or null when there are none. */
  Series.prototype.valueRange = function () {
    if (!this._rangeValid) {
      var lo = Infinity, hi = -Infinity, v = this.values;
      for (var i = 0; i < v.length; i++) {
        var x = v[i];
        if (x < lo) lo = x;   // NaN compares false both ways: skipped
        if (x > hi) hi = x;
      }
      // +-Infinity would pass the comparisons; the chart cannot scale to them.
      if (lo === -Infinity || hi === Infinity) {
        lo = Infinity; hi = -Infinity;
        for (var j = 0; j < v.length; j++) {
          if (!isFinite(v[j])) continue;
          if (v[j] < lo) lo = v[j];
          if (v[j] > hi) hi = v[j];
        }
      }
      this._min = lo; this._max = hi; this._rangeValid = true;
    }
    return this._min <= this._max ? [this._min, this._max] : null;
  };

  Series.prototype.firstStep = function () { return this.steps.length ? this.steps[0] : null; };
  Series.prototype.lastStep = function () { return this.steps.length ? this.steps[this.steps.length - 1] : null; };

  /** Thin to about cap/2 points: per step bucket keep min, max and the first non-finite point. */
  Series.prototype.thin = function () {
    var steps = this.steps, values = this.values, n = steps.length;
    if (n < 4) return;
    var buckets = Math.max(2, Math.floor(this.cap / 4));
    var first = steps[0], last = steps[n - 1];
    var width = (last - first) / buckets || 1;
    var outS = [], outV = [];
    var i = 0;
    // The first and last points are kept exactly: the curve's extent and the
    // live edge must not move when it is thinned.
    outS.push(steps[0]); outV.push(values[0]);
    i = 1;
    while (i < n - 1) {
      var b = Math.floor((steps[i] - first) / width);
      var lo = -1, hi = -1, bad = -1;
      while (i < n - 1 && Math.floor((steps[i] - first) / width) === b) {
        var v = values[i];
        if (isFinite(v)) {
          if (lo < 0 || v < values[lo]) lo = i;
          if (hi < 0 || v > values[hi]) hi = i;
        } else if (bad < 0) {
          bad = i;
        }
        i++;
      }
      var keep = [lo, hi, bad].filter(function (k, pos, arr) {
        return k >= 0 && arr.indexOf(k) === pos;
      }).sort(function (x, y) { return x - y; });
      for (var k = 0; k < keep.length; k++) {
        outS.push(steps[keep[k]]);
        outV.push(values[keep[k]]);
      }
    }
    outS.push(steps[n - 1]); outV.push(values[n - 1]);
    this.steps = outS;
    this.values = outV;
    this.thinnings++;
    this._rangeValid = false;
    this.version++;
  };

  global.StreamHubSeries = { Series: Series, toNumber: toNumber, DEFAULT_CAP: DEFAULT_CAP };
})(window);
