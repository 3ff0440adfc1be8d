/* stream_hub dashboard — which runs are shown: every run but some ("hide"),
 * or only some ("only": what *solo* and *none* make). A run not heard of yet
 * follows the same rule when it appears: after *solo*, a new run stays
 * hidden; otherwise it shows. Kept in the URL (urlstate.js), not in the browser.
 */
(function (global) {
  "use strict";

  class RunSelection {
    constructor() {
      this.only = false; // true: `names` are the runs shown; false: the runs hidden
      this.names = new Set();
    }

    shows(name) {
      return this.only ? this.names.has(name) : !this.names.has(name);
    }

    /** Show or hide one run, the others as they are. */
    set(name, visible) {
      if (this.only === visible) this.names.add(name); else this.names.delete(name);
    }

    showAll() {
      this.only = false;
      this.names.clear();
    }

    showNone() {
      this.only = true;
      this.names.clear();
    }

    solo(name) {
      this.only = true;
      this.names = new Set([name]);
    }

    /** {only, names} as parsed from a URL. */
    assign({ only, names }) {
      this.only = Boolean(only);
      this.names = new Set(names);
    }

    describe() {
      return { only: this.only, names: Array.from(this.names) };
    }
  }

  global.StreamHubSelection = { RunSelection };
})(window);
