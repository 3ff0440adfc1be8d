/* stream_hub dashboard — the view in the URL. What the page shows is kept in
 * its hash, so a reload, a bookmark or a copied link shows the same view:
 *
 *   #x=wall&ranks=band&smooth=0.6&hide=exp2,sweep/lr%3D3e-4&search=lr%3D3e-4&group=seed&filter=loss&step=800
 *    &logrun=exp1&loglevel=WARNING&c:train/loss=log,band,1200..1500&sys:cpu/percent=log
 *
 *   x         the x axis: step (left out), wall or relative
 *   ranks     how every chart draws a run's ranks: lines (left out) or band
 *   smooth    smoothing (left out: none)
 *   hide      runs hidden (every other run shows, new ones too), or
 *   only      the runs shown (solo, none: a new run stays hidden)
 *   search    the run search (names and hyper-parameters: words, key=value, /regex/)
 *   group     the config key runs are grouped by (left out: none)
 *   params    diff: the hyper-parameter table shows only the keys that differ
 *   filter    the metric filter
 *   step      the comparison table's step (left out: the latest)
 *   logrun, loglevel   the log panel's filters
 *   c:<metric>, sys:<metric>   a chart's own settings (a user metric, one of
 *             the machine's): log (log y), band or lines (its ranks), a..b (zoom)
 *
 * Names are percent-encoded except for "/", ":" and "@", so any run or metric
 * name works (",", "&", "=", "#", spaces, unicode) and the usual ones stay
 * readable. Keys or values the page does not know are ignored. parse() and
 * format() are pure; UrlView writes the hash with history.replaceState (the
 * back button is not filled with every zoom step), at most once per DELAY_MS
 * after a change, and hands a hash the user changed back to the page.
 */
