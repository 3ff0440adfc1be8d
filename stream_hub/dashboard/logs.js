/* stream_hub dashboard — the log panel: `log` events (and any other event
 * that is not a metric and not the server's own), newest at the bottom,
 * filterable by run and by lowest level. A `log` event's data is
 * {"message", "level", "logger"} (level and logger optional); the older
 * {"text"} is shown as the message. An `alert` shows its title and text at
 * its level, from "alert (hub)" or "alert (user)". Kept: the last MAX_LINES
 * (more once the user loads earlier pages), in time order (history that
 * arrives after live lines goes in its place; an event is one line however
 * often it comes: its epoch and seq name it).
 * History comes from the run's record (GET /api/logs: the store, a past
 * run's files), a page at a time: the newest page on load and when a run is
 * chosen in the filter, older ones with "Load earlier". A hub that keeps no
 * record says so: only its last N events are in memory.
 * The filters are part of the view, kept in the URL (urlstate.js).
 */
(function (global) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const MAX_LINES = 2000;
  const LEVELS = { DEBUG: 10, INFO: 20, WARNING: 30, WARN: 30, ERROR: 40, CRITICAL: 50, FATAL: 50 };
  const SERVER_TYPES = new Set(["metric", "status", "gap", "shutdown", "config", "run_end", "histogram", "image"]);

  const pad2 = (n) => String(n).padStart(2, "0");
  function clock(ts) {
    if (typeof ts !== "number") return "";
    const d = new Date(ts * 1000);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  /** What a line shows of an event: {seq, ts, run, level, logger, message}, or null. */
  function lineOf(event) {
    if (!event || SERVER_TYPES.has(event.type)) return null;
    const data = event.data;
    let message;
    let level = "INFO";
    let logger = "";
    if (event.type === "log" && data && typeof data === "object" && !Array.isArray(data)) {
      message = data.message !== undefined ? data.message : data.text;
      if (typeof data.level === "string" && data.level) level = data.level.toUpperCase();
      if (typeof data.logger === "string") logger = data.logger;
    } else if (event.type === "log" && typeof data === "string") {
      message = data;
    } else if (event.type === "alert" && data && typeof data === "object") {
      message = data.text ? `${data.title}: ${data.text}` : data.title;
      if (typeof data.level === "string" && data.level) level = data.level.toUpperCase();
      logger = `alert (${data.source === "hub" ? "hub" : "user"})`;
    } else {
      logger = event.type;
      message = data;
    }
    if (message === undefined || message === null) message = "";
    if (typeof message !== "string") message = JSON.stringify(message);
    return {
      seq: event.seq, ts: event.ts, run: event.run == null ? "" : String(event.run),
      rank: event.rank, level, logger, message,
    };
  }

  /** Which event a line is: its epoch and seq (a record spans epochs and files). */
  const keyOf = (event) => (typeof event.seq === "number" ? `${event.epoch || ""}:${event.seq}` : null);
  /** Line order: time, then seq. */
  const before = (a, b) => a.ts < b.ts || (a.ts === b.ts && a.seq < b.seq);

  class LogPanel {
    /** hooks: {onFilter()} after the user changed a filter; {onEarlier(run, cursor)}
     * when the user asks for the page before `cursor` ("" run: every run);
     * {onRun(run)} when a run is chosen whose history was not asked for yet. */
    constructor(hooks = {}) {
      this.hooks = hooks;
      this.lines = [];
      this.keys = new Set(); // the keys of `lines`
      this.cap = MAX_LINES;
      this.runs = new Set();
      this.cursors = new Map(); // run ("" every run) -> the cursor of its next older page (null: none)
      this.loading = false;
      this.list = $("log-list");
      this.runFilter = $("log-run");
      this.levelFilter = $("log-level");
      this.earlierButton = $("log-earlier");
      this.windowNote = $("log-window");
      this.pending = [];
      this.dirty = false;
      this.rebuild = false;
      const changed = () => {
        this._refilter();
        this._askRun();
        if (hooks.onFilter) hooks.onFilter();
      };
      this.runFilter.addEventListener("change", changed);
      this.levelFilter.addEventListener("change", changed);
      this.earlierButton.addEventListener("click", () => {
        const run = this.runFilter.value;
        const cursor = this.cursors.get(run);
        if (cursor && !this.loading && this.hooks.onEarlier) this.hooks.onEarlier(run, cursor);
      });
    }

    /** Take an event (live, or `history`: from the record); true when it became a line. */
    add(event, history = false) {
      const key = keyOf(event);
      if (key !== null && this.keys.has(key)) return false;
      const line = lineOf(event);
      if (!line) return false;
      const last = this.lines[this.lines.length - 1];
      if (history && last && before(line, last)) {
        // From history, after newer lines: in its place, unless older than all kept.
        if (this.lines.length >= this.cap && before(line, this.lines[0])) return false;
        let i = this.lines.length;
        while (i > 0 && !before(this.lines[i - 1], line)) i--;
        this.lines.splice(i, 0, line);
        this.rebuild = true;
      } else {
        this.lines.push(line);
        this.pending.push(line);
      }
      line.key = key;
      if (key !== null) this.keys.add(key);
      if (this.lines.length > this.cap) {
        for (const old of this.lines.splice(0, this.lines.length - this.cap)) this.keys.delete(old.key);
        this.rebuild = true;
      }
      if (line.run) this._runOption(line.run);
      this.dirty = true;
      return true;
    }

    /**
     * A page of GET /api/logs for `run` ("": every run): its events, the
     * cursor of the page before it, and whether the hub keeps a record.
     * `older`: asked for with "Load earlier" (the panel keeps that many more lines).
     */
    takePage(run, answer, older) {
      const events = Array.isArray(answer.events) ? answer.events : [];
      if (older) this.cap += events.length;
      for (const event of events) this.add(event, true);
      this.cursors.set(run || "", typeof answer.before === "string" ? answer.before : null);
      const windowed = answer.coverage === "window";
      this.windowNote.hidden = !windowed;
      if (windowed) {
        const n = Number(answer.window_events);
        this.windowNote.textContent = `Only the last ${Number.isFinite(n) ? n.toLocaleString("en-US") : "few"} ` +
          "events are in memory: this hub keeps no store, older log lines are gone.";
      }
      this._showEarlier();
      this.dirty = true;
    }

    /** Whether a page is being fetched (the button waits). */
    setLoading(loading) {
      this.loading = loading;
      this._showEarlier();
    }

    /** A run the page knows of: the run filter offers it. */
    knowRun(run) {
      if (run) this._runOption(run);
    }

    _askRun() {
      const run = this.runFilter.value;
      if (run && !this.cursors.has(run) && this.hooks.onRun) {
        this.cursors.set(run, null); // asked once
        this.hooks.onRun(run);
      }
      this._showEarlier();
    }

    _showEarlier() {
      const cursor = this.cursors.get(this.runFilter.value);
      this.earlierButton.hidden = !cursor;
      this.earlierButton.disabled = this.loading;
    }

    /** The filters, as the URL keeps them: {run ("": all), level}. */
    filters() {
      return { run: this.runFilter.value, level: this.levelFilter.value };
    }

    /** Set the filters (from the URL); a run not seen yet gets its option now. */
    setFilters(run, level) {
      if (run) this._runOption(run);
      const was = `${this.runFilter.value}\u0000${this.levelFilter.value}`;
      this.runFilter.value = run || "";
      this.levelFilter.value = level || "INFO";
      if (!this.levelFilter.value) this.levelFilter.value = "INFO";
      if (`${this.runFilter.value}\u0000${this.levelFilter.value}` !== was) {
        this._refilter();
        this._askRun();
      }
    }

    _runOption(run) {
      if (this.runs.has(run)) return;
      this.runs.add(run);
      const option = document.createElement("option");
      option.value = run;
      option.textContent = run;
      this.runFilter.append(option);
    }

    reset() {
      this.keys.clear();
      this.lines = [];
      this.pending = [];
      this.cap = MAX_LINES;
      this.cursors.clear();
      this._showEarlier();
      this.rebuild = true;
      this.dirty = true;
    }

    /** Apply what was added since the last render (called from the app's frame). */
    render() {
      if (!this.dirty) return;
      this.dirty = false;
      const stick = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 30;
      if (this.rebuild) {
        this.rebuild = false;
        this.pending = [];
        this.list.replaceChildren(...this.lines.filter((l) => this._shows(l)).map((l) => this._node(l)));
      } else {
        const nodes = this.pending.filter((l) => this._shows(l)).map((l) => this._node(l));
        this.pending = [];
        if (nodes.length) this.list.append(...nodes);
        while (this.list.childElementCount > this.cap) this.list.firstElementChild.remove();
      }
      $("log-empty").hidden = this.list.childElementCount > 0;
      $("log-count").textContent = `${this.list.childElementCount} of ${this.lines.length}`;
      if (stick) this.list.scrollTop = this.list.scrollHeight;
    }

    shown() {
      return Array.from(this.list.children, (node) => node.dataset.message);
    }

    _shows(line) {
      const run = this.runFilter.value;
      if (run && line.run !== run) return false;
      const min = LEVELS[this.levelFilter.value] || 0;
      return (LEVELS[line.level] || 20) >= min;
    }

    _refilter() {
      this.rebuild = true;
      this.dirty = true;
      this.render();
    }

    _node(line) {
      const row = document.createElement("li");
      row.className = "log-line";
      row.dataset.level = line.level;
      row.dataset.run = line.run;
      row.dataset.message = line.message;
      const time = document.createElement("time");
      time.textContent = clock(line.ts);
      if (typeof line.ts === "number") time.dateTime = new Date(line.ts * 1000).toISOString();
      const level = document.createElement("span");
      level.className = "log-level";
      level.textContent = line.level;
      const run = document.createElement("span");
      run.className = "log-run";
      run.textContent = line.run + (line.rank != null ? `·${line.rank}` : "");
      const logger = document.createElement("span");
      logger.className = "log-logger";
      logger.textContent = line.logger;
      const message = document.createElement("span");
      message.className = "log-message";
      message.textContent = line.message;
      row.append(time, level, run, logger, message);
      return row;
    }
  }

  global.StreamHubLogs = { LogPanel, lineOf };
})(window);
