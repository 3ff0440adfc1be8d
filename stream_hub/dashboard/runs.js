/* stream_hub dashboard — runs: their stable colours, the run list (toggle,
 * solo, state, ranks, alerts, drops; runs the search leaves out hidden, a
 * heading per group when grouped; names shortened as sweeps.js says, the
 * full name in each title and accessible name) and the hyper-parameter
 * table (from `config` events; "differences only" keeps the keys that differ).
 * Names and values from the server are always set as text, never as HTML.
 */
(function (global) {
  "use strict";

  const { formatValue } = global.StreamHubAxes;
  const $ = (id) => document.getElementById(id);

  // ---- colours ----------------------------------------------------------------
  //
  // A run keeps its colour: its slot comes from a hash of its name (the same
  // on every machine), moved to the next free slot only when a run shown now
  // already has it, and remembered in this browser. Each slot is a hue whose
  // lightness follows the theme, so lines keep a 3:1 contrast on both.

  // Eight colours that stay apart to the eye (the classic chart palette:
  // blue, orange, green, red, purple, brown, pink, cyan), as hue, saturation
  // and lightness on the dark and on the light theme; later rounds of slots
  // shift the hue and the lightness.
  const PALETTE = [
    [214, 85, 64, 42], [30, 92, 58, 40], [130, 55, 56, 32], [4, 80, 64, 44],
    [268, 70, 72, 50], [28, 38, 60, 36], [325, 75, 72, 44], [188, 72, 52, 30],
  ];
  const HUES = PALETTE.map((p) => p[0]);
  const STORAGE = "stream_hub:run-colours";
  const slots = new Map(); // run name -> slot
  try {
    for (const [name, slot] of Object.entries(JSON.parse(localStorage.getItem(STORAGE) || "{}"))) {
      if (Number.isInteger(slot)) slots.set(name, slot);
    }
  } catch (_) {
    // No storage: colours are still stable by name.
  }

  function hash(text) {
    let h = 2166136261;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 16777619);
    }
    return h >>> 0;
  }

  /** The colour slot of `name`, given the slots of the runs shown with it. */
  function colourSlot(name, taken) {
    let slot = slots.get(name);
    if (slot === undefined || taken.has(slot)) {
      const start = hash(name) % HUES.length;
      slot = start;
      for (let i = 0; i < HUES.length; i++) {
        const candidate = (start + i) % HUES.length;
        if (!taken.has(candidate)) {
          slot = candidate;
          break;
        }
      }
      // More runs than hues: the next round of slots gets shifted hues.
      while (taken.has(slot)) slot += HUES.length;
      slots.set(name, slot);
      try {
        const kept = Object.fromEntries(Array.from(slots).slice(-500));
        localStorage.setItem(STORAGE, JSON.stringify(kept));
      } catch (_) {
        // Not remembered; still stable by name.
      }
    }
    return slot;
  }

  /** #rrggbb of an HSL colour (h in degrees, s and l in percent). */
  function hex(h, s, l) {
    const a = (s / 100) * Math.min(l / 100, 1 - l / 100);
    const channel = (n) => {
      const k = (n + h / 30) % 12;
      const v = l / 100 - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
      return Math.round(v * 255).toString(16).padStart(2, "0");
    };
    return `#${channel(0)}${channel(8)}${channel(4)}`;
  }

  function luminance(colour) {
    const [r, g, b] = [1, 3, 5].map((i) => {
      const v = parseInt(colour.slice(i, i + 2), 16) / 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }

  // The panels' backgrounds (style.css): lines keep 3:1 against them.
  const PANEL = { dark: luminance("#161b22"), light: luminance("#ffffff") };

  /** An HSL colour made darker (light theme) or lighter (dark) until it has 3.2:1 on the panel. */
  function readable(hue, saturation, lightness, scheme) {
    const panel = PANEL[scheme] === undefined ? PANEL.dark : PANEL[scheme];
    let l = lightness;
    for (let i = 0; i < 40; i++) {
      const colour = hex(hue, saturation, l);
      const y = luminance(colour);
      const ratio = (Math.max(y, panel) + 0.05) / (Math.min(y, panel) + 0.05);
      if (ratio >= 3.2 || l <= 5 || l >= 95) return colour;
      l += scheme === "light" ? -2 : 2;
    }
    return hex(hue, saturation, l);
  }

  /** The colour (#rrggbb) of a slot in the current theme ("dark" or "light"). */
  /** A slot's hue, saturation and lightness in a theme. */
  function slotHsl(slot, scheme) {
    const round = Math.floor(slot / PALETTE.length);
    const [hue, saturation, dark, light] = PALETTE[slot % PALETTE.length];
    const shift = round === 0 ? 0 : (round % 2 ? 8 : -6);
    return [(hue + round * 17) % 360, saturation, (scheme === "light" ? light : dark) + shift];
  }

  /** The colour (#rrggbb) of a slot in the current theme ("dark" or "light"). */
  function slotColour(slot, scheme) {
    const [hue, saturation, lightness] = slotHsl(slot, scheme);
    return readable(hue, saturation, lightness, scheme);
  }

  /** Rank `i` of `n` in shades of the run's colour. */
  function rankColour(slot, scheme, i, n) {
    if (n <= 1) return slotColour(slot, scheme);
    const [hue, saturation, lightness] = slotHsl(slot, scheme);
    const f = i / (n - 1) - 0.5; // -0.5 .. 0.5
    return readable((hue + f * 20 + 360) % 360, saturation, lightness + f * (scheme === "light" ? 20 : 24), scheme);
  }

  // ---- the run list ---------------------------------------------------------------

  const STATE_LABEL = {
    running: "running", finished: "finished", failed: "failed", killed: "killed", stale: "stale",
  };

  /**
   * Rebuild the list (the focus stays on the same run's button).
   * handlers: {toggle(name), solo(name)}; groupBy: a config key (a heading
   * per group, its runs under it) or "".
   */
  function renderRuns(runs, handlers, groupBy = "") {
    const list = $("runs-list");
    const focused = document.activeElement;
    const keep = focused && list.contains(focused) && focused.closest(".run")
      ? { run: focused.closest(".run").dataset.run, solo: focused.classList.contains("run-solo") }
      : null;
    list.replaceChildren();
    const Sweeps = global.StreamHubSweeps;
    const groups = groupBy ? Sweeps.groupRuns(runs, groupBy) : [[null, runs]];
    for (const [group, members] of groups) {
      const folded = group !== null && foldedGroups.has(`${groupBy}\u0000${group}`);
      if (group !== null) list.append(groupHeading(groupBy, group, folded));
      for (const run of members) {
        renderRun(list, run, handlers);
        if (folded) list.lastElementChild.dataset.folded = "true";
      }
    }
    $("runs-empty").hidden = runs.length > 0;
    updateRuns(runs);
    if (keep) {
      const item = Array.from(list.children).find((node) => node.dataset.run === keep.run);
      const button = item && item.querySelector(keep.solo ? ".run-solo" : ".run-toggle");
      if (button) button.focus({ preventScroll: true });
    }
  }

  // Groups folded in the run list (their runs still drawn), this page's: "key\0label".
  const foldedGroups = new Set();

  /** A group's heading: a button folding its runs in the list (the charts keep them). */
  function groupHeading(key, label, folded) {
    const heading = document.createElement("li");
    heading.className = "run-group";
    heading.dataset.group = label;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "run-group-toggle";
    button.setAttribute("aria-expanded", String(!folded));
    button.title = "Fold or unfold this group's runs in the list (they stay on the charts)";
    const chevron = document.createElement("span");
    chevron.className = "chevron";
    chevron.setAttribute("aria-hidden", "true");
    const count = document.createElement("span");
    count.className = "run-group-count";
    button.append(chevron, document.createTextNode(`${key}=${label}`), count);
    button.addEventListener("click", () => {
      const fold = button.getAttribute("aria-expanded") === "true";
      if (fold) foldedGroups.add(`${key}\u0000${label}`); else foldedGroups.delete(`${key}\u0000${label}`);
      button.setAttribute("aria-expanded", String(!fold));
      for (let item = heading.nextElementSibling; item && !item.classList.contains("run-group");
        item = item.nextElementSibling) {
        if (fold) item.dataset.folded = "true"; else delete item.dataset.folded;
      }
    });
    heading.append(button);
    return heading;
  }

  /** One run's item of the list. */
  function renderRun(list, run, handlers) {
    const item = document.createElement("li");
    item.className = "run";
    item.dataset.run = run.name;
    item.style.setProperty("--swatch", run.color);
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "run-toggle";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.setAttribute("aria-hidden", "true");
    const title = document.createElement("span");
    title.className = "run-title";
    const name = document.createElement("span");
    name.className = "run-name";
    name.textContent = run.short || run.name;
    if (run.short && run.short !== run.name) {
      // Seen: the short name (its title: the whole); heard: the whole name.
      name.title = run.name;
      name.setAttribute("aria-hidden", "true");
      const whole = document.createElement("span");
      whole.className = "sr-only";
      whole.textContent = run.name;
      title.append(whole);
    }
    const alerts = document.createElement("span");
    alerts.className = "run-alerts";
    alerts.hidden = true;
    title.append(name, alerts);
    const step = document.createElement("span");
    step.className = "run-step";
    const meta = document.createElement("span");
    meta.className = "run-meta";
    const badge = document.createElement("span");
    badge.className = "run-state";
    const details = document.createElement("span");
    details.className = "run-details";
    const drops = document.createElement("span");
    drops.className = "run-drops";
    drops.hidden = true;
    // The step on the second line: the name has the first line's whole width.
    meta.append(step, badge, details, drops);
    toggle.append(swatch, title, meta);
    toggle.addEventListener("click", () => handlers.toggle(run.name));
    const solo = document.createElement("button");
    solo.type = "button";
    solo.className = "run-solo";
    solo.textContent = "solo";
    solo.title = `Show only ${run.name} (again: show all)`;
    solo.setAttribute("aria-label", `Show only ${run.name}`);
    solo.addEventListener("click", () => handlers.solo(run.name));
    item.append(toggle, solo);
    list.append(item);
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  function age(ts) {
    if (typeof ts !== "number") return "";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 2) return "updated now";
    if (s < 90) return `updated ${Math.round(s)} s ago`;
    if (s < 5400) return `updated ${Math.round(s / 60)} min ago`;
    return `updated ${Math.round(s / 3600)} h ago`;
  }

  /** A running run's ranks that went silent while others log on: a rank that fell off. */
  const SILENT_S = 30;
  function silentRanks(run) {
    if (run.state !== "running") return [];
    const seen = Object.entries(run.rankLastTs).filter(([, ts]) => typeof ts === "number");
    if (seen.length < 2) return [];
    const newest = Math.max(...seen.map(([, ts]) => ts));
    return seen.filter(([, ts]) => newest - ts > SILENT_S).map(([rank]) => rank).sort((a, b) => a - b);
  }

  /** Each rank's last metric, for the run's tooltip. */
  function rankTimes(run) {
    return Object.entries(run.rankLastTs)
      .sort(([a], [b]) => a - b)
      .map(([rank, ts]) => `rank ${rank}: ${age(ts).replace("updated ", "last metric ") || "no metric"}`)
      .join("\n");
  }

  /** The alert badge of a run: the count, coloured by the worst level; the latest title in its tooltip. */
  function updateAlerts(node, alerts) {
    const count = alerts.count;
    node.hidden = count === 0;
    if (!count) return;
    const level = alerts.level || "warning";
    const plural = count === 1 ? "" : "s";
    node.dataset.level = level;
    setText(node, `\u26a0 ${count}`);
    const tooltip = `${count} alert${plural}, the worst: ${level}\nlatest: ${alerts.title || ""}`;
    if (node.title !== tooltip) node.title = tooltip;
    node.setAttribute("aria-label", `${count} alert${plural}, the worst ${level}`);
  }

  // What is missing of a run, per cause (GET /api/runs' `dropped`): events lost, then values.
  const DROP_CAUSES = [
    ["forwarder", "events a joined process dropped before they reached the hub"],
    ["hub", "events the hub forgot before committing them (its loop fell far behind)"],
    ["store", "events the store could not write"],
    ["curve", "values left out of the curves (too many curves)"],
    ["sampled", "metric events the curves only sampled while the hub was overloaded (every extreme kept)"],
  ];

  /**
   * A run's drops: the events lost (forwarder, hub, store) and values left out
   * of its curves, with each cause in the tooltip; "sampled" alone when its
   * curves only missed points of an overload (their extremes were kept).
   */
  function updateDrops(node, dropped) {
    const lost = ["forwarder", "hub", "store", "curve"].reduce((sum, cause) => sum + (dropped[cause] || 0), 0);
    const sampled = dropped.sampled || 0;
    node.hidden = !lost && !sampled;
    if (node.hidden) return;
    node.dataset.kind = lost ? "lost" : "sampled";
    setText(node, lost ? `${lost.toLocaleString("en-US")} dropped` : "sampled");
    const lines = DROP_CAUSES.filter(([cause]) => dropped[cause])
      .map(([cause, what]) => `${cause}: ${dropped[cause].toLocaleString("en-US")} ${what}`);
    const tooltip = lines.join("\n");
    if (node.title !== tooltip) node.title = tooltip;
    node.setAttribute("aria-label", lost ? `${lost} dropped: ${lines.join("; ")}` : lines.join("; "));
  }

  /** Refresh what changes in place: visibility, state, step, counts, alerts, drops, what the search leaves out. */
  function updateRuns(runs) {
    const list = $("runs-list");
    const byName = new Map(runs.map((r) => [r.name, r]));
    let heading = null;
    let shown = 0;
    let total = 0;
    const closeGroup = () => {
      if (!heading) return;
      heading.hidden = shown === 0;
      setText(heading.querySelector(".run-group-count"), ` · ${shown === total ? total : `${shown} of ${total}`}`);
    };
    for (const item of list.children) {
      if (item.classList.contains("run-group")) {
        closeGroup();
        heading = item;
        shown = total = 0;
        continue;
      }
      const run = byName.get(item.dataset.run);
      if (!run) continue;
      const matched = run.matched !== false;
      if (item.hidden === matched) item.hidden = !matched;
      total += 1;
      if (matched) shown += 1;
      const visible = String(run.visible);
      if (item.dataset.visible !== visible) {
        item.dataset.visible = visible;
        const toggle = item.querySelector(".run-toggle");
        toggle.setAttribute("aria-pressed", visible);
        toggle.title = `${run.name}: click to ${run.visible ? "hide" : "show"}`;
      }
      item.style.setProperty("--swatch", run.color);
      item.dataset.state = run.state;
      setText(item.querySelector(".run-state"), STATE_LABEL[run.state] || run.state);
      setText(item.querySelector(".run-step"), run.lastStep == null ? "" : `step ${run.lastStep}`);
      const parts = [];
      if (run.ranks.size) parts.push(`${run.ranks.size} rank${run.ranks.size === 1 ? "" : "s"}`);
      const silent = silentRanks(run);
      if (silent.length) parts.push(`rank${silent.length === 1 ? "" : "s"} ${silent.join(", ")} silent`);
      parts.push(`${run.events} event${run.events === 1 ? "" : "s"}`);
      const updated = age(run.lastTs);
      if (updated) parts.push(updated);
      const details = item.querySelector(".run-details");
      setText(details, ` · ${parts.join(" · ")}`);
      const times = rankTimes(run);
      if (details.title !== times) details.title = times;
      item.dataset.silentRanks = silent.join(",");
      updateAlerts(item.querySelector(".run-alerts"), run.alerts);
      updateDrops(item.querySelector(".run-drops"), run.dropped);
    }
    closeGroup();
    const matched = runs.filter((run) => run.matched !== false).length;
    const empty = $("runs-empty");
    setText(empty, runs.length ? "No run matches the search." : "No runs yet.");
    empty.hidden = matched > 0;
  }

  // ---- hyper-parameters -------------------------------------------------------------

  function formatParam(value) {
    if (typeof value === "number") return formatValue(value);
    if (value === null || value === undefined) return "–";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  /**
   * The table of every run's `config`: a row per run, a column per key; keys
   * that differ marked, or (diffOnly) the only ones shown.
   */
  function renderParams(runs, diffOnly = false) {
    const withConfig = runs.filter((run) => Object.keys(run.config).length > 0);
    const panel = $("params-panel");
    panel.hidden = withConfig.length === 0;
    if (!withConfig.length) return;
    const keys = Array.from(new Set(withConfig.flatMap((run) => Object.keys(run.config)))).sort();
    const differs = new Set(
      keys.filter((key) => new Set(withConfig.map((run) => JSON.stringify(run.config[key]))).size > 1),
    );
    const toggle = $("params-diff");
    toggle.setAttribute("aria-pressed", String(diffOnly));
    const allKeys = keys.length;
    if (diffOnly) keys.splice(0, keys.length, ...keys.filter((key) => differs.has(key)));
    setText($("params-caption"), diffOnly
      ? `${differs.size} of ${allKeys} key${allKeys === 1 ? "" : "s"} differ${differs.size === 1 ? "s" : ""}`
      : "from config events; keys that differ are marked");
    const head = document.createElement("tr");
    const corner = document.createElement("th");
    corner.scope = "col";
    corner.textContent = "run";
    head.append(corner);
    for (const key of keys) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = key;
      th.dataset.key = key;
      if (differs.has(key)) {
        th.classList.add("differs");
        th.title = `${key}: differs between runs`;
      }
      head.append(th);
    }
    const body = document.createElement("tbody");
    for (const run of withConfig) {
      const row = document.createElement("tr");
      row.dataset.run = run.name;
      row.classList.toggle("hidden-run", !run.visible);
      const th = document.createElement("th");
      th.scope = "row";
      th.style.setProperty("--swatch", run.color);
      const swatch = document.createElement("span");
      swatch.className = "swatch-inline";
      th.append(swatch, document.createTextNode(run.short || run.name));
      if (run.short && run.short !== run.name) th.title = run.name;
      row.append(th);
      for (const key of keys) {
        const td = document.createElement("td");
        td.dataset.key = key;
        td.textContent = key in run.config ? formatParam(run.config[key]) : "–";
        if (differs.has(key)) td.classList.add("differs");
        row.append(td);
      }
      body.append(row);
    }
    const table = $("params-table");
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceWith(body);
  }

  global.StreamHubRuns = { colourSlot, slotColour, rankColour, renderRuns, updateRuns, renderParams };
})(window);
