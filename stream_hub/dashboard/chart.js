/* stream_hub dashboard — a line chart on <canvas>: x = step, one line per run.
 *
 * The chart draws only when asked (draw()); the app decides when, at most once
 * per animation frame and only for charts whose data or hover changed.
 *
 * Rasterizing, not JavaScript, is what costs on a CPU-only browser, so lines
 * are drawn in the shapes Skia fills fastest: a sparse line is stroked a few
 * segments at a time, and a line with more points than the plot has pixels
 * becomes one filled bar per pixel column (see _drawDense).
 */
(function (global) {
  "use strict";

  const PAD_TOP = 10;
  const PAD_RIGHT = 14;
  const PAD_BOTTOM = 24;
  const TICK_GAP = 8;
  const LINE_WIDTH = 1.6;
  // Skia turns one long self-crossing stroke into one huge polygon: a noisy
  // 400-point line costs ~7x more to rasterize in one piece than in pieces of
  // 8 segments (round caps hide the joints)...
  const SEGMENTS_PER_STROKE = 8;
  // ...and a one-pixel line takes its hairline path, ~7x cheaper again. Lines
  // with a point every few pixels or closer look the same at either width.
  const HAIRLINE_WIDTH = 1;
  const HAIRLINE_DENSITY = 1 / 3; // points per pixel from which lines are hairlines

  /** A "nice" tick spacing (1, 2 or 5 times a power of ten) for about `count` ticks over `span`. */
  function niceStep(span, count) {
    if (!(span > 0) || !(count > 0)) return 1;
    const raw = span / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / magnitude;
    const nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return nice * magnitude;
  }

  function ticks(lo, hi, step) {
    const out = [];
    const start = Math.ceil(lo / step - 1e-9) * step;
    for (let i = 0; i < 200; i++) {
      const v = start + i * step;
      if (v > hi + step * 1e-9) break;
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  function trimZeros(text) {
    if (text.includes("e")) {
      const [mantissa, exponent] = text.split("e");
      return `${trimZeros(mantissa)}e${exponent.replace("+", "")}`;
    }
    return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
  }

  /** A value for people: 5 significant digits, exponent for tiny or huge ones, NaN/inf spelled out. */
  function formatValue(v) {
    if (typeof v !== "number" || Number.isNaN(v)) return "NaN";
    if (v === Infinity) return "+\u221e";
    if (v === -Infinity) return "\u2212\u221e";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e6 || a < 1e-3) return trimZeros(v.toExponential(3));
    if (Number.isInteger(v)) return String(v);
    return trimZeros(v.toPrecision(5));
  }

  /** A y tick label whose precision follows the tick spacing. */
  function formatTick(v, step) {
    if (v === 0) return "0";
    const a = Math.max(Math.abs(v), step);
    if (a >= 1e6 || step < 1e-4) {
      const digits = Math.max(0, Math.min(6, Math.floor(Math.log10(a)) - Math.floor(Math.log10(step))));
      return trimZeros(v.toExponential(digits));
    }
    const decimals = Math.max(0, Math.min(10, Math.ceil(-Math.log10(step) - 1e-9)));
    return v.toFixed(decimals);
  }

  /** An x (step) tick label: 750, 12.5k, 1.2M. */
  function formatStep(v, step) {
    const a = Math.abs(v);
    const [unit, suffix] = a >= 1e6 ? [1e6, "M"] : a >= 1e4 ? [1e3, "k"] : [1, ""];
    const decimals = step ? Math.max(0, Math.min(3, Math.ceil(-Math.log10(step / unit) - 1e-9))) : 0;
    return trimZeros((v / unit).toFixed(decimals)) + suffix;
  }

  class LineChart {
    /**
     * @param {HTMLCanvasElement} canvas
     * @param {{onHover: function(?Object), onChange: function()}} hooks
     *   onHover gets {clientX, clientY, step, rows: [{label, color, step, value}]}
     *   or null; onChange asks the app to schedule a redraw.
     */
    constructor(canvas, hooks = {}) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.hooks = hooks;
      this.entries = []; // [{key, label, color, series, visible}]
      this.cssWidth = 0;
      this.cssHeight = 0;
      this.dpr = 1;
      this.hover = null; // {x, y, clientX, clientY} in CSS px
      this.draws = 0;
      this.lastDrawMs = 0;
      this.xRange = null;
      this.yRange = null;
      this.pointsDrawn = 0;
      canvas.addEventListener("pointermove", (e) => {
        this.hover = { x: e.offsetX, y: e.offsetY, clientX: e.clientX, clientY: e.clientY };
        this._changed();
      });
      canvas.addEventListener("pointerleave", () => {
        this.hover = null;
        this._hover(null);
        this._changed();
      });
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

    info() {
      return {
        draws: this.draws,
        lastDrawMs: this.lastDrawMs,
        xRange: this.xRange,
        yRange: this.yRange,
        pointsDrawn: this.pointsDrawn,
        width: this.cssWidth,
        height: this.cssHeight,
      };
    }

    /** Draw everything. `theme` holds the colours and font read from CSS. */
    draw(theme) {
      const started = performance.now();
      const { ctx, cssWidth: W, cssHeight: H } = this;
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      ctx.clearRect(0, 0, W, H);
      ctx.font = `11px ${theme.font}`;
      ctx.textBaseline = "middle";
      this.pointsDrawn = 0;

      const ext = this._extent();
      if (!ext) {
        this.xRange = this.yRange = null;
        ctx.fillStyle = theme.muted;
        ctx.textAlign = "center";
        ctx.fillText("no visible data", W / 2, H / 2);
        if (this.hover) this._hover(null);
        this._finish(started);
        return;
      }
      this.xRange = [ext.x0, ext.x1];
      this.yRange = [ext.y0, ext.y1];

      const plotH = Math.max(10, H - PAD_TOP - PAD_BOTTOM);
      const yStep = niceStep(ext.y1 - ext.y0, Math.max(2, Math.floor(plotH / 40)));
      const yTicks = ticks(ext.y0, ext.y1, yStep);
      const yLabels = yTicks.map((v) => formatTick(v, yStep));
      const labelWidth = Math.max(0, ...yLabels.map((label) => ctx.measureText(label).width));
      const left = Math.ceil(labelWidth) + TICK_GAP + 4;
      const plotW = Math.max(10, W - left - PAD_RIGHT);
      const box = { left, right: left + plotW, top: PAD_TOP, bottom: PAD_TOP + plotH, width: plotW };
      const xScale = plotW / (ext.x1 - ext.x0);
      const yScale = plotH / (ext.y1 - ext.y0);
      const X = (step) => left + (step - ext.x0) * xScale;
      const Y = (v) => box.top + (ext.y1 - v) * yScale;
      const xAt = (px) => ext.x0 + (px - left) / xScale;

      this._drawGrid(ctx, theme, box, ext, X, Y, yTicks, yLabels);

      ctx.save();
      ctx.beginPath();
      ctx.rect(left, box.top - 2, plotW + 1, plotH + 4);
      ctx.clip();
      ctx.lineWidth = LINE_WIDTH;
      ctx.lineJoin = "round";
      ctx.lineCap = "round";
      for (const entry of this.entries) {
        if (!entry.visible || entry.series.length() === 0) continue;
        ctx.strokeStyle = entry.color;
        ctx.fillStyle = entry.color;
        this.pointsDrawn += this._drawSeries(ctx, entry.series, X, Y, plotW);
      }
      ctx.restore();

      if (this.hover) this._drawHover(ctx, theme, box, X, Y, xAt);
      this._finish(started);
    }

    // -- internals ------------------------------------------------------------

    _changed() {
      if (this.hooks.onChange) this.hooks.onChange();
    }

    _hover(info) {
      if (this.hooks.onHover) this.hooks.onHover(info);
    }

    _finish(started) {
      this.draws += 1;
      this.lastDrawMs = performance.now() - started;
    }

    /** Step and value ranges of the visible series (values padded), or null. */
    _extent() {
      let x0 = Infinity;
      let x1 = -Infinity;
      let y0 = Infinity;
      let y1 = -Infinity;
      let any = false;
      for (const entry of this.entries) {
        if (!entry.visible || entry.series.length() === 0) continue;
        any = true;
        x0 = Math.min(x0, entry.series.firstStep());
        x1 = Math.max(x1, entry.series.lastStep());
        const range = entry.series.valueRange();
        if (range) {
          y0 = Math.min(y0, range[0]);
          y1 = Math.max(y1, range[1]);
        }
      }
      if (!any) return null;
      if (x0 === x1) {
        x0 -= 1;
        x1 += 1;
      }
      if (!(y0 <= y1)) {
        y0 = 0;
        y1 = 1;
      }
      const span = y1 - y0;
      const pad = span > 0 ? span * 0.06 : Math.abs(y0) * 0.1 || 1;
      return { x0, x1, y0: y0 - pad, y1: y1 + pad };
    }

    _drawGrid(ctx, theme, box, ext, X, Y, yTicks, yLabels) {
      ctx.lineWidth = 1;
      ctx.strokeStyle = theme.grid;
      ctx.fillStyle = theme.muted;
      ctx.textAlign = "right";
      ctx.beginPath();
      yTicks.forEach((v, i) => {
        const y = Math.round(Y(v)) + 0.5;
        ctx.moveTo(box.left, y);
        ctx.lineTo(box.right, y);
        ctx.fillText(yLabels[i], box.left - TICK_GAP, y);
      });
      const xStep = Math.max(1, niceStep(ext.x1 - ext.x0, Math.max(2, Math.floor(box.width / 90))));
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const step of ticks(ext.x0, ext.x1, xStep)) {
        const x = Math.round(X(step)) + 0.5;
        ctx.moveTo(x, box.top);
        ctx.lineTo(x, box.bottom);
        ctx.fillText(formatStep(step, xStep), x, box.bottom + 6);
      }
      ctx.stroke();
      ctx.strokeStyle = theme.axis;
      ctx.beginPath();
      ctx.moveTo(box.left + 0.5, box.top);
      ctx.lineTo(box.left + 0.5, box.bottom + 0.5);
      ctx.lineTo(box.right, box.bottom + 0.5);
      ctx.stroke();
    }

    /** Draw one series; returns how many shapes it sent to the canvas. */
    _drawSeries(ctx, series, X, Y, plotW) {
      const n = series.length();
      let finite = 0;
      for (let i = 0; i < n && finite < 2; i++) if (Number.isFinite(series.values[i])) finite += 1;
      if (finite < 2) return this._drawDots(ctx, series, X, Y);
      if (n <= plotW) return this._drawSparse(ctx, series, X, Y, n > plotW * HAIRLINE_DENSITY);
      return this._drawDense(ctx, series, X, Y);
    }

    /** A lone point has no line to show it: a dot. */
    _drawDots(ctx, series, X, Y) {
      let sent = 0;
      ctx.beginPath();
      series.steps.forEach((step, i) => {
        const v = series.values[i];
        if (!Number.isFinite(v)) return;
        ctx.moveTo(X(step) + 2.5, Y(v));
        ctx.arc(X(step), Y(v), 2.5, 0, 2 * Math.PI);
        sent += 1;
      });
      ctx.fill();
      return sent;
    }

    /** Fewer points than pixels: a polyline (NaN/inf break it), thick ones stroked in short pieces. */
    _drawSparse(ctx, series, X, Y, hairline) {
      const { steps, values } = series;
      const piece = hairline ? Infinity : SEGMENTS_PER_STROKE;
      let sent = 0;
      let penDown = false;
      let inPiece = 0;
      ctx.lineWidth = hairline ? HAIRLINE_WIDTH : LINE_WIDTH;
      ctx.beginPath();
      for (let i = 0; i < steps.length; i++) {
        const v = values[i];
        if (!Number.isFinite(v)) {
          penDown = false;
          continue;
        }
        const x = X(steps[i]);
        const y = Y(v);
        if (!penDown) {
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
        penDown = true;
        sent += 1;
      }
      ctx.stroke();
      ctx.lineWidth = LINE_WIDTH;
      return sent;
    }

    /**
     * More points than pixels: per pixel column one bar from the column's
     * lowest to highest value, stretched to reach the previous column's last
     * value. Those are the pixels the polyline would cover, but fillRect is
     * many times cheaper to rasterize than a long zig-zag stroke (or one path
     * of many rects). Columns more than a pixel apart are joined by a line.
     */
    _drawDense(ctx, series, X, Y) {
      const { steps, values } = series;
      const half = LINE_WIDTH / 2;
      let bridges = null;
      let sent = 0;
      let col = NaN;
      let lo = 0;
      let hi = 0;
      let first = 0;
      let last = 0;
      let open = false;
      let prevCol = NaN;
      let prevY = NaN;
      const flush = () => {
        if (!open) return;
        let top = Y(hi);
        let bottom = Y(lo);
        if (col - prevCol === 1) {
          if (prevY < top) top = prevY;
          if (prevY > bottom) bottom = prevY;
        } else if (!Number.isNaN(prevY)) {
          if (!bridges) bridges = new Path2D();
          bridges.moveTo(prevCol + 0.5, prevY);
          bridges.lineTo(col + 0.5, Y(first));
        }
        ctx.fillRect(col, top - half, 1, bottom - top + LINE_WIDTH);
        sent += 1;
        prevCol = col;
        prevY = Y(last);
        open = false;
      };
      for (let i = 0; i < steps.length; i++) {
        const v = values[i];
        if (!Number.isFinite(v)) {
          flush();
          prevY = NaN;
          continue;
        }
        const c = Math.floor(X(steps[i]));
        if (c !== col) {
          flush();
          col = c;
          first = lo = hi = v;
          open = true;
        } else {
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        last = v;
      }
      flush();
      if (bridges) ctx.stroke(bridges);
      return sent;
    }

    /** Crosshair at the visible point nearest the pointer, dots on each line, tooltip rows. */
    _drawHover(ctx, theme, box, X, Y, xAt) {
      const { x: px } = this.hover;
      if (px < box.left - 4 || px > box.right + 4) {
        this._hover(null);
        return;
      }
      const target = xAt(px);
      const visible = this.entries.filter((e) => e.visible && e.series.length() > 0);
      let best = null;
      let bestDistance = Infinity;
      for (const entry of visible) {
        const step = entry.series.steps[entry.series.nearest(target)];
        if (Math.abs(step - target) < bestDistance) {
          bestDistance = Math.abs(step - target);
          best = step;
        }
      }
      if (best === null) {
        this._hover(null);
        return;
      }
      const x = Math.round(X(best)) + 0.5;
      ctx.strokeStyle = theme.crosshair;
      ctx.lineWidth = 1;
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(x, box.top);
      ctx.lineTo(x, box.bottom);
      ctx.stroke();
      ctx.setLineDash([]);
      const rows = [];
      for (const entry of visible) {
        const k = entry.series.nearest(best);
        const step = entry.series.steps[k];
        const value = entry.series.values[k];
        rows.push({ label: entry.label, color: entry.color, step, value });
        if (!Number.isFinite(value)) continue;
        ctx.fillStyle = entry.color;
        ctx.strokeStyle = theme.panel;
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(X(step), Y(value), 3.5, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
      this._hover({ clientX: this.hover.clientX, clientY: this.hover.clientY, step: best, rows });
    }
  }

  global.StreamHubChart = { LineChart, formatValue, formatStep, formatTick, niceStep };
})(window);
