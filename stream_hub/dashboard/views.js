/* stream_hub dashboard — chart views: one per metric (and one per metric of
 * the machine's own, run "_system"), each a card with its chart, legend and
 * tools, and what it draws: the entries built from the runs (a line per run,
 * per rank, or a run's mean with its min–max band; grouped by a config key,
 * a group's mean with the min–max band across its runs' curves, drawn as the
 * ranks' band is), their x values for the x mode, the finer data of a zoom.
 *
 * The app owns the data (runs and their Series); a view reads it when its
 * entries are rebuilt (a run, rank or visibility changed) and when drawn.
 */
(function (global) {
  "use strict";

  const { LineChart } = global.StreamHubChart;
  const Interact = global.StreamHubInteract;
  const Runs = global.StreamHubRuns;
  const ui = global.StreamHubPanels;
  const { nameTool } = global.StreamHubLayout;
  const SYSTEM_RUN = "_system";

  /** x values of a curve for the x mode (steps, or times from the run's clock), cached per curve. */
  function xsFor(run, mode) {
    if (mode === "step") return (curve) => curve.steps;
    const clock = run.clock;
    const origin = mode === "relative" ? run.origin() : 0;
    return (curve) => {
      const cache = curve._xs;
      if (cache && cache.mode === mode && cache.version === curve.version && cache.structure === curve.structure &&
          cache.clock === clock.version && cache.origin === origin) {
        return cache.xs;
      }
      const n = curve.steps.length;
      const xs = cache && cache.xs.length >= n && cache.xs.length < 2 * n + 64 ? cache.xs : new Float64Array(n + 64);
      clock.mapSorted(curve.steps, 0, n, xs);
      if (origin) for (let i = 0; i < n; i++) xs[i] -= origin;
      // Typed arrays are fixed-size: expose exactly n values.
      const view = xs.length === n ? xs : xs.subarray(0, n);
      curve._xs = { mode, version: curve.version, structure: curve.structure, clock: clock.version, origin, xs: view };
      return view;
    };
  }

  class ChartViews {
    /**
     * app: {state, settings, grid, detail, theme(), markChart(id), markEntries(id),
     *       toggleRun(name), toggleRuns(names), groupBy() -> a config key or "",
     *       setCompareStep(step), exportCsv(view), exportJson(view),
     *       exportPng(view), chartPrefs(id) -> the URL's settings of a new chart,
     *       viewChanged() after the user changed a chart's settings or zoom}
     */
    constructor(app) {
      this.app = app;
      this.views = new Map(); // id -> view
    }

    static idOf(runName, metric) {
      return runName === SYSTEM_RUN ? `${SYSTEM_RUN}\u0000${metric}` : metric;
    }

    ensure(runName, metric) {
      const id = ChartViews.idOf(runName, metric);
      let view = this.views.get(id);
      if (view) return view;
      const app = this.app;
      view = app.grid.addCard(id, metric, runName === SYSTEM_RUN);
      view.rankMode = null; // null: the global setting
      view.entries = [];
      view.lastDrawAt = 0;
      view.waiters = [];
      view.hoverStep = null;
      const hover = (info) => {
        view.hoverStep = info ? info.step : null;
        ui.showTooltip(info);
      };
      view.chart = new LineChart(view.canvas, { onHover: hover, onResolution: (steps) => ui.showResolution(view, steps) });
      view.controls = Interact.attach(view.chart, {
        onChange: () => app.markChart(id),
        onHover: hover,
        onZoom: (range) => {
          this.zoomed(view, range);
          app.viewChanged();
        },
        onClick: () => {
          if (view.hoverStep != null) app.setCompareStep(view.hoverStep);
        },
        extent: () => this.dataExtent(view),
      });
      view.tools.addEventListener("click", (event) => {
        const button = event.target.closest("button[data-tool]");
        if (button) this.tool(view, button.dataset.tool, button);
      });
      this.views.set(id, view);
      this.applyPrefs(view, app.chartPrefs(id));
      return view;
    }

    /**
     * A chart's own settings, from the URL: log y, how it draws ranks (null:
     * as every chart), its zoom (null: everything; its finer data is fetched
     * once the chart's entries are built, `zoomPending`).
     */
    applyPrefs(view, prefs) {
      const { logY = false, rankMode = null, zoom = null } = prefs || {};
      const app = this.app;
      if (view.chart.logY !== logY) {
        view.chart.logY = logY;
        view.tools.querySelector('[data-tool="log"]').setAttribute("aria-pressed", String(logY));
        app.markChart(view.id);
      }
      if (view.rankMode !== rankMode) {
        view.rankMode = rankMode;
        app.markEntries(view.id);
      }
      const current = view.chart.zoom;
      if (zoom ? !current || current[0] !== zoom[0] || current[1] !== zoom[1] : current) {
        view.chart.zoom = zoom ? [zoom[0], zoom[1]] : null;
        view.tools.querySelector('[data-tool="reset"]').hidden = !zoom;
        app.detail.clear(view.id);
        view.zoomPending = Boolean(zoom);
        app.markEntries(view.id);
        app.markChart(view.id);
      }
    }

    /** What the URL keeps of a chart. */
    prefs(view) {
      return { logY: view.chart.logY, rankMode: view.rankMode, zoom: view.chart.zoom };
    }

    /** The x range of the data a chart draws (as last drawn), or null. */
    dataExtent(view) {
      let x0 = Infinity;
      let x1 = -Infinity;
      for (const entry of view.entries) {
        if (!entry.visible || !entry.curves || !entry.xsOf) continue;
        for (const curve of entry.curves) {
          const n = curve.steps.length;
          if (!n) continue;
          const xs = entry.xsOf(curve);
          if (xs[0] < x0) x0 = xs[0];
          if (xs[n - 1] > x1) x1 = xs[n - 1];
        }
      }
      return x0 < x1 ? [x0, x1] : null;
    }

    clear() {
      this.views.clear();
    }

    /** A chart tool button was pressed. */
    tool(view, name, button) {
      const app = this.app;
      if (name === "log") {
        view.chart.logY = !view.chart.logY;
        button.setAttribute("aria-pressed", String(view.chart.logY));
        app.markChart(view.id);
        app.viewChanged();
      } else if (name === "ranks") {
        const band = this.rankMode(view) !== "band";
        view.rankMode = band ? "band" : "lines";
        app.markEntries(view.id);
        app.viewChanged();
      } else if (name === "reset") {
        view.controls.setZoom(null);
      } else if (name === "pin") {
        app.grid.setPinned(view, !view.pinned);
      } else if (name === "csv") {
        app.exportCsv(view);
      } else if (name === "json") {
        app.exportJson(view);
      } else if (name === "png") {
        app.exportPng(view);
      }
    }

    rankMode(view) {
      return view.rankMode || this.app.settings.rankMode;
    }

    /**
     * Rebuild what a view draws from the runs: per run with this metric, a
     * line; with ranks, a line per rank or one band entry. Also its legend
     * and which tools show.
     */
    rebuild(view, runs) {
      const app = this.app;
      const groupBy = view.system ? "" : app.groupBy();
      if (groupBy) {
        this.rebuildGroups(view, runs, groupBy);
        return;
      }
      const band = this.rankMode(view) === "band";
      const scheme = app.theme().scheme;
      const entries = [];
      const legend = [];
      let ranked = false;
      for (const run of runs) {
        if ((run.name === SYSTEM_RUN) !== view.system) continue;
        const curves = run.curves.get(view.metric);
        if (!curves || run.matched === false) continue;
        const keys = Array.from(curves.keys()).sort((a, b) => Number(a) - Number(b));
        const withRanks = keys.length > 1 || keys[0] !== "";
        ranked = ranked || withRanks;
        const label = view.system ? "this machine" : run.name;
        const ranksSaid = withRanks ? ` (${keys.length} rank${keys.length === 1 ? "" : "s"})` : "";
        legend.push({
          run: run.name, color: run.color, visible: run.visible, band: withRanks && band,
          label: `${view.system ? label : run.short || label}${ranksSaid}`, title: `${label}${ranksSaid}`,
        });
        const base = { run, visible: run.visible };
        if (!withRanks) {
          entries.push({ ...base, key: run.name, label, color: run.color, kind: "line",
            sources: [{ rankKey: "", series: curves.get("") }] });
        } else if (band) {
          entries.push({ ...base, key: `${run.name}\u0000band`, label: `${label} (mean)`, color: run.color,
            kind: "band", sources: keys.map((k) => ({ rankKey: k, series: curves.get(k) })) });
        } else {
          keys.forEach((k, i) => {
            entries.push({
              ...base, key: `${run.name}\u0000${k}`, label: k === "" ? label : `${label} · rank ${k}`,
              color: Runs.rankColour(run.colourSlot, scheme, i, keys.length), kind: "line", rank: k,
              sources: [{ rankKey: k, series: curves.get(k) }],
            });
          });
        }
      }
      view.entries = entries;
      ui.renderLegend(view, legend, (item) => app.toggleRun(item.run));
      this.rankTool(view, ranked, band);
    }

    /** The chart's ranks/band button: shown when a run has ranks. */
    rankTool(view, ranked, band) {
      const ranks = view.tools.querySelector('[data-tool="ranks"]');
      ranks.hidden = !ranked;
      ranks.setAttribute("aria-pressed", String(band));
      ranks.textContent = band ? "band" : "ranks";
      nameTool(ranks, view.metric);
      ranks.title = band
        ? "Runs with ranks: mean and min–max band (click: a line per rank)"
        : "Runs with ranks: a line per rank (click: mean and min–max band)";
    }

    /**
     * Grouped by a config key: per group of the runs (the search's) with this
     * metric, one entry over every curve of its shown runs (each rank's, for
     * a run with ranks): their mean with the min–max band across them, or a
     * line when it is one curve. The legend names each group and toggles its runs.
     */
    rebuildGroups(view, runs, key) {
      const app = this.app;
      const scheme = app.theme().scheme;
      const Sweeps = global.StreamHubSweeps;
      const withMetric = runs.filter((run) => !run.system && run.matched !== false && run.curves.has(view.metric));
      const entries = [];
      const legend = [];
      for (const [label, members] of Sweeps.groupRuns(withMetric, key)) {
        const shown = members.filter((run) => run.visible);
        const sources = [];
        for (const run of shown) {
          const curves = run.curves.get(view.metric);
          const rankKeys = Array.from(curves.keys()).sort((a, b) => Number(a) - Number(b));
          for (const rankKey of rankKeys) sources.push({ run, rankKey, series: curves.get(rankKey) });
        }
        const color = Runs.slotColour(Sweeps.groupSlot(key, label, Runs.colourSlot), scheme);
        const name = `${key}=${label}`;
        const count = `${members.length} run${members.length === 1 ? "" : "s"}`;
        legend.push({
          group: label, runs: members.map((run) => run.name), color, visible: shown.length > 0,
          band: sources.length > 1, label: `${name} (${count})`, title: `${name} (${count}: mean, min–max band)`,
        });
        entries.push({
          key: `\u0000group\u0000${label}`, label: `${name} (mean of ${shown.length})`, color,
          kind: sources.length > 1 ? "band" : "line", visible: sources.length > 0,
          run: shown[0] || members[0], sources, group: label,
        });
      }
      view.entries = entries;
      ui.renderLegend(view, legend, (item) => app.toggleRuns(item.runs));
      this.rankTool(view, false, false);
    }

    /** Draw a view now: resolve its curves (with a zoom's finer data) and x values, then draw. */
    draw(view) {
      const app = this.app;
      const mode = app.settings.xMode;
      for (const entry of view.entries) {
        entry.curves = entry.sources.map((s) => app.detail.curve(view.id, (s.run || entry.run).name, s.rankKey, s.series));
        if (mode === "step" || entry.sources.every((s) => !s.run || s.run === entry.run)) {
          entry.xsOf = xsFor(entry.run, mode);
        } else {
          // A group's curves come from several runs, each with its own clock.
          const byCurve = new Map(entry.curves.map((curve, i) => [curve, xsFor(entry.sources[i].run, mode)]));
          entry.xsOf = (curve) => byCurve.get(curve)(curve);
        }
      }
      view.chart.setEntries(view.entries);
      view.chart.draw(app.theme(), app.settings);
      view.lastDrawAt = performance.now();
      const zoomed = String(Boolean(view.chart.zoom));
      if (view.card.dataset.zoomed !== zoomed) view.card.dataset.zoomed = zoomed; // no style work when unchanged
      if (view.waiters.length && app.detail.state(view.id) !== "loading") {
        const waiters = view.waiters;
        view.waiters = [];
        for (const resolve of waiters) resolve(view.chart.info());
      }
    }

    /** After a zoom (or its reset): the reset button, and finer data for the range. */
    zoomed(view, range) {
      const app = this.app;
      view.tools.querySelector('[data-tool="reset"]').hidden = !range;
      if (!range) {
        app.detail.clear(view.id);
        app.markChart(view.id);
        return Promise.resolve();
      }
      const mode = app.settings.xMode;
      const wants = [];
      const runs = [];
      for (const entry of view.entries) {
        if (!entry.visible) continue;
        for (const source of entry.sources) {
          const run = source.run || entry.run;
          if (!source.series.exact && !runs.includes(run)) runs.push(run);
        }
      }
      for (const run of runs) {
        let [from, to] = range;
        if (mode !== "step") {
          const origin = mode === "relative" ? run.origin() : 0;
          from = run.clock.stepAt(range[0] + origin);
          to = run.clock.stepAt(range[1] + origin);
          if (!Number.isFinite(from) || !Number.isFinite(to)) continue;
          const pad = (to - from) * 0.02;
          from -= pad;
          to += pad;
        }
        wants.push({ run: run.name, from: Math.max(0, from), to: Math.max(0, to) });
      }
      const maxPoints = Math.max(100, Math.round(2 * view.chart.plotWidth()));
      const pending = app.detail.request(view, view.metric, wants, maxPoints);
      app.markChart(view.id);
      return pending.then(() => app.markChart(view.id));
    }

    /** Zoom a view to [x0, x1] (null: everything); resolves with its chart info once drawn with the finer data. */
    zoomTo(view, range) {
      return new Promise((resolve) => {
        view.waiters.push(resolve);
        view.controls.setZoom(range);
      });
    }
  }

  global.StreamHubViews = { ChartViews, SYSTEM_RUN };
})(window);