(function (global) {
  "use strict";

  const X_MODES = ["step", "wall", "relative"];
  const RANK_MODES = ["lines", "band"];
  const LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"];
  const SYSTEM_PREFIX = "_system\u0000"; // views.js: the id of a chart of the machine's metrics
  const DELAY_MS = 250;

  function encode(text) {
    return encodeURIComponent(text).replace(/%(2F|3A|40)/gi, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
  }

  function decode(text) {
    try {
      return decodeURIComponent(text);
    } catch (_) {
      return text; // a stray "%": taken as written
    }
  }

  /** A zoom bound with as many decimals as its span needs (1e-4 of it). */
  function bound(x, span) {
    const decimals = Math.max(0, Math.min(12, Math.ceil(-Math.log10(span)) + 4));
    return String(Number(x.toFixed(decimals)));
  }

  /** The view with nothing chosen: what a key left out means. */
  function defaults() {
    return {
      empty: true, // no hash at all: the page starts from the user's defaults (smoothing)
      xMode: "step",
      rankMode: "lines",
      smoothing: null,
      selection: { only: false, names: [] },
      runSearch: "",
      groupBy: "",
      paramsDiff: false,
      filter: "",
      compareStep: null,
      logRun: "",
      logLevel: "INFO",
      charts: new Map(), // view id -> {logY, rankMode, zoom}
    };
  }

  function parseChart(value) {
    const prefs = { logY: false, rankMode: null, zoom: null };
    for (const token of value.split(",").map(decode)) {
      const dots = token.indexOf("..");
      if (token === "log") {
        prefs.logY = true;
      } else if (RANK_MODES.includes(token)) {
        prefs.rankMode = token;
      } else if (dots > 0) {
        const a = Number(token.slice(0, dots));
        const b = Number(token.slice(dots + 2));
        if (token.length > dots + 2 && Number.isFinite(a) && Number.isFinite(b) && a < b) prefs.zoom = [a, b];
      }
    }
    return prefs;
  }

  /** The view a hash ("#..." or "") describes. */
  function parse(hash) {
    const view = defaults();
    const text = String(hash || "").replace(/^#/, "");
    if (!text) return view;
    view.empty = false;
    for (const part of text.split("&")) {
      const eq = part.indexOf("=");
      if (eq <= 0) continue;
      const key = decode(part.slice(0, eq));
      const raw = part.slice(eq + 1);
      const value = decode(raw);
      if (key === "x" && X_MODES.includes(value)) {
        view.xMode = value;
      } else if (key === "ranks" && RANK_MODES.includes(value)) {
        view.rankMode = value;
      } else if (key === "smooth") {
        const s = Number(value);
        if (value !== "" && s >= 0 && s < 1) view.smoothing = s;
      } else if (key === "hide" || key === "only") {
        view.selection = { only: key === "only", names: raw === "" ? [] : raw.split(",").map(decode) };
      } else if (key === "filter") {
        view.filter = value;
      } else if (key === "search") {
        view.runSearch = value;
      } else if (key === "group") {
        view.groupBy = value;
      } else if (key === "params") {
        view.paramsDiff = value === "diff";
      } else if (key === "step") {
        const step = Number(value);
        if (value !== "" && Number.isFinite(step)) view.compareStep = Math.round(step);
      } else if (key === "logrun") {
        view.logRun = value;
      } else if (key === "loglevel" && LOG_LEVELS.includes(value.toUpperCase())) {
        view.logLevel = value.toUpperCase();
      } else if (key.startsWith("c:") && key.length > 2) {
        view.charts.set(key.slice(2), parseChart(raw));
      } else if (key.startsWith("sys:") && key.length > 4) {
        view.charts.set(SYSTEM_PREFIX + key.slice(4), parseChart(raw));
      }
    }
    return view;
  }

  /** The hash (without "#") of a view; "" when everything is as by default. */
  function format(view) {
    const parts = [];
    if (view.xMode !== "step") parts.push(`x=${view.xMode}`);
    if (view.rankMode !== "lines") parts.push(`ranks=${view.rankMode}`);
    if (view.smoothing > 0) parts.push(`smooth=${Number(view.smoothing.toFixed(2))}`);
    const names = view.selection.names.slice().sort();
    if (view.selection.only) parts.push(`only=${names.map(encode).join(",")}`);
    else if (names.length) parts.push(`hide=${names.map(encode).join(",")}`);
    if (view.runSearch) parts.push(`search=${encode(view.runSearch)}`);
    if (view.groupBy) parts.push(`group=${encode(view.groupBy)}`);
    if (view.paramsDiff) parts.push("params=diff");
    if (view.filter) parts.push(`filter=${encode(view.filter)}`);
    if (view.compareStep != null) parts.push(`step=${view.compareStep}`);
    if (view.logRun) parts.push(`logrun=${encode(view.logRun)}`);
    if (view.logLevel && view.logLevel !== "INFO") parts.push(`loglevel=${view.logLevel}`);
    const ids = Array.from(view.charts.keys()).sort();
    for (const id of ids) {
      const prefs = view.charts.get(id);
      const tokens = [];
      if (prefs.logY) tokens.push("log");
      if (prefs.rankMode) tokens.push(prefs.rankMode);
      if (prefs.zoom) {
        const [a, b] = prefs.zoom;
        const span = b - a;
        if (span > 0) tokens.push(`${bound(a, span)}..${bound(b, span)}`);
      }
      if (!tokens.length) continue;
      const key = id.startsWith(SYSTEM_PREFIX) ? `sys:${encode(id.slice(SYSTEM_PREFIX.length))}` : `c:${encode(id)}`;
      parts.push(`${key}=${tokens.join(",")}`);
    }
    return parts.join("&");
  }

  /**
   * The page's URL kept in step with its view. read() -> the view now (as
   * parse() returns it); onNavigate(view) when the user changes the hash.
   */
  class UrlView {
    constructor(read, onNavigate) {
      this.read = read;
      this.timer = 0;
      this.writes = 0;
      this.written = location.hash; // the hash as we left it: another one is the user's
      window.addEventListener("hashchange", () => {
        this.written = location.hash;
        onNavigate(parse(location.hash));
      });
    }

    /** Something in the view changed: write the URL soon (once for a burst of changes). */
    changed() {
      if (!this.timer) this.timer = setTimeout(() => this.flush(), DELAY_MS);
    }

    flush() {
      clearTimeout(this.timer);
      this.timer = 0;
      // The user changed the hash since: their view wins (hashchange brings it).
      if (location.hash !== this.written) return;
      const hash = format(this.read());
      if (location.hash.replace(/^#/, "") === hash) return;
      const url = `${location.pathname}${location.search}${hash ? `#${hash}` : ""}`;
      history.replaceState(history.state, "", url);
      this.written = location.hash;
      this.writes += 1;
    }
  }

  global.StreamHubUrlState = { parse, format, encode, UrlView, defaults };
})(window);
