/* stream_hub dashboard — dense lines drawn as pixels.
 *
 * A line with a point every few pixels or closer is, once reduced to two
 * points per pixel column, a run of vertical spans. On a CPU-only browser
 * Skia's antialiased strokes of tens of thousands of such segments cost more
 * than everything else in a frame; writing the spans into a pixel buffer in
 * JavaScript and compositing it once (putImageData, then drawImage) costs a
 * small fraction of that, and looks the same at this density. Sparse lines,
 * bands, dots and text stay canvas paths.
 */
(function (global) {
  "use strict";

  const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

  /** "#rrggbb" (or "rgb(r, g, b)") with an alpha 0..1 as one RGBA pixel value. */
  function pixel(colour, alpha) {
    let r = 0;
    let g = 0;
    let b = 0;
    if (colour[0] === "#" && colour.length >= 7) {
      r = parseInt(colour.slice(1, 3), 16);
      g = parseInt(colour.slice(3, 5), 16);
      b = parseInt(colour.slice(5, 7), 16);
    } else {
      const m = colour.match(/[\d.]+/g);
      if (m) [r, g, b] = m.map(Number);
    }
    const a = Math.round(Math.max(0, Math.min(1, alpha)) * 255);
    return LITTLE_ENDIAN ? ((a << 24) | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | a) >>> 0;
  }

  /** A pixel buffer the size of a canvas, composited onto it in one drawImage. */
  class PixelLayer {
    constructor() {
      this.canvas = document.createElement("canvas");
      this.ctx = this.canvas.getContext("2d");
      this.image = null;
      this.data = null; // Uint32Array over the image's pixels
      this.width = 0;
      this.height = 0;
      this.dirty = false;
      this.written = 0; // pixels written since begin()
    }

    /** Start a drawing of `width` x `height` device pixels, clipped to `clip` (device px). */
    begin(width, height, clip) {
      if (width !== this.width || height !== this.height) {
        this.width = this.canvas.width = width;
        this.height = this.canvas.height = height;
        this.image = this.ctx.createImageData(width, height);
        this.data = new Uint32Array(this.image.data.buffer);
      } else if (this.dirty) {
        this.data.fill(0);
      }
      this.clip = clip;
      this.dirty = false;
      this.written = 0;
    }

    /**
     * A reduced line: px (CSS px, NaN breaks it) and values mapped by Y (CSS
     * px), `dpr` device pixels per CSS px, one pixel value. Consecutive
     * points are joined column by column: each column gets the span between
     * the line's heights at its two edges.
     */
    line(px, vals, Y, dpr, value) {
      const { data, width } = this;
      const { left, right, top, bottom } = this.clip;
      const thick = Math.max(1, Math.round(dpr));
      let x0 = NaN;
      let y0 = NaN;
      let written = 0;
      const span = (c, ya, yb) => {
        let a = ya < yb ? ya : yb;
        let b = ya < yb ? yb : ya;
        if (b < top || a > bottom) return;
        if (a < top) a = top;
        if (b > bottom) b = bottom;
        const from = Math.floor(a);
        const to = Math.floor(b);
        for (let k = 0; k < thick; k++) {
          const x = c + k;
          if (x < left || x > right) continue;
          for (let y = from, i = from * width + x; y <= to; y++, i += width) data[i] = value;
          written += to - from + 1;
        }
      };
      for (let i = 0; i < px.length; i++) {
        const x = px[i];
        if (Number.isNaN(x)) {
          x0 = NaN;
          continue;
        }
        const dx = x * dpr;
        const dy = Y(vals[i]) * dpr;
        if (Number.isNaN(x0)) {
          span(Math.floor(dx), dy, dy);
        } else {
          const c0 = Math.floor(x0);
          const c1 = Math.floor(dx);
          if (c1 <= c0) {
            span(c1, y0, dy);
          } else {
            // Across columns: each gets the span of the segment over it.
            const slope = (dy - y0) / (dx - x0);
            let ya = y0;
            for (let c = c0; c <= c1; c++) {
              const edge = c === c1 ? dx : c + 1;
              const yb = y0 + (edge - x0) * slope;
              span(c, ya, yb);
              ya = yb;
            }
          }
        }
        x0 = dx;
        y0 = dy;
      }
      this.written += written;
      if (written) this.dirty = true;
    }

    /** Composite what was drawn onto `ctx` (its transform is reset for the copy). */
    paint(ctx) {
      if (!this.dirty) return;
      this.ctx.putImageData(this.image, 0, 0);
      ctx.save();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(this.canvas, 0, 0);
      ctx.restore();
    }
  }

  global.StreamHubRaster = { PixelLayer, pixel };
})(window);
