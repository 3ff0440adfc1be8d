/* stream_hub dashboard — the three connections to the server, each with its
 * own live state ("connecting", "connected", "reconnecting", "down"; REST also
 * "busy": a slow answer) and no knowledge of charts or tables: the app passes
 * callbacks in.
 *
 * SSE reconnects are done here rather than left to EventSource: the browser's
 * own retry reuses the first URL, while ours asks the app first (which
 * re-reads /api/status, so a restarted server on other ports or with a new
 * epoch is noticed) and then resumes from the last applied seq.
 */
(function (global) {
  "use strict";

  /** Exponential backoff with jitter: 0.25 s, 0.5 s, 1 s, ... up to `max` ms. */
  class Backoff {
    constructor(base = 250, max = 8000) {
      this.base = base;
      this.max = max;
      this.attempt = 0;
    }
    next() {
      const delay = Math.min(this.max, this.base * 2 ** this.attempt);
      this.attempt += 1;
      return Math.round(delay * (0.8 + Math.random() * 0.4));
    }
    reset() { this.attempt = 0; }
  }

  function seconds(ms) {
    return ms < 1000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 1000)}s`;
  }

  // The page's own REST requests not answered yet: while one is, a slow
  // /health means a busy server (answering it), not one that is down.
  let inFlight = 0;

  /** GET a JSON document from the page's own origin (the REST port). */
  async function fetchJSON(path, { token = null, timeout = 5000 } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    inFlight += 1;
    try {
      const response = await fetch(path, {
        headers,
        cache: "no-store",
        signal: AbortSignal.timeout(timeout),
      });
      if (!response.ok) {
        const error = new Error(`${path}: HTTP ${response.status}`);
        error.status = response.status;
        throw error;
      }
      return await response.json();
    } finally {
      inFlight -= 1;
    }
  }

  /**
   * What both live connections share: their state, start, and retrying with
   * backoff after a drop. Subclasses define _connect() and _close().
   */
  class Reconnecting {
    constructor(opts, backoff) {
      this.opts = opts;
      this.timer = 0;
      this.backoff = backoff;
      this.connects = 0;
      this.state = "connecting";
      this.stopped = true;
    }

    start() {
      this.stopped = false;
      this._connect();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this._close();
    }

    _setState(state, text) {
      this.state = state;
      this.opts.onState(state, text);
    }

    /** Reconnect after a backoff delay; `prepare` (async, may throw) runs first. */
    _retry(reason, prepare = null) {
      if (this.stopped) return;
      clearTimeout(this.timer);
      const delay = this.backoff.next();
      this._setState("reconnecting", `${reason}, retry in ${seconds(delay)}`);
      this.timer = setTimeout(async () => {
        if (prepare) {
          try {
            await prepare();
          } catch (_) {
            // The attempt below decides whether the server is back.
          }
        }
        this._connect();
      }, delay);
    }
  }

  /**
   * The live event feed over SSE.
   *
   * opts.url()                 -> the URL to (re)connect to (includes last_event_id)
   * opts.types                 -> event types to listen for (named SSE events)
   * opts.onEvent(type, data)   -> each parsed event
   * opts.onState(state, text)  -> connection state changes
   * opts.beforeReconnect()     -> awaited before each reconnect; may throw (ignored)
   */
  class SseFeed extends Reconnecting {
    constructor(opts) {
      super(opts, new Backoff(250, 8000));
      this.source = null;
    }

    _close() {
      if (this.source) this.source.close();
      this.source = null;
    }

    _connect() {
      if (this.stopped) return;
      this.connects += 1;
      const source = new EventSource(this.opts.url());
      this.source = source;
      source.onopen = () => {
        this.backoff.reset();
        this._setState("connected", "connected");
      };
      source.onerror = () => this._drop("connection lost");
      const listener = (message) => this._receive(message);
      for (const type of this.opts.types) source.addEventListener(type, listener);
      source.onmessage = listener; // frames without an "event:" line
    }

    _receive(message) {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch (_) {
        return; // not JSON: nothing a chart could use
      }
      const type = message.type === "message" ? (data && data.type) || "message" : message.type;
      this.opts.onEvent(type, data);
      // The server is going away: reconnect on our own schedule right now
      // rather than waiting for the browser to notice the stream ended.
      if (type === "shutdown") this._drop("server restarting");
    }

    _drop(reason) {
      this._close();
      this._retry(reason, this.opts.beforeReconnect);
    }
  }

  /**
   * A WebSocket kept open only to show that the WebSocket face works: it
   * subscribes to status events and pings now and then.
   */
  class WsMonitor extends Reconnecting {
    constructor(opts) {
      super(opts, new Backoff(500, 15000)); // opts: {url(), onState(state, text), onMessage(data)}
      this.socket = null;
      this.pinger = 0;
      this.messages = 0;
    }

    _close() {
      clearInterval(this.pinger);
      if (this.socket) this.socket.close(1000);
      this.socket = null;
    }

    _connect() {
      if (this.stopped) return;
      this.connects += 1;
      let socket;
      try {
        socket = new WebSocket(this.opts.url());
      } catch (_) {
        this._retry("bad address");
        return;
      }
      this.socket = socket;
      socket.onopen = () => {
        this.backoff.reset();
        socket.send(JSON.stringify({ op: "subscribe", types: ["status"] }));
        clearInterval(this.pinger);
        this.pinger = setInterval(() => {
          if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ op: "ping" }));
        }, 15000);
        this._setState("connected", "connected");
      };
      socket.onmessage = (message) => {
        this.messages += 1;
        if (this.opts.onMessage) {
          try {
            this.opts.onMessage(JSON.parse(message.data));
          } catch (_) {
            // A frame we cannot parse changes nothing on the page.
          }
        }
      };
      socket.onclose = (event) => {
        clearInterval(this.pinger);
        if (this.socket === socket) this.socket = null;
        this._retry(event.code === 1001 ? "server restarting" : "closed");
      };
    }
  }

  const SLOW_MS = 1500; // an answer slower than this: "busy"
  const PATIENCE_MS = 10000; // no answer by then: "down", unless the page waits for one of its own

  /**
   * Polls GET /health every `interval` ms and reports whether REST answers:
   * "connected"; "busy" while an answer is slow (over SLOW_MS) — "loading"
   * when the page has a request of its own in flight, which the server is
   * busy answering (a long history), "slow" otherwise; "down" when the
   * connection fails, the answer is an error, or none comes within
   * PATIENCE_MS while the page waits for nothing else.
   */
  class RestMonitor {
    constructor(opts) {
      this.opts = opts; // {interval, token, onState(state, text), onTick()}
      this.timer = 0;
      this.checks = 0;
      this.state = "connecting";
    }

    _busy(started) {
      this.state = "busy";
      const waited = Math.round((performance.now() - started) / 1000);
      this.opts.onState("busy", inFlight > 0 ? "loading" : `slow, ${waited} s`);
    }

    start() {
      this._check();
    }

    stop() {
      clearTimeout(this.timer);
    }

    async _check() {
      const started = performance.now();
      const slow = setInterval(() => this._busy(started), SLOW_MS);
      try {
        const headers = this.opts.token ? { Authorization: `Bearer ${this.opts.token}` } : {};
        const response = await fetch("/health", {
          headers,
          cache: "no-store",
          signal: AbortSignal.timeout(PATIENCE_MS),
        });
        const ms = Math.round(performance.now() - started);
        if (response.ok) {
          this.state = "connected";
          this.opts.onState("connected", `${ms} ms`);
        } else {
          this.state = "down";
          this.opts.onState("down", `HTTP ${response.status}`);
        }
      } catch (error) {
        if (error && error.name === "TimeoutError" && inFlight > 0) {
          this._busy(started);
        } else {
          this.state = "down";
          this.opts.onState("down", "no answer");
        }
      } finally {
        clearInterval(slow);
      }
      this.checks += 1;
      if (this.opts.onTick) this.opts.onTick(this.state, this.checks);
      this.timer = setTimeout(() => this._check(), this.opts.interval);
    }
  }

  global.StreamHubTransports = { Backoff, fetchJSON, SseFeed, WsMonitor, RestMonitor, inFlight: () => inFlight };
})(window);
