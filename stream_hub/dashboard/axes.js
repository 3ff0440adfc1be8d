/* stream_hub dashboard — axes: tick positions and labels for values (linear
 * and log), steps, wall-clock times and durations; and how values read.
 */
(function (global) {
  "use strict";

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

  // ---- log scale -------------------------------------------------------------

  /** Ticks of a log10 axis over [lo, hi] (both > 0): powers of ten, and 2 and 5 between when few. */
  function logTicks(lo, hi, count) {
    const a = Math.floor(Math.log10(lo));
    const b = Math.ceil(Math.log10(hi));
    const decades = Math.max(1, b - a);
    const every = Math.max(1, Math.ceil(decades / Math.max(1, count)));
    const mantissas = decades <= count / 3 ? [1, 2, 5] : [1];
    const out = [];
    for (let e = a; e <= b; e += every) {
      for (const m of mantissas) {
        const v = m * 10 ** e;
        if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
      }
    }
    if (out.length < 2) return [lo, hi];
    return out;
  }

  function formatLogTick(v) {
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) return trimZeros(v.toExponential(0));
    return trimZeros(v.toPrecision(3));
  }

  // ---- time ------------------------------------------------------------------

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

  /** A tick spacing in seconds (1 s ... 1 day, then whole days) for about `count` ticks over `span` s. */
  function timeStep(span, count) {
    const raw = span / Math.max(1, count);
    for (const s of TIME_STEPS) if (s >= raw) return s;
    return Math.ceil(raw / 86400) * 86400;
  }

  /** Time ticks at multiples of `step` in local time (whole minutes/hours fall on the clock's). */
  function timeTicks(lo, hi, step) {
    const offset = new Date(lo * 1000).getTimezoneOffset() * 60;
    const shift = step >= 3600 ? -offset : 0;
    const out = [];
    const start = Math.ceil((lo + shift) / step) * step - shift;
    for (let v = start; v <= hi && out.length < 200; v += step) out.push(v);
    return out;
  }

  const pad2 = (n) => String(n).padStart(2, "0");

  /** A wall-clock label: 14:05, 14:05:30, or the date at midnight. */
  function formatClock(seconds, step) {
    const d = new Date(seconds * 1000);
    if (step >= 86400 || (d.getHours() === 0 && d.getMinutes() === 0 && step >= 3600)) {
      return `${d.getMonth() + 1}/${d.getDate()}`;
    }
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    return step < 60 ? `${hm}:${pad2(d.getSeconds())}` : hm;
  }

  /** A duration label: 45s, 3:20, 1:02:00, 2d 3h. */
  function formatDuration(seconds) {
    const sign = seconds < 0 ? "\u2212" : "";
    let s = Math.round(Math.abs(seconds));
    if (s < 60) return `${sign}${s}s`;
    const d = Math.floor(s / 86400);
    if (d >= 2) return `${sign}${d}d ${Math.floor((s % 86400) / 3600)}h`;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    return h ? `${sign}${h}:${pad2(m)}:${pad2(s)}` : `${sign}${m}:${pad2(s)}`;
  }

  /** A full wall-clock time for tooltips. */
  function formatTimestamp(seconds) {
    const d = new Date(seconds * 1000);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
      `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  global.StreamHubAxes = {
    niceStep, ticks, formatValue, formatTick, formatStep, logTicks, formatLogTick,
    timeStep, timeTicks, formatClock, formatDuration, formatTimestamp,
  };
})(window);
