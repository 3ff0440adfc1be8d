/* stream_hub dashboard — a chart's downloads.
 *
 * CSV: the data behind the chart at the best resolution the hub holds — what
 * REST's export gives (GET /api/runs/{run}/export?format=csv&metric=NAME: the
 * ring's events, and the store's when there is one), not the drawn view. With
 * one run shown the file is that answer as it came; with several, each row
 * gets its run in a first column.
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

  /** The export of one run's metric as text (CSV with its header line). */
  async function fetchCsv(run, metric, token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const url = `/api/runs/${encodeURIComponent(run)}/export?format=csv&metric=${encodeURIComponent(metric)}`;
    const response = await fetch(url, { headers, cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.text();
  }

  /** Download the CSV of `metric` for `runs` (names). Resolves to the file's text. */
  async function downloadCsv(metric, runs, token) {
    const texts = await Promise.all(runs.map((run) => fetchCsv(run, metric, token)));
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
    return text;
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

  global.StreamHubExport = { downloadCsv, downloadPng };
})(window);
