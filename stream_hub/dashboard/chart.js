/* stream_hub dashboard — a line chart on <canvas>: x = step, one line per run.
 *
 * The chart draws only when asked (draw()); the app decides when, at most once
 * per animation frame and only for charts whose data or hover changed. A
 * series with more points than the plot has pixels is drawn per pixel column
 * (first, min, max, last of the column), which looks the same as drawing
 * every point and costs O(points) arithmetic but O(pixels) canvas calls.
 */
(function (global) {
  "use strict";

  var PAD_TOP = 10, PAD_RIGHT = 14, PAD_BOTTOM = 24, TICK_GAP = 8, LINE_WIDTH = 1.6;
  var SEGMENTS_PER_STROKE = 8;

  /** A "nice" tick spacing (1, 2 or 5 times a power of ten) for about `count` ticks over `span`. */
  function niceStep(span, count) {
    if (!(span > 0) || !(count > 0)) return 1;
    var raw = span / count;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / mag;
    var nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return nice * mag;
  }

  function ticks(lo, hi, step) {
    var out = [];
    var start = Math.ceil(lo / step - 1e-9) * step;
    for (var v = start, i = 0; v <= hi + step * 1e-9 && i < 200; i++, v = start + i * step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  function trimZeros(text) {
    if (text.indexOf("e") >= 0) {
      var parts = text.split("e");
      return trimZeros(parts[0]) + "e" + parts[1].replace("+", "");
    }
    return text.indexOf(".") >= 0 ? text.replace(/\.?0+$/, "") : text;
  }

  /** A value for people: 4-5 significant digits, exponent for tiny or huge ones, NaN/inf spelled out. */
  function formatValue(v) {
    if (typeof v !== "number" || v !== v) return "NaN";
    if (v === Infinity) return "+\u221e";
    if (v === -Infinity) return "\u2212\u221e";
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e6 || a < 1e-3) return trimZeros(v.toExponential(3));
    if (Number.isInteger(v)) return String(v);
    return trimZeros(v.toPrecision(5));
  }

  /** A y tick label whose precision follows the tick spacing. */
  function formatTick(v, step) {
    if (v === 0) return "0";
    var a = Math.max(Math.abs(v), step);
    if (a >= 1e6 || step < 1e-4) {
      var digits = Math.max(0, Math.min(6, Math.floor(Math.log10(a)) - Math.floor(Math.log10(step))));
      return trimZeros(v.toExponential(digits));
    }
    var decimals = Math.max(0, Math.min(10, Math.ceil(-Math.log10(step) - 1e-9)));
    return v.toFixed(decimals);
  }

  /** An x (step) tick label: 750, 12.5k, 1.2M. */
  function formatStep(v, step) {
    var a = Math.abs(v), unit = 1, suffix = "";
    if (a >= 1e6) { unit = 1e6; suffix = "M"; } else if (a >= 1e4) { unit = 1e3; suffix = "k"; }
    var decimals = step ? Math.max(0, Math.min(3, Math.ceil(-Math.log10(step / unit) - 1e-9))) : 0;
    return trimZeros((v / unit).toFixed(decimals)) + suffix;
  }

  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onHover: function(?Object), onChange: function()}} hooks
   *   onHover gets {clientX, clientY, step, rows: [{label, color, step, value}]} or null;
   *   onChange asks the app to schedule a redraw.
   */
  function LineChart(canvas, hooks) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.hooks = hooks || {};
    this.entries = [];        // [{key, label, color, series, visible}]
    this.cssWidth = 0;
    this.cssHeight = 0;
    this.dpr = 1;
    this.hover = null;        // {x, y, clientX, clientY} in CSS px
    this.draws = 0;
    this.lastDrawMs = 0;
    this.xRange = null;
    this.yRange = null;
    this.pointsDrawn = 0;
    var self = this;
    canvas.addEventListener("pointermove", function (e) {
      self.hover = { x: e.offsetX, y: e.offsetY, clientX: e.clientX, clientY: e.clientY };
      if (self.hooks.onChange) self.hooks.onChange();
    });
    canvas.addEventListener("pointerleave", function () {
      self.hover = null;
      if (self.hooks.onHover) self.hooks.onHover(null);
      if (self.hooks.onChange) self.hooks.onChange();
    });
  }

  LineChart.prototype.setEntries = function (entries) { this.entries = entries; };

  /** Match the backing store to the element's size; true when it changed. */
  LineChart.prototype.resize = function (cssWidth, cssHeight, dpr) {
    cssWidth = Math.max(1, Math.round(cssWidth));
    cssHeight = Math.max(1, Math.round(cssHeight));
    if (cssWidth === this.cssWidth && cssHeight === this.cssHeight && dpr === this.dpr) return false;
    this.cssWidth = cssWidth;
    this.cssHeight = cssHeight;
    this.dpr = dpr;
    this.canvas.width = Math.round(cssWidth * dpr);
    this.canvas.height = Math.round(cssHeight * dpr);
    return true;
  };

  LineChart.prototype._extent = function () {
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, any = false;
    for (var i = 0; i < this.entries.length; i++) {
      var e = this.entries[i];
      if (!e.visible || e.series.length() === 0) continue;
      any = true;
      x0 = Math.min(x0, e.series.firstStep());
      x1 = Math.max(x1, e.series.lastStep());
      var r = e.series.valueRange();
      if (r) { y0 = Math.min(y0, r[0]); y1 = Math.max(y1, r[1]); }
    }
    if (!any) return null;
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (!(y0 <= y1)) { y0 = 0; y1 = 1; }
    var span = y1 - y0;
    var pad = span > 0 ? span * 0.06 : (Math.abs(y0) * 0.1 || 1);
    return { x0: x0, x1: x1, y0: y0 - pad, y1: y1 + pad };
  };

  /** Draw everything. `theme` holds the colours and font read from CSS. */
  LineChart.prototype.draw = function (theme) {
    var t0 = performance.now();
    var ctx = this.ctx, W = this.cssWidth, H = this.cssHeight;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.font = "11px " + theme.font;
    ctx.textBaseline = "middle";

    var ext = this._extent();
    this.pointsDrawn = 0;
    if (!ext) {
      this.xRange = this.yRange = null;
      ctx.fillStyle = theme.muted;
      ctx.textAlign = "center";
      ctx.fillText("no visible data", W / 2, H / 2);
      this._finish(t0);
      if (this.hover && this.hooks.onHover) this.hooks.onHover(null);
      return;
    }
    this.xRange = [ext.x0, ext.x1];
    this.yRange = [ext.y0, ext.y1];

    var plotH = Math.max(10, H - PAD_TOP - PAD_BOTTOM);
    var yStep = niceStep(ext.y1 - ext.y0, Math.max(2, Math.floor(plotH / 42)));
    var yTicks = ticks(ext.y0, ext.y1, yStep);
    var yLabels = yTicks.map(function (v) { return formatTick(v, yStep); });
    var labelW = 0;
    for (var i = 0; i < yLabels.length; i++) labelW = Math.max(labelW, ctx.measureText(yLabels[i]).width);
    var left = Math.ceil(labelW) + TICK_GAP + 4;
    var plotW = Math.max(10, W - left - PAD_RIGHT);
    var top = PAD_TOP, bottom = top + plotH, right = left + plotW;

    var xs = plotW / (ext.x1 - ext.x0), ys = plotH / (ext.y1 - ext.y0);
    var x0 = ext.x0, y1 = ext.y1;
    function X(step) { return left + (step - x0) * xs; }
    function Y(v) { return top + (y1 - v) * ys; }

    // Grid and tick labels.
    ctx.lineWidth = 1;
    ctx.strokeStyle = theme.grid;
    ctx.fillStyle = theme.muted;
    ctx.textAlign = "right";
    ctx.beginPath();
    for (i = 0; i < yTicks.length; i++) {
      var yy = Math.round(Y(yTicks[i])) + 0.5;
      ctx.moveTo(left, yy);
      ctx.lineTo(right, yy);
      ctx.fillText(yLabels[i], left - TICK_GAP, yy);
    }
    var xStep = Math.max(1, niceStep(ext.x1 - ext.x0, Math.max(2, Math.floor(plotW / 90))));
    var xTicks = ticks(ext.x0, ext.x1, xStep);
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (i = 0; i < xTicks.length; i++) {
      var xx = Math.round(X(xTicks[i])) + 0.5;
      ctx.moveTo(xx, top);
      ctx.lineTo(xx, bottom);
      ctx.fillText(formatStep(xTicks[i], xStep), xx, bottom + 6);
    }
    ctx.stroke();
    ctx.strokeStyle = theme.axis;
    ctx.beginPath();
    ctx.moveTo(left + 0.5, top);
    ctx.lineTo(left + 0.5, bottom + 0.5);
    ctx.lineTo(right, bottom + 0.5);
    ctx.stroke();

    // The lines, clipped to the plot.
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 2, plotW + 1, plotH + 4);
    ctx.clip();
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    for (i = 0; i < this.entries.length; i++) {
      var e = this.entries[i];
      if (!e.visible || e.series.length() === 0) continue;
      ctx.strokeStyle = e.color;
      ctx.fillStyle = e.color;
      this.pointsDrawn += this._drawLine(ctx, e.series, X, Y, plotW);
    }
    ctx.restore();

    if (this.hover) this._drawHover(ctx, theme, X, Y, left, right, top, bottom, x0, xs);
    this._finish(t0);
  };

  LineChart.prototype._finish = function (t0) {
    this.draws++;
    this.lastDrawMs = performance.now() - t0;
  };

  /** Stroke one series; returns how many vertices were sent to the canvas. */
  LineChart.prototype._drawLine = function (ctx, series, X, Y, plotW) {
    var steps = series.steps, values = series.values, n = steps.length, sent = 0;
    var i, v, penDown = false;
    ctx.beginPath();
    if (n === 1 || (n < 64 && countFinite(values) === 1)) {
      for (i = 0; i < n; i++) {
        if (isFinite(values[i])) { ctx.arc(X(steps[i]), Y(values[i]), 2.5, 0, 2 * Math.PI); sent++; }
      }
      ctx.fill();
      return sent;
    }
    if (n <= plotW) {
      // Stroked a few segments at a time: Skia turns one long self-crossing
      // stroke into one huge polygon, and a noisy 400-point line then costs
      // ~10x more to rasterize than the same line in short pieces (round caps
      // hide the joints).
      var inPiece = 0;
      for (i = 0; i < n; i++) {
        v = values[i];
        if (!isFinite(v)) { penDown = false; continue; }
        var x = X(steps[i]), y = Y(v);
        if (!penDown) {
          ctx.moveTo(x, y);
        } else {
          ctx.lineTo(x, y);
          if (++inPiece === SEGMENTS_PER_STROKE) {
            ctx.stroke();
            ctx.beginPath();
            ctx.moveTo(x, y);
            inPiece = 0;
          }
        }
        penDown = true;
        sent++;
      }
      ctx.stroke();
      return sent;
    }
    // Dense (more points than pixels): per pixel column, fill one bar from
    // the column's lowest to highest value, stretched to reach the previous
    // column's last value. Those are the pixels the polyline would cover, but
    // fillRect is many times cheaper to rasterize than stroking a long
    // zig-zag (or filling one path of many rects). Columns more than a pixel
    // apart are joined with a stroked line.
    var half = LINE_WIDTH / 2;
    var bridges = null;
    var col = NaN, lo = 0, hi = 0, last = 0, first = 0, has = false;
    var prevCol = NaN, prevY = NaN;
    function flush() {
      if (!has) return;
      var top = Y(hi), bottom = Y(lo);
      if (col - prevCol === 1) {
        if (prevY < top) top = prevY;
        if (prevY > bottom) bottom = prevY;
      } else if (prevY === prevY) {
        if (!bridges) bridges = new Path2D();
        bridges.moveTo(prevCol + 0.5, prevY);
        bridges.lineTo(col + 0.5, Y(first));
      }
      ctx.fillRect(col, top - half, 1, bottom - top + LINE_WIDTH);
      sent += 1;
      prevCol = col;
      prevY = Y(last);
      has = false;
    }
    for (i = 0; i < n; i++) {
      v = values[i];
      if (!isFinite(v)) { flush(); prevY = NaN; continue; }
      var c = Math.floor(X(steps[i]));
      if (c !== col) { flush(); col = c; first = lo = hi = v; has = true; }
      else { if (v < lo) lo = v; if (v > hi) hi = v; }
      last = v;
    }
    flush();
    if (bridges) ctx.stroke(bridges);
    return sent;
  };

  function countFinite(values) {
    var k = 0;
    for (var i = 0; i < values.length; i++) if (isFinite(values[i])) k++;
    return k;
  }

  LineChart.prototype._drawHover = function (ctx, theme, X, Y, left, right, top, bottom, x0, xs) {
    var h = this.hover;
    if (h.x < left - 4 || h.x > right + 4) {
      if (this.hooks.onHover) this.hooks.onHover(null);
      return;
    }
    var target = x0 + (h.x - left) / xs;
    // Snap to the closest point of any visible series.
    var best = null, bestDist = Infinity, i, e, k;
    for (i = 0; i < this.entries.length; i++) {
      e = this.entries[i];
      if (!e.visible) continue;
      k = e.series.nearest(target);
      if (k < 0) continue;
      var d = Math.abs(e.series.steps[k] - target);
      if (d < bestDist) { bestDist = d; best = e.series.steps[k]; }
    }
    if (best === null) return;
    var cx = Math.round(X(best)) + 0.5;
    ctx.strokeStyle = theme.crosshair;
    ctx.lineWidth = 1;
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(cx, top);
    ctx.lineTo(cx, bottom);
    ctx.stroke();
    ctx.setLineDash([]);
    var rows = [];
    for (i = 0; i < this.entries.length; i++) {
      e = this.entries[i];
      if (!e.visible) continue;
      k = e.series.nearest(best);
      if (k < 0) continue;
      var s = e.series.steps[k], v = e.series.values[k];
      rows.push({ label: e.label, color: e.color, step: s, value: v });
      if (isFinite(v)) {
        ctx.fillStyle = e.color;
        ctx.strokeStyle = theme.panel;
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(X(s), Y(v), 3.5, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
    }
    if (this.hooks.onHover) {
      this.hooks.onHover({ clientX: h.clientX, clientY: h.clientY, step: best, rows: rows });
    }
  };

  LineChart.prototype.info = function () {
    return {
      draws: this.draws,
      lastDrawMs: this.lastDrawMs,
      xRange: this.xRange,
      yRange: this.yRange,
      pointsDrawn: this.pointsDrawn,
      width: this.cssWidth,
      height: this.cssHeight,
    };
  };

  global.StreamHubChart = {
    LineChart: LineChart,
    formatValue: formatValue,
    formatStep: formatStep,
    formatTick: formatTick,
    niceStep: niceStep,
  };
})(window);
