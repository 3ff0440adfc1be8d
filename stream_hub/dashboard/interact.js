/* stream_hub dashboard — what the pointer and the keyboard do to a chart.
 *
 *   drag                 zoom to the dragged x range
 *   Shift+drag           pan
 *   double-click         back to everything (also 0, Home or Escape)
 *   click                pick that step (the comparison table shows it)
 *   + / -                zoom in / out around the middle (out: never past the data)
 *   ← / →                pan by a fifth
 *
 * The chart canvas is focusable (tabindex 0) so all of it works from the
 * keyboard. A zoom ends in hooks.onZoom(range | null); the app fetches finer
 * data for it. Panning redraws as it goes and asks for data once released.
 */
(function (global) {
  "use strict";

  const DRAG_PX = 4; // less than this is a click

  /**
   * The range `-` zooms out to from [a, b]: twice as wide around the middle,
   * kept inside the data's extent [x0, x1] (null: everything, once it covers it).
   */
  function zoomOut([a, b], extent) {
    const span = b - a;
    let lo = a - span / 2;
    let hi = b + span / 2;
    if (!extent) return [lo, hi];
    const [x0, x1] = extent;
    if (hi - lo >= x1 - x0) return null;
    if (lo < x0) [lo, hi] = [x0, hi + (x0 - lo)];
    if (hi > x1) [lo, hi] = [lo - (hi - x1), x1];
    return [lo, hi];
  }

  /**
   * Wire a LineChart to its canvas. hooks: {onChange(), onZoom(range),
   * onClick(x), onHover(info), extent() -> the data's x range or null}.
   */
  function attach(chart, hooks) {
    const canvas = chart.canvas;
    let drag = null;

    const inPlot = (x) => chart.box && x >= chart.box.left && x <= chart.box.right;

    canvas.addEventListener("pointermove", (e) => {
      chart.hover = { x: e.offsetX, y: e.offsetY, clientX: e.clientX, clientY: e.clientY };
      if (drag) {
        drag.moved = drag.moved || Math.abs(e.offsetX - drag.startX) >= DRAG_PX;
        if (drag.mode === "pan" && drag.moved) {
          const shift = (e.offsetX - drag.startX) / drag.scale;
          chart.zoom = [drag.range[0] - shift, drag.range[1] - shift];
        } else if (drag.mode === "zoom" && drag.moved) {
          chart.selection = [drag.startX, e.offsetX];
        }
      }
      hooks.onChange();
    });

    canvas.addEventListener("pointerleave", () => {
      chart.hover = null;
      hooks.onHover(null);
      hooks.onChange();
    });

    canvas.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || !chart.box || !inPlot(e.offsetX)) return;
      canvas.setPointerCapture(e.pointerId);
      drag = {
        startX: e.offsetX,
        mode: e.shiftKey ? "pan" : "zoom",
        moved: false,
        range: chart.zoom || chart.xRange,
        scale: chart.box.scale,
        zoomed: Boolean(chart.zoom),
      };
    });

    const finish = (e) => {
      if (!drag) return;
      const done = drag;
      drag = null;
      chart.selection = null;
      if (!done.moved) {
        if (e.type === "pointerup") hooks.onClick(chart.xAt(e.offsetX));
      } else if (done.mode === "zoom") {
        const a = chart.xAt(Math.min(done.startX, e.offsetX));
        const b = chart.xAt(Math.max(done.startX, e.offsetX));
        if (b > a) setZoom([a, b]);
      } else {
        setZoom(chart.zoom);
      }
      hooks.onChange();
    };
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointercancel", finish);

    canvas.addEventListener("dblclick", (e) => {
      e.preventDefault();
      setZoom(null);
    });

    canvas.addEventListener("keydown", (e) => {
      const range = chart.zoom || chart.xRange;
      if (!range) return;
      const [a, b] = range;
      const span = b - a;
      const middle = (a + b) / 2;
      let next;
      switch (e.key) {
        case "+":
        case "=":
          next = [middle - span / 4, middle + span / 4];
          break;
        case "-":
        case "_":
          next = chart.zoom ? zoomOut(chart.zoom, hooks.extent ? hooks.extent() : null) : undefined;
          break;
        case "ArrowLeft":
          next = [a - span / 5, b - span / 5];
          break;
        case "ArrowRight":
          next = [a + span / 5, b + span / 5];
          break;
        case "0":
        case "Home":
        case "Escape":
          next = chart.zoom ? null : undefined;
          break;
        default:
          return;
      }
      e.preventDefault();
      if (next !== undefined) setZoom(next);
    });

    function setZoom(range) {
      chart.zoom = range ? [range[0], range[1]] : null;
      hooks.onZoom(chart.zoom);
      hooks.onChange();
    }

    return { setZoom };
  }

  global.StreamHubInteract = { attach, zoomOut };
})(window);
