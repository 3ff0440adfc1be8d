/* stream_hub dashboard — media: `histogram` events as distributions over
 * steps (TensorBoard's distributions view: bands between percentiles of each
 * step's histogram, darker toward the median), and `image` events as an image
 * per (run, tag) with a step slider.
 *
 * One card per (run, tag), in the section under the charts; a hidden run's
 * cards are hidden. Events arrive live (app.js hands them to `add`) and from
 * history once the charts are loaded (`load`: /api/history, paged). Names,
 * tags and image data are user data: set as text, or as a data: URL of a
 * checked image type (the hub accepts png, jpeg, gif and webp only).
 */
(function (global) {
  "use strict";

  const A = global.StreamHubAxes;

  // TensorBoard's bands: the median, then ±0.5, ±1, ±1.5 standard deviations
  // of a normal distribution, and the extremes.
  const PERCENTILES = [0, 6.68, 15.87, 30.85, 50, 69.15, 84.13, 93.32, 100];
  const MAX_HISTOGRAM_STEPS = 2000; // per card: past it every other step is let go
  const MAX_IMAGES = 100;           // per card: the newest kept
  const HISTORY_PAGES = 40;         // /api/history answers read at load (8 MiB at most each)
  const HISTORY_TIMEOUT_MS = 30000;
  const MIMES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

  /** The values at percentiles `ps` (0-100) of a histogram (linear within a bin). */
  function percentiles(edges, counts, ps) {
    const total = counts.reduce((a, b) => a + b, 0);
    if (!(total > 0)) return ps.map(() => edges[0]);
    const out = [];
    let bin = 0;
    let below = 0; // count in the bins before `bin`
    for (const p of ps) {
      const target = (p / 100) * total;
      while (bin < counts.length - 1 && below + counts[bin] < target) {
        below += counts[bin];
        bin += 1;
      }
      const inside = counts[bin] > 0 ? Math.min(1, Math.max(0, (target - below) / counts[bin])) : 0;
      out.push(edges[bin] + inside * (edges[bin + 1] - edges[bin]));
    }
    return out;
  }

  /** Index of the first entry of sorted `list` whose step is >= `step`. */
  function lowerBound(list, step) {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].step < step) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** Put `item` in `list` by step (the newest of a step replaces an older one). */
  function insert(list, item) {
    const at = lowerBound(list, item.step);
    if (at < list.length && list[at].step === item.step) {
      if (list[at].seq <= item.seq) list[at] = item;
      return;
    }
    list.splice(at, 0, item);
  }

  class MediaPanels {
    /**
     * @param root the section the cards go in
     * @param opts.api (path, timeout) -> Promise of JSON
     * @param opts.run (name) -> the app's run ({visible, color}), made if new
     * @param opts.theme () -> the theme (panels.js readTheme)
     * @param opts.changed () -> ask for a frame
     */
    constructor(root, opts) {
      this.root = root;
      this.opts = opts;
      this.cards = new Map(); // kind \0 run \0 tag -> card
      this.dirty = new Set();
      this.visibilityDirty = false;
      const heading = (text) => {
        const h = document.createElement("h2");
        h.className = "media-heading";
        h.textContent = text;
        return h;
      };
      this.grids = { histogram: document.createElement("div"), image: document.createElement("div") };
      this.headings = { histogram: heading("Distributions"), image: heading("Images") };
      for (const kind of ["histogram", "image"]) {
        this.grids[kind].className = "charts media-grid";
        this.grids[kind].dataset.kind = kind;
        this.headings[kind].hidden = true;
        root.append(this.headings[kind], this.grids[kind]);
      }
    }

    /** A live or loaded event; true when a card changed. */
    add(event) {
      const data = event && event.data;
      if (!data || typeof data.tag !== "string" || event.run == null) return false;
      const step = typeof event.step === "number" ? event.step : 0;
      const seq = typeof event.seq === "number" ? event.seq : 0;
      if (event.type === "histogram") {
        if (!Array.isArray(data.edges) || !Array.isArray(data.counts)) return false;
        if (data.edges.length !== data.counts.length + 1 || !data.counts.length) return false;
        const card = this.card("histogram", String(event.run), data.tag);
        insert(card.items, { step, seq, bands: percentiles(data.edges, data.counts, PERCENTILES) });
        if (card.items.length > MAX_HISTOGRAM_STEPS) card.items = card.items.filter((_, i) => i % 2 === 0 || i === card.items.length - 1);
        this.touch(card);
        return true;
      }
      if (event.type === "image") {
        if (!MIMES.has(data.mime) || typeof data.b64 !== "string") return false;
        const card = this.card("image", String(event.run), data.tag);
        const following = card.index === null || card.index >= card.items.length - 1;
        insert(card.items, { step, seq, mime: data.mime, width: data.width, height: data.height, b64: data.b64 });
        if (card.items.length > MAX_IMAGES) card.items.splice(0, card.items.length - MAX_IMAGES);
        if (following) card.index = card.items.length - 1;
        else card.index = Math.min(card.index, card.items.length - 1);
        this.touch(card);
        return true;
      }
      return false;
    }

    /** Every histogram and image history still holds (after the charts). */
    async load(current) {
      let since = 0;
      for (let page = 0; page < HISTORY_PAGES; page++) {
        let answer;
        try {
          answer = await this.opts.api(`/api/history?types=histogram,image&since=${since}&limit=10000`, HISTORY_TIMEOUT_MS);
        } catch (_) {
          return;
        }
        if (!current()) return;
        const events = answer.events || [];
        for (const event of events) {
          if (event.type === "histogram" || event.type === "image") this.add(event);
          if (typeof event.seq === "number") since = Math.max(since, event.seq);
        }
        this.opts.changed();
        if (!answer.more || !events.length) return;
      }
    }

    card(kind, run, tag) {
      const key = `${kind}\u0000${run}\u0000${tag}`;
      let card = this.cards.get(key);
      if (card) return card;
      card = { key, kind, run, tag, items: [], index: null, node: null };
      this.build(card);
      this.cards.set(key, card);
      const grid = this.grids[kind];
      const after = Array.from(this.cards.values())
        .filter((c) => c.kind === kind && c !== card && (c.tag > tag || (c.tag === tag && c.run > run)))
        .sort((a, b) => (a.tag === b.tag ? (a.run < b.run ? -1 : 1) : a.tag < b.tag ? -1 : 1))[0];
      grid.insertBefore(card.node, after ? after.node : null);
      this.root.hidden = false;
      this.headings[kind].hidden = false;
      this.visibilityDirty = true;
      return card;
    }

    build(card) {
      const node = document.createElement("article");
      node.className = "panel chart-card media-card";
      node.dataset.kind = card.kind;
      node.dataset.run = card.run;
      node.dataset.tag = card.tag;
      const head = document.createElement("div");
      head.className = "panel-head";
      const title = document.createElement("h3");
      title.className = "chart-title";
      title.textContent = card.tag;
      const run = document.createElement("span");
      run.className = "media-run";
      const swatch = document.createElement("span");
      swatch.className = "swatch-inline";
      run.append(swatch, document.createTextNode(card.run));
      head.append(title, run);
      node.append(head);
      if (card.kind === "histogram") {
        const wrap = document.createElement("div");
        wrap.className = "canvas-wrap";
        card.canvas = document.createElement("canvas");
        card.canvas.className = "chart-canvas media-canvas";
        card.canvas.setAttribute("role", "img");
        wrap.append(card.canvas);
        card.caption = document.createElement("p");
        card.caption.className = "media-caption";
        node.append(wrap, card.caption);
      } else {
        const frame = document.createElement("div");
        frame.className = "media-frame";
        card.img = document.createElement("img");
        card.img.className = "media-image";
        card.img.alt = `${card.tag} (${card.run})`;
        frame.append(card.img);
        const row = document.createElement("label");
        row.className = "media-slider tool-field";
        const label = document.createElement("span");
        label.textContent = "step";
        card.slider = document.createElement("input");
        card.slider.type = "range";
        card.slider.min = "0";
        card.slider.step = "1";
        card.slider.setAttribute("aria-label", `${card.tag} (${card.run}): step`);
        card.slider.addEventListener("input", () => {
          card.index = Number(card.slider.value);
          this.touch(card);
        });
        card.caption = document.createElement("output");
        card.caption.className = "media-caption";
        row.append(label, card.slider, card.caption);
        node.append(frame, row);
      }
      card.node = node;
    }

    touch(card) {
      this.dirty.add(card);
      this.opts.changed();
    }

    /** Runs shown or hidden, or colours changed: every card looks again. */
    markAll() {
      this.visibilityDirty = true;
      for (const card of this.cards.values()) this.dirty.add(card);
      this.opts.changed();
    }

    /** Redraw what changed (called in each animation frame). */
    render() {
      if (this.visibilityDirty) {
        this.visibilityDirty = false;
        for (const card of this.cards.values()) {
          const run = this.opts.run(card.run);
          const hidden = !run.visible;
          if (card.node.hidden !== hidden) {
            card.node.hidden = hidden;
            if (!hidden) this.dirty.add(card);
          }
          card.node.querySelector(".media-run").style.setProperty("--swatch", run.color);
        }
      }
      for (const card of this.dirty) {
        if (card.node.hidden) continue;
        if (card.kind === "histogram") this.drawDistribution(card);
        else this.showImage(card);
        this.dirty.delete(card);
      }
    }

    showImage(card) {
      const items = card.items;
      if (!items.length) return;
      const index = Math.max(0, Math.min(items.length - 1, card.index == null ? items.length - 1 : card.index));
      const item = items[index];
      card.slider.max = String(items.length - 1);
      card.slider.value = String(index);
      card.slider.disabled = items.length < 2;
      const src = `data:${item.mime};base64,${item.b64}`;
      if (card.img.getAttribute("src") !== src) card.img.setAttribute("src", src);
      card.node.dataset.step = String(item.step);
      card.node.dataset.steps = String(items.length);
      const size = item.width && item.height ? ` · ${item.width}\u00d7${item.height}` : "";
      card.caption.textContent = `${item.step} (${index + 1} of ${items.length})${size}`;
    }

    drawDistribution(card) {
      const canvas = card.canvas;
      const items = card.items;
      const theme = this.opts.theme();
      const colour = this.opts.run(card.run).color;
      const dpr = window.devicePixelRatio || 1;
      const w = canvas.clientWidth;
      const h = canvas.clientHeight;
      if (!w || !h) return;
      if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(h * dpr);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      card.node.dataset.steps = String(items.length);
      if (!items.length) return;
      const first = items[0].step;
      const last = items[items.length - 1].step;
      let lo = Infinity;
      let hi = -Infinity;
      for (const item of items) {
        lo = Math.min(lo, item.bands[0]);
        hi = Math.max(hi, item.bands[item.bands.length - 1]);
      }
      if (lo === hi) {
        lo -= 0.5;
        hi += 0.5;
      }
      const pad = { left: 54, right: 12, top: 8, bottom: 22 };
      const plotW = Math.max(10, w - pad.left - pad.right);
      const plotH = Math.max(10, h - pad.top - pad.bottom);
      const xOf = (step) => pad.left + (last === first ? plotW / 2 : ((step - first) / (last - first)) * plotW);
      const yOf = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * plotH;
      // Axes: value ticks left, step ticks below.
      ctx.font = `11px ${theme.font}`;
      ctx.fillStyle = theme.muted;
      ctx.strokeStyle = theme.grid;
      ctx.lineWidth = 1;
      const yStep = A.niceStep(hi - lo, Math.max(2, Math.floor(plotH / 40)));
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (const v of A.ticks(lo, hi, yStep)) {
        const y = Math.round(yOf(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(pad.left, y);
        ctx.lineTo(pad.left + plotW, y);
        ctx.stroke();
        ctx.fillText(A.formatTick(v, yStep), pad.left - 6, y);
      }
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      const xStep = Math.max(1, A.niceStep(Math.max(1, last - first), Math.max(2, Math.floor(plotW / 90))));
      for (const s of last === first ? [first] : A.ticks(first, last, xStep)) {
        ctx.fillText(A.formatStep ? A.formatStep(s) : String(s), xOf(s), pad.top + plotH + 5);
      }
      // Bands: outermost first, each pair of percentiles one filled shape
      // (a single step: a box each, and the median across it).
      const n = PERCENTILES.length;
      const mid = (n - 1) / 2;
      const half = items.length === 1 ? Math.min(12, plotW / 4) : 0;
      ctx.fillStyle = colour;
      for (let k = 0; k < mid; k++) {
        ctx.globalAlpha = 0.16 + 0.14 * k;
        ctx.beginPath();
        if (half) {
          const x = xOf(items[0].step);
          const top = yOf(items[0].bands[n - 1 - k]);
          ctx.rect(x - half, top, 2 * half, Math.max(1, yOf(items[0].bands[k]) - top));
        } else {
          items.forEach((item, i) => {
            const x = xOf(item.step);
            if (i === 0) ctx.moveTo(x, yOf(item.bands[n - 1 - k]));
            else ctx.lineTo(x, yOf(item.bands[n - 1 - k]));
          });
          for (let i = items.length - 1; i >= 0; i--) ctx.lineTo(xOf(items[i].step), yOf(items[i].bands[k]));
          ctx.closePath();
        }
        ctx.fill();
      }
      ctx.globalAlpha = 1;
      ctx.strokeStyle = colour;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      items.forEach((item, i) => {
        const x = xOf(item.step);
        const y = yOf(item.bands[mid]);
        if (i === 0) ctx.moveTo(x - half, y);
        ctx.lineTo(x + half, y);
      });
      ctx.stroke();
      const latest = items[items.length - 1];
      const median = A.formatValue(latest.bands[mid]);
      const range = `${A.formatValue(latest.bands[0])} \u2013 ${A.formatValue(latest.bands[n - 1])}`;
      card.caption.textContent = `${items.length} step${items.length === 1 ? "" : "s"} (${first}\u2013${last}) · ` +
        `step ${latest.step}: median ${median}, range ${range}`;
      canvas.setAttribute("aria-label", `${card.tag} of ${card.run}: distribution over ${items.length} steps`);
    }

    /** Forget everything (a new epoch). */
    reset() {
      for (const card of this.cards.values()) card.node.remove();
      this.cards.clear();
      this.dirty.clear();
      this.root.hidden = true;
      for (const kind of ["histogram", "image"]) this.headings[kind].hidden = true;
    }

    describe() {
      const cards = Array.from(this.cards.values(), (card) => ({
        kind: card.kind, run: card.run, tag: card.tag, steps: card.items.map((item) => item.step),
        index: card.index, hidden: card.node.hidden,
      }));
      return { cards };
    }
  }

  global.StreamHubMedia = { MediaPanels, percentiles, PERCENTILES };
})(window);
