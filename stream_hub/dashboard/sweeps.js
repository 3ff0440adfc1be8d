/* stream_hub dashboard — sweeps: finding runs among many, grouping them by a
 * hyper-parameter, and names short enough to tell 50 runs apart.
 *
 *   search   words (all must match, case-insensitively) in the run's name or
 *            in one of its `key=value` hyper-parameters; a word `key=value`
 *            also matches a hyper-parameter of that value written otherwise
 *            (`lr=3e-4` matches lr 0.0003); `/regex/flags` is tried on the
 *            name and on each `key=value`. A regex that does not compile is
 *            said beside the box and filters nothing.
 *   group    a config key (a `group` key first, as wandb.init(group=...)
 *            names one): each chart draws a group's mean with a min–max
 *            band across its runs (the rank band's drawing); runs without
 *            the key are a group of their own ("–").
 *   names    the prefix every run shares (cut after a separator, at least
 *            FOLD_MIN characters) is folded into "…"; the full name stays
 *            in each title and accessible name.
 *
 * matcher(), groupRuns(), groupKeys() and compressNames() are pure;
 * RunFinder wires the Runs panel's search box and group select.
 */
(function (global) {
  "use strict";

  const FOLD_MIN = 6; // a shared prefix shorter than this stays
  const SEPARATORS = "/-_:, |@+"; // where a folded prefix may end (not inside a number: "lr=0.")
  const NO_VALUE = "\u2013";
  const $ = (id) => document.getElementById(id);
  /** Labels in natural order: numbers by value (0.0001 < 0.0003 < 0.001), then text ("run2" < "run10"). */
  const compareLabels = (a, b) => {
    const x = Number(a);
    const y = Number(b);
    const numbers = a.trim() !== "" && b.trim() !== "" && Number.isFinite(x) && Number.isFinite(y);
    if (numbers && x !== y) return x - y;
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  };

  /** A hyper-parameter as text (numbers as JavaScript writes them: 0.0003, 1e-7). */
  function paramText(value) {
    if (value === null || value === undefined) return NO_VALUE;
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  /** A number written as text ("3e-4", " 0.001"), or NaN. */
  function numeric(value) {
    if (typeof value === "number") return value;
    return typeof value === "string" && value.trim() !== "" ? Number(value) : NaN;
  }

  /** Does a config value equal the text of a `key=value` word (numbers by value: 3e-4 is 0.0003)? */
  function sameValue(value, text) {
    const a = numeric(value);
    const b = numeric(text);
    if (Number.isFinite(a) && Number.isFinite(b)) {
      return a === b || Math.abs(a - b) <= 1e-9 * Math.max(Math.abs(a), Math.abs(b));
    }
    return paramText(value).toLowerCase() === text.toLowerCase();
  }

  function configTexts(run) {
    const config = run.config || {};
    return Object.keys(config).map((key) => `${key}=${paramText(config[key])}`);
  }

  /**
   * The search `text` as {test(run) -> bool, error: null or a message,
   * active: whether it filters at all}.
   */
  function matcher(text) {
    const trimmed = String(text || "").trim();
    if (!trimmed) return { test: () => true, error: null, active: false };
    const re = /^\/(.*)\/([a-z]*)$/s.exec(trimmed);
    if (re) {
      let pattern;
      try {
        if (!re[1]) throw new SyntaxError("an empty expression");
        pattern = new RegExp(re[1], re[2].includes("i") ? re[2] : `${re[2]}i`);
      } catch (error) {
        const reason = String((error && error.message) || error).replace(/^Invalid regular expression: /, "");
        return { test: () => true, error: `Not a regular expression: ${reason}`, active: false };
      }
      const test = (run) => {
        pattern.lastIndex = 0; // a "g" or "y" flag keeps a position between tests
        if (pattern.test(run.name)) return true;
        return configTexts(run).some((t) => {
          pattern.lastIndex = 0;
          return pattern.test(t);
        });
      };
      return { test, error: null, active: true };
    }
    const words = trimmed.toLowerCase().split(/\s+/);
    const test = (run) => {
      const name = run.name.toLowerCase();
      const texts = configTexts(run).map((t) => t.toLowerCase());
      const config = run.config || {};
      return words.every((word) => {
        if (name.includes(word) || texts.some((t) => t.includes(word))) return true;
        const eq = word.indexOf("=");
        if (eq <= 0) return false;
        const key = word.slice(0, eq);
        const wanted = word.slice(eq + 1);
        return Object.keys(config).some((k) => k.toLowerCase() === key && sameValue(config[k], wanted));
      });
    };
    return { test, error: null, active: true };
  }

  /** The group label of a run under `key` (its value as text, "–" without the key). */
  function groupOf(run, key) {
    const config = run.config || {};
    return Object.prototype.hasOwnProperty.call(config, key) ? paramText(config[key]) : NO_VALUE;
  }

  /** Runs by group under `key`: [[label, runs]], labels in natural order ("–" last). */
  function groupRuns(runs, key) {
    const groups = new Map();
    for (const run of runs) {
      const label = groupOf(run, key);
      let members = groups.get(label);
      if (!members) groups.set(label, (members = []));
      members.push(run);
    }
    return Array.from(groups).sort(([a], [b]) => (a === NO_VALUE) - (b === NO_VALUE) || compareLabels(a, b));
  }

  /** The config keys runs can be grouped by: "group" first, then those that differ, then the rest. */
  function groupKeys(runs) {
    const values = new Map();
    for (const run of runs) {
      for (const [key, value] of Object.entries(run.config || {})) {
        let seen = values.get(key);
        if (!seen) values.set(key, (seen = new Set()));
        seen.add(paramText(value));
      }
    }
    const rank = (key) => (key === "group" ? 0 : values.get(key).size > 1 ? 1 : 2);
    return Array.from(values.keys()).sort((a, b) => rank(a) - rank(b) || compareLabels(a, b));
  }

  /**
   * Short names for `names`: {prefix, short: Map(name -> shown)}. The prefix
   * all of them share, cut after its last separator, is folded into "…"
   * when it is at least FOLD_MIN characters long and every name keeps
   * something after it; distinct names stay distinct.
   */
  function compressNames(names) {
    const short = new Map(names.map((n) => [n, n]));
    if (names.length < 2) return { prefix: "", short };
    let prefix = names[0];
    for (const name of names) {
      let i = 0;
      while (i < prefix.length && i < name.length && prefix.charCodeAt(i) === name.charCodeAt(i)) i++;
      prefix = prefix.slice(0, i);
      if (!prefix) break;
    }
    let cut = -1;
    for (let i = prefix.length - 1; i >= 0; i--) {
      // After a separator, and not before a digit ("2026-12-|07": the date stays whole).
      if (SEPARATORS.includes(prefix[i]) && !/[0-9]/.test(names[0].charAt(i + 1))) {
        cut = i + 1;
        break;
      }
    }
    prefix = cut > 0 ? prefix.slice(0, cut) : "";
    if (prefix.length < FOLD_MIN || names.some((n) => n.length <= prefix.length)) return { prefix: "", short };
    for (const name of names) short.set(name, `\u2026${name.slice(prefix.length)}`);
    return { prefix, short };
  }

  // ---- group colours: one per (key, label), the same in every chart ------------------------

  const groupSlots = new Map(); // key -> Map(label -> colour slot)

  function groupSlot(key, label, colourSlot) {
    let slots = groupSlots.get(key);
    if (!slots) groupSlots.set(key, (slots = new Map()));
    let slot = slots.get(label);
    if (slot === undefined) {
      slot = colourSlot(`\u0000group ${key}=${label}`, new Set(slots.values()));
      slots.set(label, slot);
    }
    return slot;
  }

  // ---- the Runs panel's search box and group select ------------------------------------

  class RunFinder {
    /** on: {change()} after the user changed the search or the grouping. */
    constructor(on) {
      this.on = on;
      this.query = "";
      this.group = "";
      this.match = matcher("");
      this.keys = [];
      this.input = $("run-search");
      this.select = $("run-group");
      this.error = $("run-search-error");
      this.input.addEventListener("input", () => {
        if (this.setQuery(this.input.value)) this.on.change();
      });
      this.select.addEventListener("change", () => {
        if (this.setGroup(this.select.value)) this.on.change();
      });
    }

    matches(run) {
      return this.match.test(run);
    }

    /** The search text (from the box or the URL); false when unchanged. */
    setQuery(text) {
      const query = String(text || "");
      if (this.input.value !== query) this.input.value = query;
      if (query === this.query) return false;
      this.query = query;
      this.match = matcher(query);
      const error = this.match.error;
      this.error.hidden = !error;
      this.error.textContent = error || "";
      if (error) this.input.setAttribute("aria-invalid", "true"); else this.input.removeAttribute("aria-invalid");
      return true;
    }

    /** Group by a config key ("" for none); false when unchanged. */
    setGroup(key) {
      const group = String(key || "");
      if (group === this.group) return false;
      this.group = group;
      this.syncOptions();
      return true;
    }

    /** The group select's options from the runs' hyper-parameters (the chosen key kept). */
    setKeys(keys) {
      if (keys.length === this.keys.length && keys.every((k, i) => k === this.keys[i])) return;
      this.keys = keys;
      this.syncOptions();
    }

    syncOptions() {
      const keys = this.group && !this.keys.includes(this.group) ? [...this.keys, this.group] : this.keys;
      const none = document.createElement("option");
      none.value = "";
      none.textContent = "no grouping";
      const options = [none, ...keys.map((key) => {
        const option = document.createElement("option");
        option.value = key;
        option.textContent = key;
        return option;
      })];
      this.select.replaceChildren(...options);
      this.select.value = this.group;
      this.select.disabled = keys.length === 0;
    }

    /** "12 of 50 runs" beside the box while a search filters. */
    showCount(matched, total) {
      const count = $("run-search-count");
      const text = this.match.active ? `${matched} of ${total}` : "";
      if (count.textContent !== text) count.textContent = text;
      count.hidden = !text;
    }
  }

  global.StreamHubSweeps = {
    matcher, groupOf, groupRuns, groupKeys, compressNames, groupSlot, paramText, RunFinder, NO_VALUE,
  };
})(window);
