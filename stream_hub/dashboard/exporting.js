/* stream_hub dashboard — a chart's downloads.
 *
 * CSV: the data behind the chart at full resolution — what REST's export
 * gives (GET /api/runs/{run}/export?format=csv&metric=NAME: the run's whole
 * record, from the store and the ring), not the drawn view. With one run
 * shown the file is that answer as it came; with several, each row gets its
 * run in a first column. A hub that keeps no store has only a window of each
 * run (X-Stream-Hub-Coverage: window): the page says so.
 * JSON: the same data, per run: {"metric", "runs": {run: {"steps", "values",
 * "ts", "ranks", "seqs"}}, "coverage": {run: "record" | "window"},
 * "window_events"?}, a point per event that has the metric; NaN and the
 * infinities spelled as on the wire ("NaN", "Infinity", "-Infinity").
 * PNG: the canvas as drawn, on the page's background, with the metric's name.
 */
(function (global) {
  "use strict";

  function safeName(text) {
    return String(text).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 120) || "chart";
  }

  function save(blob, filename) {
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function csvCell(text) {
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  /**
   * The export of one run's metric: {text (CSV with its header line),
   * coverage ("record": the run's whole record; "window": only the events
   * the hub still holds in memory, it keeps no store), windowEvents}.
   */
  async function fetchCsv(run, metric, token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const url = `/api/runs/${encodeURIComponent(run)}/export?format=csv&metric=${encodeURIComponent(metric)}`;
    const response = await fetch(url, { headers, cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const coverage = response.headers.get("X-Stream-Hub-Coverage") || "record";
    const windowEvents = Number(response.headers.get("X-Stream-Hub-Window-Events")) || null;
    return { text: await response.text(), coverage, windowEvents };
  }

  /** What a download tells its user when the hub had only a window of a run. */
  function windowNote(kind, metric, answers) {
    const windowed = answers.find((a) => a.coverage === "window");
    if (!windowed) return "";
    const n = windowed.windowEvents ? windowed.windowEvents.toLocaleString("en-US") : "few";
    return `${kind} of ${metric}: only the last ${n} events are in memory — this hub keeps no store, ` +
      "so older points are not in the file.";
  }

  /**
   * Download the CSV of `metric` for `runs` (names). Resolves to the file's
   * text; `note(text)` is told when the file holds only a window of a run.
   */
  async function downloadCsv(metric, runs, token, note) {
    const answers = await Promise.all(runs.map((run) => fetchCsv(run, metric, token)));
    const texts = answers.map((a) => a.text);
    let text;
    if (runs.length === 1) {
      text = texts[0];
    } else {
      const lines = [];
      texts.forEach((body, i) => {
        const rows = body.split(/\r?\n/);
        if (!lines.length) lines.push(`run,${rows[0]}`);
        for (const row of rows.slice(1)) if (row) lines.push(`${csvCell(runs[i])},${row}`);
      });
      text = lines.join("\r\n") + "\r\n";
    }
    save(new Blob([text], { type: "text/csv" }), `${safeName(metric)}.csv`);
    if (note) note(windowNote("CSV", metric, answers));
    return text;
  }

  /** A CSV value as JSON has it: a number, or the wire's spelling of a non-finite one; null when empty. */
  function jsonValue(text) {
    if (text === "") return null;
    const n = Number(text);
    if (Number.isFinite(n)) return n;
    const lower = text.toLowerCase();
    if (lower === "nan") return "NaN";
    if (lower === "inf" || lower === "infinity") return "Infinity";
    if (lower === "-inf" || lower === "-infinity") return "-Infinity";
    if (lower === "true" || lower === "false") return lower === "true" ? 1 : 0;
    return text;
  }

  /** One run's export (CSV: seq,ts,step,rank,<metric>) as columns. */
  function columns(text) {
    const out = { steps: [], values: [], ts: [], ranks: [], seqs: [] };
    const number = (cell) => (cell === "" ? null : Number(cell));
    for (const row of text.split(/\r?\n/).slice(1)) {
      if (!row) continue;
      // Numbers only: no cell is quoted but the header's.
      const cells = row.split(",");
      const value = jsonValue(cells.slice(4).join(","));
      if (value === null) continue; // an event of the run without this metric
      out.seqs.push(number(cells[0]));
      out.ts.push(number(cells[1]));
      out.steps.push(number(cells[2]));
      out.ranks.push(number(cells[3]));
      out.values.push(value);
    }
    return out;
  }

  /**
   * Download the JSON of `metric` for `runs` (names). Resolves to the
   * document: its `coverage` says, per run, "record" or "window" (then
   * `window_events`: how many events the hub keeps in memory).
   */
  async function downloadJson(metric, runs, token, note) {
    const answers = await Promise.all(runs.map((run) => fetchCsv(run, metric, token)));
    const data = { metric, runs: {}, coverage: {} };
    runs.forEach((run, i) => {
      data.runs[run] = columns(answers[i].text);
      data.coverage[run] = answers[i].coverage;
      if (answers[i].coverage === "window") data.window_events = answers[i].windowEvents;
    });
    save(new Blob([JSON.stringify(data)], { type: "application/json" }), `${safeName(metric)}.json`);
    if (note) note(windowNote("JSON", metric, answers));
    return data;
  }

  /** Download the chart as drawn (PNG). */
  function downloadPng(view, theme) {
    const source = view.canvas;
    const dpr = view.chart.dpr || 1;
    const title = 24 * dpr;
    const canvas = document.createElement("canvas");
    canvas.width = source.width;
    canvas.height = source.height + title;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = theme.panel;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = theme.text;
    ctx.font = `${13 * dpr}px ${theme.font}`;
    ctx.textBaseline = "middle";
    ctx.fillText(view.metric, 10 * dpr, title / 2);
    ctx.drawImage(source, 0, title);
    return new Promise((resolve) => {
      canvas.toBlob((blob) => {
        if (blob) save(blob, `${safeName(view.metric)}.png`);
        resolve(Boolean(blob));
      }, "image/png");
    });
  }

  global.StreamHubExport = { downloadCsv, downloadJson, downloadPng };
})(window);
