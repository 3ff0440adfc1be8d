/* stream_hub dashboard — the settings every chart follows (smoothing, what x
 * is, how a run's ranks are drawn) and the runs hidden, remembered in this
 * browser; and the toolbar controls that change them.
 */
(function (global) {
  "use strict";

  const SETTINGS_KEY = "stream_hub:settings";
  const HIDDEN_KEY = "stream_hub:hidden-runs";
  const X_MODES = ["step", "wall", "relative"];
  const RANK_MODES = ["lines", "band"];

  class Settings {
    constructor() {
      this.smoothing = 0; // EMA weight, 0 = raw
      this.xMode = "step"; // step, wall (time) or relative (time since the run's first step)
      this.rankMode = "lines"; // a line per rank, or a band
      this.hiddenRuns = new Set();
      try {
        const saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
        if (typeof saved.smoothing === "number" && saved.smoothing >= 0 && saved.smoothing < 1) {
          this.smoothing = saved.smoothing;
        }
        if (X_MODES.includes(saved.xMode)) this.xMode = saved.xMode;
        if (RANK_MODES.includes(saved.rankMode)) this.rankMode = saved.rankMode;
        for (const name of JSON.parse(localStorage.getItem(HIDDEN_KEY) || "[]")) this.hiddenRuns.add(name);
      } catch (_) {
        // No storage: defaults.
      }
    }

    save() {
      try {
        const { smoothing, xMode, rankMode } = this;
        localStorage.setItem(SETTINGS_KEY, JSON.stringify({ smoothing, xMode, rankMode }));
        localStorage.setItem(HIDDEN_KEY, JSON.stringify(Array.from(this.hiddenRuns)));
      } catch (_) {
        // Not remembered.
      }
    }

    /** Wire the toolbar. on: {smoothing(), xMode(mode), rankMode()} after each change. */
    bind(on) {
      const $ = (id) => document.getElementById(id);
      const smoothing = $("smoothing");
      const output = $("smoothing-value");
      const show = () => {
        output.textContent = this.smoothing > 0 ? this.smoothing.toFixed(2) : "off";
        smoothing.setAttribute("aria-valuetext", output.textContent);
      };
      smoothing.value = String(this.smoothing);
      show();
      smoothing.addEventListener("input", () => {
        this.smoothing = Math.max(0, Math.min(0.99, Number(smoothing.value) || 0));
        show();
        this.save();
        on.smoothing();
      });
      const xMode = $("x-mode");
      xMode.value = this.xMode;
      xMode.addEventListener("change", () => on.xMode(xMode.value));
      const rankMode = $("rank-mode");
      rankMode.value = this.rankMode;
      rankMode.addEventListener("change", () => {
        this.rankMode = rankMode.value === "band" ? "band" : "lines";
        this.save();
        on.rankMode();
      });
    }

    /** Change what x is; false when `mode` is not one or already is. */
    setXMode(mode) {
      if (!X_MODES.includes(mode) || mode === this.xMode) return false;
      this.xMode = mode;
      document.getElementById("x-mode").value = mode;
      this.save();
      return true;
    }
  }

  global.StreamHubSettings = { Settings };
})(window);
