/* stream_hub dashboard — the settings every chart follows (smoothing, what x
 * is, how a run's ranks are drawn) and the toolbar controls that change them.
 * They are part of the view, kept in the URL (urlstate.js); this browser
 * remembers only the user's default smoothing, for a page opened without a
 * view in its URL.
 */
(function (global) {
  "use strict";

  const DEFAULTS_KEY = "stream_hub:settings";
  const OLD_HIDDEN_KEY = "stream_hub:hidden-runs"; // hidden runs are in the URL now
  const X_MODES = ["step", "wall", "relative"];
  const RANK_MODES = ["lines", "band"];
  const $ = (id) => document.getElementById(id);

  class Settings {
    constructor() {
      this.smoothing = 0; // EMA weight, 0 = raw
      this.xMode = "step"; // step, wall (time) or relative (time since the run's first step)
      this.rankMode = "lines"; // a line per rank, or a band
      this.defaultSmoothing = 0; // the user's own, for a page without a view in its URL
      try {
        const saved = JSON.parse(localStorage.getItem(DEFAULTS_KEY) || "{}");
        if (typeof saved.smoothing === "number" && saved.smoothing >= 0 && saved.smoothing < 1) {
          this.defaultSmoothing = saved.smoothing;
        }
        localStorage.removeItem(OLD_HIDDEN_KEY);
      } catch (_) {
        // No storage: defaults.
      }
    }

    saveDefaults() {
      try {
        localStorage.setItem(DEFAULTS_KEY, JSON.stringify({ smoothing: this.defaultSmoothing }));
      } catch (_) {
        // Not remembered.
      }
    }

    /** Wire the toolbar. on: {smoothing(), xMode(mode), rankMode()} after each change by the user. */
    bind(on) {
      const smoothing = $("smoothing");
      smoothing.addEventListener("input", () => {
        this.setSmoothing(Number(smoothing.value) || 0);
        this.defaultSmoothing = this.smoothing;
        this.saveDefaults();
        on.smoothing();
      });
      const xMode = $("x-mode");
      xMode.addEventListener("change", () => on.xMode(xMode.value));
      const rankMode = $("rank-mode");
      rankMode.addEventListener("change", () => {
        this.setRankMode(rankMode.value);
        on.rankMode();
      });
      this.setSmoothing(this.smoothing, true);
      xMode.value = this.xMode;
      rankMode.value = this.rankMode;
    }

    /** Set the smoothing (and its control); false when it already was. */
    setSmoothing(value, force = false) {
      const s = Math.max(0, Math.min(0.99, Number(value) || 0));
      if (s === this.smoothing && !force) return false;
      this.smoothing = s;
      const control = $("smoothing");
      const output = $("smoothing-value");
      if (Number(control.value) !== s) control.value = String(s);
      output.textContent = s > 0 ? s.toFixed(2) : "off";
      control.setAttribute("aria-valuetext", output.textContent);
      return true;
    }

    /** Change what x is; false when `mode` is not one or already is. */
    setXMode(mode) {
      if (!X_MODES.includes(mode) || mode === this.xMode) return false;
      this.xMode = mode;
      $("x-mode").value = mode;
      return true;
    }

    /** How every chart draws ranks; false when `mode` is not one or already is. */
    setRankMode(mode) {
      const next = RANK_MODES.includes(mode) ? mode : "lines";
      $("rank-mode").value = next;
      if (next === this.rankMode) return false;
      this.rankMode = next;
      return true;
    }
  }

  global.StreamHubSettings = { Settings };
})(window);
