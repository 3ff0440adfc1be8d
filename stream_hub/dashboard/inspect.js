/* stream_hub dashboard — the page described as plain data:
 * window.streamHub.debug() (used by the browser tests and the benchmark;
 * handy in the console).
 */
(function (global) {
  "use strict";

  function describeSeries(s) {
    return {
      points: s.length(), minStep: s.firstStep(), maxStep: s.lastStep(),
      lastValue: s.length() ? s.values[s.length() - 1] : null,
      floor: s.floor, rewrites: s.rewrites, thinnings: s.thinnings, exact: s.exact,
    };
  }

  /** app: {state, settings, views, grid, detail, logs, rate, sse, ws, systemRun} */
  function describe(app) {
    const { state, views, detail } = app;
    const series = {};
    const latest = {};
    for (const run of state.runs.values()) {
      series[run.name] = {};
      for (const [metric, curves] of run.curves) {
        const main = curves.get("") || curves.values().next().value;
        const item = describeSeries(main);
        if (run.ranks.size) {
          item.ranks = {};
          for (const [k, s] of curves) item.ranks[k] = describeSeries(s);
        }
        series[run.name][metric] = item;
      }
      latest[run.name] = {};
      for (const [metric, item] of run.latest) latest[run.name][metric] = { value: item.value, step: item.step };
    }
    const charts = {};
    for (const view of views.views.values()) {
      charts[view.system ? `${app.systemRun}/${view.metric}` : view.metric] = {
        ...view.chart.info(), rankMode: views.rankMode(view), pinned: view.pinned,
        onScreen: view.onScreen, hidden: view.card.hidden, detail: detail.state(view.id),
        detailSource: (detail.byView.get(view.id) || {}).source || null,
      };
    }
    const users = Array.from(state.runs.values()).filter((run) => !run.system);
    const system = state.runs.get(app.systemRun);
    return {
      epoch: state.epoch,
      lastSeq: state.lastSeq,
      loading: state.loading,
      transports: { ...state.transports },
      connects: { sse: app.sse.connects, ws: app.ws.connects },
      wsMessages: app.ws.messages,
      settings: { ...app.settings },
      compareStep: state.compareStep,
      runs: users.map((run) => ({
        run: run.name, visible: run.visible, lastStep: run.lastStep, events: run.events, color: run.color,
        state: run.state, ranks: Array.from(run.ranks).sort(), config: { ...run.config },
        alerts: { ...run.alerts }, dropped: { ...run.dropped }, past: Boolean(run.past),
        matched: run.matched !== false, short: run.short || run.name,
      })),
      system: system ? Array.from(system.curves.keys()) : [],
      metrics: Array.from(views.views.values()).filter((v) => !v.system).map((v) => v.metric),
      sections: app.grid.describe(),
      series,
      charts,
      latest,
      logs: app.logs.shown(),
      detailFetches: detail.fetched,
      rate: app.rate.value(),
      stats: { ...state.stats },
    };
  }

  global.StreamHubInspect = { describe };
})(window);
