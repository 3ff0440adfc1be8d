/* stream_hub dashboard — where the charts are: one card per metric, in
 * collapsible sections by name prefix ("train/loss" is in "train"), pinned
 * cards in a section at the top, the machine's metrics in one at the bottom;
 * a filter over metric names. Which cards are on screen (only those are drawn)
 * and their sizes. Pins and collapsed sections are remembered in this browser;
 * the filter is part of the view, kept in the URL (urlstate.js).
 */
(function (global) {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const compareNames = (a, b) => a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  const STORAGE = "stream_hub:layout";
  const PINNED = "\u0000pinned";
  const SYSTEM = "\u0000system";
  const PLAIN = "";

  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE) || "{}");
      return {
        pins: new Set(Array.isArray(saved.pins) ? saved.pins : []),
        collapsed: new Set(Array.isArray(saved.collapsed) ? saved.collapsed : []),
        filter: "",
      };
    } catch (_) {
      return { pins: new Set(), collapsed: new Set(), filter: "" };
    }
  }

  function sectionLabel(name) {
    if (name === PINNED) return "pinned";
    if (name === SYSTEM) return "system";
    return name === PLAIN ? "metrics" : name;
  }

  /** Does a metric name match the filter? Words must all appear; /re/ is a regular expression. */
  function matcher(text) {
    const trimmed = text.trim();
    if (!trimmed) return () => true;
    const re = /^\/(.+)\/([a-z]*)$/.exec(trimmed);
    if (re) {
      try {
        const pattern = new RegExp(re[1], re[2].includes("i") ? re[2] : re[2] + "i");
        return (name) => pattern.test(name);
      } catch (_) {
        // Not a valid expression (yet, while typing): match it as words.
      }
    }
    const words = trimmed.toLowerCase().split(/\s+/);
    return (name) => {
      const lower = name.toLowerCase();
      return words.every((w) => lower.includes(w));
    };
  }

  /** A chart button's accessible name: the chart's metric, then what the button says ("loss: log y"). */
  function nameTool(button, metric) {
    const name = `${metric}: ${button.textContent.trim()}`;
    if (button.getAttribute("aria-label") !== name) button.setAttribute("aria-label", name);
  }

  class ChartGrid {
    /** hooks: {onVisible(view), onResize(view), onLayout()} */
    constructor(container, hooks) {
      this.container = container;
      this.hooks = hooks;
      this.saved = load();
      this.sections = new Map(); // name -> {el, body, toggle, count}
      this.views = new Map(); // id -> view
      this.match = matcher(this.saved.filter);
      this.sized = new Map(); // canvas-wrap -> view
      this.resizer = new ResizeObserver((entries) => {
        for (const entry of entries) {
          const view = this.sized.get(entry.target);
          if (!view) continue;
          if (!view.card.isConnected) {
            this.resizer.unobserve(entry.target);
            this.sized.delete(entry.target);
            continue;
          }
          const box = entry.contentRect;
          if (view.chart.resize(box.width, box.height, window.devicePixelRatio || 1)) hooks.onResize(view);
        }
      });
      this.watcher = new IntersectionObserver((entries) => {
        for (const entry of entries) {
          const view = entry.target.__view;
          if (!view) continue;
          view.onScreen = entry.isIntersecting;
          if (view.onScreen) hooks.onVisible(view);
        }
      }, { rootMargin: "150px 0px" });
      const filter = $("metric-filter");
      filter.value = this.saved.filter;
      filter.addEventListener("input", () => this.setFilter(filter.value));
    }

    /** A card for a metric (`system`: of the machine's metrics). The view's id is its key. */
    addCard(id, metric, system) {
      const card = $("chart-template").content.firstElementChild.cloneNode(true);
      card.dataset.metric = metric;
      card.dataset.id = id;
      if (system) card.dataset.scope = "system";
      const title = card.querySelector(".chart-title");
      title.textContent = metric;
      title.title = metric;
      const canvas = card.querySelector(".chart-canvas");
      canvas.setAttribute(
        "aria-label",
        `Chart of ${metric}. Drag to zoom, Shift+drag to pan, double-click to reset; ` +
          "keys: plus and minus zoom, arrows pan, 0 resets.",
      );
      // Every chart has the same buttons: each one's name says whose it is.
      for (const button of card.querySelectorAll(".chart-tools button[data-tool]")) nameTool(button, metric);
      const view = {
        id, metric, system, card, canvas,
        legend: card.querySelector(".chart-legend"),
        wrap: card.querySelector(".canvas-wrap"),
        tools: card.querySelector(".chart-tools"),
        chart: null,
        onScreen: false,
        pinned: this.saved.pins.has(id),
      };
      card.__view = view;
      this.views.set(id, view);
      this._place(view);
      this.watcher.observe(card);
      this.sized.set(view.wrap, view);
      this.resizer.observe(view.wrap);
      this._refreshSections();
      return view;
    }

    removeAll() {
      for (const view of this.views.values()) {
        this.watcher.unobserve(view.card);
        view.card.remove();
      }
      this.views.clear();
      this._refreshSections();
    }

    /** Can the view be seen now (on screen, not filtered out, its section open)? */
    drawable(view) {
      return view.onScreen && !view.card.hidden && !this.saved.collapsed.has(this._sectionOf(view));
    }

    setPinned(view, pinned) {
      view.pinned = pinned;
      if (pinned) this.saved.pins.add(view.id); else this.saved.pins.delete(view.id);
      this._save();
      this._place(view);
      this._refreshSections();
      this.hooks.onLayout();
    }

    setFilter(text) {
      const input = $("metric-filter");
      if (input.value !== text) input.value = text;
      if (text === this.saved.filter) return;
      this.saved.filter = text;
      this.match = matcher(text);
      for (const view of this.views.values()) view.card.hidden = !this.match(view.metric);
      this._refreshSections();
      this.hooks.onLayout();
    }

    setCollapsed(name, collapsed) {
      if (collapsed) this.saved.collapsed.add(name); else this.saved.collapsed.delete(name);
      this._save();
      this._refreshSections();
      this.hooks.onLayout();
    }

    /** Section names and states (for the debug view). */
    describe() {
      const order = Array.from(this.container.children);
      const sections = Array.from(this.sections).sort((a, b) => order.indexOf(a[1].el) - order.indexOf(b[1].el));
      return sections.map(([name, s]) => ({
        name: sectionLabel(name),
        collapsed: this.saved.collapsed.has(name),
        charts: Array.from(s.body.children).filter((c) => !c.hidden).map((c) => c.dataset.metric),
      }));
    }

    // -- internals --------------------------------------------------------------

    _sectionOf(view) {
      if (view.pinned) return PINNED;
      if (view.system) return SYSTEM;
      const slash = view.metric.indexOf("/");
      return slash > 0 ? view.metric.slice(0, slash) : PLAIN;
    }

    _section(name) {
      let section = this.sections.get(name);
      if (section) return section;
      const el = document.createElement("section");
      el.className = "chart-section";
      el.dataset.section = sectionLabel(name);
      const head = document.createElement("h2");
      head.className = "section-head";
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "section-toggle";
      const bodyId = `section-${this.sections.size}-${Math.random().toString(36).slice(2, 8)}`;
      toggle.setAttribute("aria-controls", bodyId);
      const chevron = document.createElement("span");
      chevron.className = "chevron";
      chevron.setAttribute("aria-hidden", "true");
      const label = document.createElement("span");
      label.className = "section-name";
      label.textContent = sectionLabel(name);
      const count = document.createElement("span");
      count.className = "section-count";
      toggle.append(chevron, label, count);
      toggle.addEventListener("click", () => this.setCollapsed(name, !this.saved.collapsed.has(name)));
      head.append(toggle);
      const body = document.createElement("div");
      body.className = "charts section-body";
      body.id = bodyId;
      el.append(head, body);
      section = { name, el, body, toggle, count };
      this.sections.set(name, section);
      // Sections in order: pinned, un-prefixed metrics, prefixes by name, the machine's.
      const rank = (n) => (n === PINNED ? 0 : n === PLAIN ? 1 : n === SYSTEM ? 3 : 2);
      const order = (a, b) => rank(a) - rank(b) || compareNames(a, b);
      let before = null;
      let beforeName = null;
      for (const [other, s] of this.sections) {
        if (other !== name && order(other, name) > 0 && (before === null || order(other, beforeName) < 0)) {
          before = s.el;
          beforeName = other;
        }
      }
      this.container.insertBefore(el, before);
      return section;
    }

    _place(view) {
      const section = this._section(this._sectionOf(view));
      let before = null;
      for (const card of section.body.children) {
        if (card !== view.card && compareNames(view.metric, card.dataset.metric) < 0) {
          before = card;
          break;
        }
      }
      section.body.insertBefore(view.card, before);
      view.card.hidden = !this.match(view.metric);
      const pin = view.tools && view.tools.querySelector('[data-tool="pin"]');
      if (pin) {
        pin.setAttribute("aria-pressed", String(view.pinned));
        pin.textContent = view.pinned ? "unpin" : "pin";
        nameTool(pin, view.metric);
      }
    }

    _refreshSections() {
      for (const [name, s] of this.sections) {
        const cards = Array.from(s.body.children);
        const shown = cards.filter((c) => !c.hidden).length;
        if (!cards.length) {
          s.el.remove();
          this.sections.delete(name);
          continue;
        }
        const collapsed = this.saved.collapsed.has(name);
        s.el.hidden = shown === 0;
        s.el.dataset.collapsed = String(collapsed);
        s.body.hidden = collapsed;
        s.toggle.setAttribute("aria-expanded", String(!collapsed));
        s.toggle.title = `${collapsed ? "Show" : "Hide"} the ${sectionLabel(name)} charts`;
        s.count.textContent = shown === cards.length ? String(shown) : `${shown} of ${cards.length}`;
      }
      const empty = $("charts-empty");
      if (empty) empty.hidden = !this.views.size || Array.from(this.views.values()).some((v) => !v.card.hidden);
    }

    _save() {
      try {
        localStorage.setItem(STORAGE, JSON.stringify({
          pins: Array.from(this.saved.pins),
          collapsed: Array.from(this.saved.collapsed),
        }));
      } catch (_) {
        // Not remembered; the page still works.
      }
    }
  }

  global.StreamHubLayout = { ChartGrid, matcher, nameTool };
})(window);
