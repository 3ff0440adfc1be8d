/* stream_hub dashboard — a chart on <canvas>: one line per run (or per rank),
 * or a run's mean across ranks with its min–max band; raw data faint behind
 * smoothed lines; linear or log y; x by step, wall time or relative time;
 * a zoomed x range. Where points stand for several steps (buckets), the
 * line's envelope — the lowest and highest value each stretch held — is a
 * faint band behind it, and the chart says the resolution ("1 point ≈ 300
 * steps", hooks.onResolution).
 *
 * The chart draws only when asked (draw()); the app decides when, within a
 * time budget per animation frame. Every line is first reduced to at most two
 * points per pixel column (transforms.js), so drawing costs the same for 500
 * or 500 000 points. Rasterizing is what costs on a CPU-only browser: dense
 * lines are written as pixels (raster.js), sparse ones are stroked, a few
 * segments at a time (one long self-crossing stroke becomes one huge polygon).
 *
 * An entry is {key, label, color, visible, kind: "line"|"band", curves:
 * [curve], xsOf(curve) -> x values, step(curve, i)}; a curve has steps,
 * values, version and structure (a Series, or a Series merged with finer data
 * for a zoom).
 */
(function (global) {
  "use strict";

  const A = global.StreamHubAxes;
  const { smoothed, Trace, reduce, reduceBand, reduceEnvelope, lowerBound } = global.StreamHubTransforms;
  const { PixelLayer, pixel } = global.StreamHubRaster;

  const PAD_TOP = 10;
  const PAD_RIGHT = 14;
  const PAD_BOTTOM = 24;
  const TICK_GAP = 8;
  const LINE_WIDTH = 1.6;
  const SEGMENTS_PER_STROKE = 8;
  const DENSE = 1 / 3; // points per pixel from which a line is drawn as pixels
  const RAW_ALPHA = 0.28; // the raw line behind a smoothed one
  const BAND_ALPHA = 0.2;
  const ENVELOPE_ALPHA = 0.22;

  class LineChart {
    /**
     * @param {HTMLCanvasElement} canvas
     * @param {{onHover: function(?Object), onChange: function(), onResolution: function(number)}} hooks
     *   onResolution: the most steps one point in view stands for (1: every point is a step), on change
     */
    constructor(canvas, hooks = {}) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.hooks = hooks;
      this.entries = [];
      this.cssWidth = 0;
      this.cssHeight = 0;
      this.dpr = 1;
      this.hover = null; // {x, y, clientX, clientY} in CSS px
      this.selection = null; // [px0, px1] while a zoom is being dragged
      this.zoom = null; // [x0, x1] in axis units, or null: everything
      this.logY = false;
      this.draws = 0;
      this.lastDrawMs = 0;
      this.xRange = null;
      this.yRange = null;
      this.pointsDrawn = 0;
      this.box = null; // the last layout: plot box, x range and scale
      this.xMode = "step";
      this.smoothing = 0;
      this._left = 48;
      this.resolution = 1; // the most steps one point in view stands for
      this._traces = new Map(); // entry key -> {raw, smooth, band, rawBand, envelope}
      this._scratch = {}; // reduceEnvelope's output when only its resolution is wanted
      this._layer = null; // dense lines, drawn as pixels (raster.js)
      this._pixels = new Map();
    }

    setEntries(entries) { this.entries = entries; }

    /** Match the backing store to the element's size; true when it changed. */
    resize(cssWidth, cssHeight, dpr) {
      const w = Math.max(1, Math.round(cssWidth));
      const h = Math.max(1, Math.round(cssHeight));
      if (w === this.cssWidth && h === this.cssHeight && dpr === this.dpr) return false;
      this.cssWidth = w;
      this.cssHeight = h;
      this.dpr = dpr;
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
      return true;
    }

    /** Width of the plot area in CSS px (what a zoom asks the server's resolution for). */
    plotWidth() {
      return Math.max(10, (this.cssWidth || 400) - this._left - PAD_RIGHT);
    }

    info() {
      return {
        draws: this.draws,
        lastDrawMs: this.lastDrawMs,
        xRange: this.xRange,
        yRange: this.yRange,
        pointsDrawn: this.pointsDrawn,
        width: this.cssWidth,
        height: this.cssHeight,
        zoom: this.zoom,
        box: this.box && { left: this.box.left, right: this.box.right, top: this.box.top, bottom: this.box.bottom },
        logY: this.logY,
        xMode: this.xMode,
        smoothing: this.smoothing,
        resolution: this.resolution,
        lines: this.entries.filter((e) => e.visible).map((e) => ({ key: e.key, kind: e.kind })),
      };
    }

    /** Draw everything; `theme` holds colours and font, `settings` {xMode, smoothing}. */
    draw(theme, settings) {
      const started = performance.now();
      this.xMode = settings.xMode;
      this.smoothing = settings.smoothing;
      const { ctx, cssWidth: W, cssHeight: H } = this;
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      ctx.clearRect(0, 0, W, H);
      ctx.font = `11px ${theme.font}`;
      ctx.textBaseline = "middle";
      this.pointsDrawn = 0;

      const visible = this.entries.filter((e) => e.visible && e.curves.some((c) => c.steps.length > 0));
      const xExt = visible.length ? this._xExtent(visible) : null;
      if (!xExt) {
        this.xRange = this.yRange = this.box = null;
        this._setResolution(1);
        ctx.fillStyle = theme.muted;
        ctx.textAlign = "center";
        ctx.fillText("no visible data", W / 2, H / 2);
        if (this.hover) this._hover(null);
        this._finish(started);
        return;
      }
      const [x0, x1] = xExt;
      const plotH = Math.max(10, H - PAD_TOP - PAD_BOTTOM);
      // The y labels' width decides the plot's width, which decides the
      // reduction: guess it from the last draw, and redo once if it moved.
      let left = this._left;
      let traced = this._trace(visible, x0, x1, left, W, settings.smoothing);
      let yAxis = this._yAxis(traced, plotH);
      const need = Math.ceil(Math.max(0, ...yAxis.labels.map((l) => ctx.measureText(l).width))) + TICK_GAP + 4;
      if (Math.abs(need - left) > 2) {
        left = this._left = need;
        traced = this._trace(visible, x0, x1, left, W, settings.smoothing);
        yAxis = this._yAxis(traced, plotH);
      }
      const plotW = Math.max(10, W - left - PAD_RIGHT);
      const box = { left, right: left + plotW, top: PAD_TOP, bottom: PAD_TOP + plotH, width: plotW };
      const scale = plotW / (x1 - x0);
      const { y0, y1 } = yAxis;
      const log = this.logY;
      const ly0 = log ? Math.log10(y0) : y0;
      const yScale = plotH / ((log ? Math.log10(y1) : y1) - ly0);
      const Y = log ? (v) => box.top + plotH - (Math.log10(v) - ly0) * yScale : (v) => box.top + (y1 - v) * yScale;
      this.box = { ...box, x0, x1, scale };
      this.xRange = [x0, x1];
      this.yRange = [y0, y1];

      this._drawGrid(ctx, theme, box, x0, x1, scale, Y, yAxis);
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, box.top - 2, plotW + 1, plotH + 4);
      ctx.clip();
      ctx.lineJoin = "round";
      ctx.lineCap = "round";
      // Bands first (paths), then dense lines as pixels in one layer, then
      // sparse lines as strokes on top.
      const dpr = this.dpr;
      const layer = this._layer || (this._layer = new PixelLayer());
      layer.begin(this.canvas.width, this.canvas.height, {
        left: Math.floor(left * dpr), right: Math.ceil((left + plotW) * dpr) - 1,
        top: Math.floor((box.top - 2) * dpr), bottom: Math.ceil((box.bottom + 2) * dpr) - 1,
      });
      const sparse = [];
      const line = (px, vals, color, alpha) => {
        if (px.length > plotW * DENSE) {
          layer.line(px, vals, Y, dpr, this._pixel(color, alpha));
          for (const x of px) if (!Number.isNaN(x)) this.pointsDrawn += 1;
        } else {
          sparse.push([px, vals, color, alpha]);
        }
      };
      const smoothing = settings.smoothing > 0;
      for (const entry of visible) {
        const t = this._traces.get(entry.key);
        if (t.envelope && t.envelope.px.length) {
          ctx.fillStyle = entry.color;
          this._drawBand(ctx, t.envelope, Y, ENVELOPE_ALPHA);
        }
        if (entry.kind === "band") {
          ctx.fillStyle = entry.color;
          this._drawBand(ctx, t.band, Y);
          if (smoothing) line(t.rawBand.px, t.rawBand.mean, entry.color, RAW_ALPHA);
          line(t.band.px, t.band.mean, entry.color, 1);
        } else {
          if (smoothing) line(t.raw.px, t.raw.vals, entry.color, RAW_ALPHA);
          line(smoothing ? t.smooth.px : t.raw.px, smoothing ? t.smooth.vals : t.raw.vals, entry.color, 1);
        }
      }
      layer.paint(ctx);
      for (const [px, vals, color, alpha] of sparse) {
        ctx.strokeStyle = color;
        ctx.fillStyle = color;
        ctx.globalAlpha = alpha;
        this.pointsDrawn += this._drawTrace(ctx, px, vals, Y);
      }
      ctx.globalAlpha = 1;
      ctx.restore();

      if (this.selection) this._drawSelection(ctx, theme, box);
      if (this.hover && !this.selection) this._drawHover(ctx, theme, box, visible, Y);
      this._finish(started);
    }

    /** The x value at a pixel of the last layout (null before the first draw). */
    xAt(px) {
      const b = this.box;
      return b ? b.x0 + (px - b.left) / b.scale : null;
    }

    // -- internals ------------------------------------------------------------

    /** The pixel value of a colour at an opacity (cached). */
    _pixel(color, alpha) {
      const key = `${color}/${alpha}`;
      let value = this._pixels.get(key);
      if (value === undefined) {
        if (this._pixels.size > 500) this._pixels.clear();
        value = pixel(color, alpha);
        this._pixels.set(key, value);
      }
      return value;
    }

    _hover(info) {
      if (this.hooks.onHover) this.hooks.onHover(info);
    }

    _finish(started) {
      this.draws += 1;
      this.lastDrawMs = performance.now() - started;
    }

    _xExtent(visible) {
      if (this.zoom) return this.zoom;
      let x0 = Infinity;
      let x1 = -Infinity;
      for (const entry of visible) {
        for (const curve of entry.curves) {
          const n = curve.steps.length;
          if (!n) continue;
          const xs = entry.xsOf(curve);
          if (xs[0] < x0) x0 = xs[0];
          if (xs[n - 1] > x1) x1 = xs[n - 1];
        }
      }
      if (!(x0 <= x1)) return null;
      if (x0 === x1) return [x0 - 1, x1 + 1];
      return [x0, x1];
    }

    /** Reduce every visible entry to its traces; returns the finite value range. */
    _trace(visible, x0, x1, left, W, smoothing) {
      const plotW = Math.max(10, W - left - PAD_RIGHT);
      const scale = plotW / (x1 - x0);
      const log = this.logY;
      let lo = Infinity;
      let hi = -Infinity;
      let resolution = 1;
      const keys = new Set();
      for (const entry of visible) {
        keys.add(entry.key);
        let t = this._traces.get(entry.key);
        if (!t) {
          t = { raw: new Trace(), smooth: new Trace(), band: {}, rawBand: {}, envelope: null };
          this._traces.set(entry.key, t);
        }
        // Where points stand for several steps: the envelope (a line's, drawn)
        // and the resolution (of every curve).
        t.envelope = null;
        for (const curve of entry.curves) {
          const env = curve.envelope;
          if (!env) continue;
          // (A band's members are not drawn with theirs: only the resolution counts.)
          const out = entry.kind === "band" ? this._scratch : (t.envelope = t.envelopeOut || (t.envelopeOut = {}));
          reduceEnvelope(entry.xsOf(env), env.steps, env.lo, env.hi, x0, x1, left, plotW, scale, log, out);
          resolution = Math.max(resolution, out.widest);
          if (entry.kind !== "band") {
            lo = Math.min(lo, out.vmin);
            hi = Math.max(hi, out.vmax);
          }
        }
        if (entry.kind === "band") {
          const raw = entry.curves.map((c) => ({ xs: entry.xsOf(c), values: c.values }));
          reduceBand(raw, x0, x1, left, plotW, scale, log, t.rawBand);
          if (smoothing > 0) {
            if (t.band === t.rawBand) t.band = {};
            const members = entry.curves.map((c) => ({ xs: entry.xsOf(c), values: smoothed(c, smoothing) }));
            reduceBand(members, x0, x1, left, plotW, scale, log, t.band);
          } else {
            t.band = t.rawBand;
          }
          lo = Math.min(lo, t.rawBand.vmin);
          hi = Math.max(hi, t.rawBand.vmax);
          continue;
        }
        const curve = entry.curves[0];
        const xs = entry.xsOf(curve);
        reduce(xs, curve.values, x0, x1, left, scale, log, t.raw);
        if (smoothing > 0) reduce(xs, smoothed(curve, smoothing), x0, x1, left, scale, log, t.smooth);
        lo = Math.min(lo, t.raw.lo);
        hi = Math.max(hi, t.raw.hi);
      }
      for (const key of this._traces.keys()) if (!keys.has(key)) this._traces.delete(key);
      this._setResolution(resolution);
      return { lo, hi };
    }

    _setResolution(steps) {
      if (steps === this.resolution) return;
      this.resolution = steps;
      if (this.hooks.onResolution) this.hooks.onResolution(steps);
    }

    _yAxis(range, plotH) {
      let { lo, hi } = range;
      const count = Math.max(2, Math.floor(plotH / 40));
      if (this.logY) {
        if (!(lo > 0 && hi >= lo)) {
          lo = 0.1;
          hi = 1;
        }
        if (lo === hi) {
          lo /= 2;
          hi *= 2;
        }
        const pad = (Math.log10(hi) - Math.log10(lo)) * 0.06;
        const y0 = 10 ** (Math.log10(lo) - pad);
        const y1 = 10 ** (Math.log10(hi) + pad);
        const values = A.logTicks(y0, y1, count);
        return { y0, y1, values, labels: values.map(A.formatLogTick) };
      }
      if (!(lo <= hi)) {
        lo = 0;
        hi = 1;
      }
      const span = hi - lo;
      const pad = span > 0 ? span * 0.06 : Math.abs(lo) * 0.1 || 1;
      const y0 = lo - pad;
      const y1 = hi + pad;
      const step = A.niceStep(y1 - y0, count);
      const values = A.ticks(y0, y1, step);
      return { y0, y1, values, labels: values.map((v) => A.formatTick(v, step)) };
    }

    /** X ticks and their labels for the x mode. */
    _xTicks(x0, x1, width) {
      const count = Math.max(2, Math.floor(width / 90));
      if (this.xMode === "wall") {
        const step = A.timeStep(x1 - x0, count);
        return A.timeTicks(x0, x1, step).map((v) => [v, A.formatClock(v, step)]);
      }
      if (this.xMode === "relative") {
        const step = A.timeStep(x1 - x0, count);
        return A.ticks(x0, x1, step).map((v) => [v, A.formatDuration(v)]);
      }
      const step = Math.max(1, A.niceStep(x1 - x0, count));
      return A.ticks(x0, x1, step).map((v) => [v, A.formatStep(v, step)]);
    }

    _drawGrid(ctx, theme, box, x0, x1, scale, Y, yAxis) {
      ctx.lineWidth = 1;
      ctx.strokeStyle = theme.grid;
      ctx.fillStyle = theme.muted;
      ctx.textAlign = "right";
      ctx.beginPath();
      yAxis.values.forEach((v, i) => {
        const y = Math.round(Y(v)) + 0.5;
        ctx.moveTo(box.left, y);
        ctx.lineTo(box.right, y);
        ctx.fillText(yAxis.labels[i], box.left - TICK_GAP, y);
      });
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const [v, label] of this._xTicks(x0, x1, box.width)) {
        const x = Math.round(box.left + (v - x0) * scale) + 0.5;
        ctx.moveTo(x, box.top);
        ctx.lineTo(x, box.bottom);
        ctx.fillText(label, x, box.bottom + 6);
      }
      ctx.stroke();
      ctx.textBaseline = "middle";
      ctx.strokeStyle = theme.axis;
      ctx.beginPath();
      ctx.moveTo(box.left + 0.5, box.top);
      ctx.lineTo(box.left + 0.5, box.bottom + 0.5);
      ctx.lineTo(box.right, box.bottom + 0.5);
      ctx.stroke();
    }

    /**
     * A sparse reduced line, stroked a few segments at a time: NaN px break
     * it; lone points become dots. Returns how many points it sent.
     */
    _drawTrace(ctx, px, vals, Y) {
      const n = px.length;
      if (n === 0) return 0;
      const piece = SEGMENTS_PER_STROKE;
      ctx.lineWidth = LINE_WIDTH;
      let sent = 0;
      let run = 0; // points in the current unbroken stretch
      let inPiece = 0;
      let lastX = 0;
      let lastY = 0;
      const dot = () => {
        ctx.moveTo(lastX + 2.5, lastY);
        ctx.arc(lastX, lastY, 2.5, 0, 2 * Math.PI);
      };
      let dots = null;
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        const x = px[i];
        if (Number.isNaN(x)) {
          if (run === 1) (dots = dots || []).push([lastX, lastY]);
          run = 0;
          continue;
        }
        const y = Y(vals[i]);
        if (run === 0) {
          ctx.moveTo(x, y);
        } else {
          ctx.lineTo(x, y);
          inPiece += 1;
          if (inPiece === piece) {
            ctx.stroke();
            ctx.beginPath();
            ctx.moveTo(x, y);
            inPiece = 0;
          }
        }
        lastX = x;
        lastY = y;
        run += 1;
        sent += 1;
      }
      ctx.stroke();
      if (run === 1) (dots = dots || []).push([lastX, lastY]);
      if (dots) {
        ctx.beginPath();
        for ([lastX, lastY] of dots) dot();
        ctx.fill();
      }
      return sent;
    }

    /** A band (a run's ranks' min–max, or an envelope): one filled shape per unbroken stretch. */
    _drawBand(ctx, band, Y, alpha = BAND_ALPHA) {
      const { px, bandLo, bandHi } = band;
      if (!px || !px.length) return;
      ctx.globalAlpha = alpha;
      ctx.beginPath();
      let start = 0;
      const close = (end) => {
        if (end - start < 1) return;
        ctx.moveTo(px[start], Y(bandHi[start]));
        for (let i = start + 1; i < end; i++) ctx.lineTo(px[i], Y(bandHi[i]));
        if (end - start === 1) ctx.lineTo(px[start] + 1, Y(bandHi[start]));
        for (let i = end - 1; i >= start; i--) ctx.lineTo(px[i], Y(bandLo[i]));
        ctx.closePath();
      };
      for (let i = 0; i < px.length; i++) {
        if (Number.isNaN(px[i])) {
          close(i);
          start = i + 1;
        }
      }
      close(px.length);
      ctx.fill();
      ctx.globalAlpha = 1;
    }

    _drawSelection(ctx, theme, box) {
      const [a, b] = this.selection;
      const x = Math.max(box.left, Math.min(a, b));
      const w = Math.min(box.right, Math.max(a, b)) - x;
      ctx.fillStyle = theme.selection;
      ctx.fillRect(x, box.top, w, box.bottom - box.top);
      ctx.strokeStyle = theme.accent;
      ctx.lineWidth = 1;
      ctx.strokeRect(x + 0.5, box.top + 0.5, Math.max(0, w - 1), box.bottom - box.top - 1);
    }

    /** Crosshair at the point nearest the pointer; a dot on each line; tooltip rows. */
    _drawHover(ctx, theme, box, visible, Y) {
      const { x: px } = this.hover;
      if (px < box.left - 4 || px > box.right + 4) {
        this._hover(null);
        return;
      }
      const target = this.xAt(px);
      const smoothing = this.smoothing;
      let best = null;
      let bestDistance = Infinity;
      const rows = [];
      for (const entry of visible) {
        const points = [];
        for (const curve of entry.curves) {
          const xs = entry.xsOf(curve);
          if (!xs.length) continue;
          let k = lowerBound(xs, target);
          if (k >= xs.length || (k > 0 && target - xs[k - 1] <= xs[k] - target)) k -= 1;
          const values = smoothing > 0 ? smoothed(curve, smoothing) : curve.values;
          points.push({ x: xs[k], step: curve.steps[k], value: values[k], raw: curve.values[k] });
          if (Math.abs(xs[k] - target) < bestDistance) {
            bestDistance = Math.abs(xs[k] - target);
            best = xs[k];
          }
        }
        if (!points.length) continue;
        if (entry.kind === "band") {
          const finite = points.map((p) => p.value).filter(Number.isFinite);
          const mean = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : NaN;
          rows.push({
            label: entry.label, color: entry.color, step: points[0].step, x: points[0].x, value: mean,
            range: finite.length ? [Math.min(...finite), Math.max(...finite)] : null,
          });
        } else {
          const p = points[0];
          rows.push({ label: entry.label, color: entry.color, step: p.step, x: p.x, value: p.value,
            raw: smoothing > 0 ? p.raw : undefined });
        }
      }
      if (best === null) {
        this._hover(null);
        return;
      }
      const b = this.box;
      const X = (x) => b.left + (x - b.x0) * b.scale;
      const x = Math.round(X(best)) + 0.5;
      ctx.strokeStyle = theme.crosshair;
      ctx.lineWidth = 1;
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(x, box.top);
      ctx.lineTo(x, box.bottom);
      ctx.stroke();
      ctx.setLineDash([]);
      for (const row of rows) {
        if (!Number.isFinite(row.value) || (this.logY && row.value <= 0)) continue;
        ctx.fillStyle = row.color;
        ctx.strokeStyle = theme.panel;
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(X(row.x), Y(row.value), 3.5, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
      const bestRow = rows.reduce((a, r) => (Math.abs(r.x - best) < Math.abs(a.x - best) ? r : a), rows[0]);
      this._hover({
        clientX: this.hover.clientX, clientY: this.hover.clientY, x: best, step: bestRow.step,
        xMode: this.xMode, rows,
      });
    }
  }

  global.StreamHubChart = { LineChart, PAD_TOP, PAD_BOTTOM };
})(window);
