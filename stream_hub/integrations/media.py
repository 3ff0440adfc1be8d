"""Histograms and images as the hub's ``histogram`` and ``image`` events take
them (contract v3, "New event types"), from what TensorBoard's writer is
given: numpy arrays, torch tensors, lists, matplotlib figures.

Pure functions over numpy (imported when first needed: every caller passes
arrays or tensors, so it is installed); the PNG encoder is the standard
library's zlib, so no imaging package is needed.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from ..events import MAX_HISTOGRAM_BINS, MAX_IMAGE_BYTES, MAX_IMAGE_SIDE
from ._hub import require

__all__ = [
    "DEFAULT_BINS",
    "EncodedImage",
    "as_array",
    "figure_pixels",
    "histogram_data",
    "image_grid",
    "image_pixels",
    "png_image",
    "raw_histogram_data",
]

#: Bins of a histogram when TensorBoard's writer is not told how many.
DEFAULT_BINS = 64


def _numpy() -> Any:
    return require("numpy", "tensorboard", "SummaryWriter's histograms and images")


def as_array(values: Any) -> Any:
    """A numpy array of ``values``: a tensor (detached, on the CPU), an array, a list."""
    np = _numpy()
    detach = getattr(values, "detach", None)
    if callable(detach):
        values = detach().cpu()
        if str(values.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


# -- histograms --------------------------------------------------------------------------


def histogram_data(
    tag: str, values: Any, bins: Any = "tensorflow", max_bins: int | None = None
) -> dict[str, Any] | None:
    """The ``data`` of a ``histogram`` event of ``values`` (any shape; the
    non-finite ones left out), or None when no value is finite.

    ``bins``: a number of bins, one of numpy's methods (``"auto"``, ``"fd"``,
    ...), or TensorBoard's ``"tensorflow"`` (``DEFAULT_BINS`` equal bins);
    ``max_bins`` caps it. Never more than 512 bins: more are merged.
    """
    np = _numpy()
    flat = as_array(values).astype(np.float64, copy=False).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return None
    limit = MAX_HISTOGRAM_BINS if max_bins is None else max(1, min(int(max_bins), MAX_HISTOGRAM_BINS))
    if isinstance(bins, str) and bins == "tensorflow":
        how: Any = min(DEFAULT_BINS, limit)
    elif isinstance(bins, int) and not isinstance(bins, bool):
        how = max(1, min(bins, limit))
    else:
        how = bins  # a numpy method name, or explicit edges
    low, high = float(flat.min()), float(flat.max())
    if low == high:  # one value: numpy would widen the range by 0.5 each side; keep it exact
        return {"tag": tag, "edges": [low, high], "counts": [float(flat.size)]}
    if not math.isfinite(high - low) and (isinstance(how, (int, str)) or np.ndim(how) == 0):
        # The span overflows a float (values near ±1.8e308): numpy cannot
        # split it, so the equal edges are made from the halves (exact).
        parts = min(DEFAULT_BINS, limit) if isinstance(how, str) else max(1, min(int(how), limit))
        how = np.linspace(low / 2, high / 2, parts + 1) * 2
    counts, edges = np.histogram(flat, bins=how)
    if not np.isfinite(edges).all():  # explicit edges such as [-inf, 0, inf], as TensorBoard takes them
        edges = np.clip(edges, min(low, float(edges[1])), max(high, float(edges[-2])))
    counts, edges = _merged(counts.astype(np.float64), edges.astype(np.float64), limit)
    return {"tag": tag, "edges": edges.tolist(), "counts": counts.tolist()}


def raw_histogram_data(
    tag: str, low: float, high: float, bucket_limits: Sequence[float], bucket_counts: Sequence[float]
) -> dict[str, Any] | None:
    """The ``data`` of a ``histogram`` event from TensorBoard's raw form
    (``add_histogram_raw``: each bucket's right edge and count, the first
    bucket starting at ``min``); edges kept within [min, max]."""
    np = _numpy()
    limits = as_array(bucket_limits).astype(np.float64).ravel()
    counts = as_array(bucket_counts).astype(np.float64).ravel()
    if limits.size == 0 or limits.size != counts.size:
        return None
    low, high = float(low), float(high)
    edges = np.clip(np.concatenate(([low], limits)), low, max(low, high))
    edges = np.maximum.accumulate(edges)
    counts = np.clip(np.nan_to_num(counts, nan=0.0, posinf=0.0), 0.0, None)
    counts, edges = _merged(counts, edges, MAX_HISTOGRAM_BINS)
    return {"tag": tag, "edges": edges.tolist(), "counts": counts.tolist()}


def _merged(counts: Any, edges: Any, limit: int) -> tuple[Any, Any]:
    """At most ``limit`` bins: neighbours merged, ``factor`` at a time."""
    n = counts.size
    if n <= limit:
        return counts, edges
    np = _numpy()
    factor = -(-n // limit)
    starts = np.arange(0, n, factor)
    merged = np.add.reduceat(counts, starts)
    return merged, np.concatenate((edges[starts], edges[-1:]))


# -- images ------------------------------------------------------------------------------


class EncodedImage:
    """A PNG in base64 and what it took: its size, and the size it was given at."""

    __slots__ = ("b64", "height", "original", "width")

    def __init__(self, b64: str, width: int, height: int, original: tuple[int, int]) -> None:
        self.b64 = b64
        self.width = width
        self.height = height
        self.original = original  # (width, height) before any downscaling

    @property
    def downscaled(self) -> bool:
        return (self.width, self.height) != self.original

    def data(self, tag: str) -> dict[str, Any]:
        """The ``data`` of an ``image`` event."""
        return {"tag": tag, "mime": "image/png", "width": self.width, "height": self.height, "b64": self.b64}


def image_pixels(img: Any, dataformats: str = "CHW") -> Any:
    """An image as TensorBoard's ``add_image`` reads it, as HxWxC uint8 (C is
    1 to 4): floats are scaled by 255 (images in [0, 1]), uint8 kept, as
    TensorBoard does; ``dataformats`` is ``CHW``, ``HWC`` or ``HW``.

    Raises:
        ValueError: the array's shape does not fit ``dataformats``.
    """
    np = _numpy()
    array = as_array(img)
    formats = dataformats.upper()
    if len(formats) != array.ndim or sorted(formats) not in (sorted("CHW"), sorted("HW")):
        raise ValueError(
            f"an image of dataformats={dataformats!r} needs {len(formats)} dimensions "
            f"(C, H, W), got shape {tuple(array.shape)}"
        )
    if len(formats) == 2:
        array = array.transpose(formats.index("H"), formats.index("W"))[:, :, None]
    else:
        array = array.transpose(formats.index("H"), formats.index("W"), formats.index("C"))
    if not 1 <= array.shape[2] <= 4:
        raise ValueError(f"an image has 1 to 4 channels, got {array.shape[2]}")
    return _as_uint8(np, array)


def image_grid(images: Any, dataformats: str = "NCHW") -> Any:
    """A batch of images (``add_images``) as one HxWxC uint8 image: a grid of
    at most 8 columns, as TensorBoard lays them out.

    Raises:
        ValueError: the array's shape does not fit ``dataformats``.
    """
    np = _numpy()
    array = as_array(images)
    formats = dataformats.upper()
    if len(formats) != 4 or array.ndim != 4 or "N" not in formats:
        raise ValueError(
            f"a batch of images of dataformats={dataformats!r} needs 4 dimensions (N, C, H, W), "
            f"got shape {tuple(array.shape)}"
        )
    array = array.transpose(*(formats.index(axis) for axis in "NHWC"))
    if not 1 <= array.shape[3] <= 4:
        raise ValueError(f"an image has 1 to 4 channels, got {array.shape[3]}")
    tiles = _as_uint8(np, array)
    count, height, width, channels = tiles.shape
    columns = max(1, min(8, count))
    rows = -(-count // columns)
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    for k in range(count):
        row, column = divmod(k, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = tiles[k]
    return grid


def figure_pixels(figure: Any) -> Any:
    """A matplotlib figure rendered (Agg) as HxWx4 uint8."""
    np = _numpy()
    backend = require("matplotlib.backends.backend_agg", "tensorboard", "SummaryWriter.add_figure")
    canvas = backend.FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _as_uint8(np: Any, array: Any) -> Any:
    """uint8 kept; anything else times 255 in float32, as TensorBoard scales
    it (one new array, worked on in place: an image may be 50 M values)."""
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.iscomplexobj(array):
        array = array.real
    scaled = np.multiply(array, np.float32(255.0), dtype=np.float32)
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def png_image(pixels: Any, max_b64: int = MAX_IMAGE_BYTES) -> EncodedImage:
    """HxWxC uint8 pixels as a PNG in base64 of at most ``max_b64``
    characters and sides of at most ``MAX_IMAGE_SIDE``: halved (each pixel
    the mean of 2x2) until it fits."""
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    original = (width, height)
    while max(int(pixels.shape[0]), int(pixels.shape[1])) > MAX_IMAGE_SIDE:  # a long strip compresses well
        pixels = _halved(pixels)
    while _surely_over(pixels, max_b64):  # a huge image: halved before it is encoded whole
        pixels = _halved(pixels)
    while True:
        b64 = base64.b64encode(_png(pixels)).decode("ascii")
        h, w = int(pixels.shape[0]), int(pixels.shape[1])
        if len(b64) <= max_b64 or (h == 1 and w == 1):
            return EncodedImage(b64, w, h, original)
        pixels = _halved(pixels)


#: Bands of rows a huge image's compressed size is judged from (an eighth of it).
_BANDS = 8


def _surely_over(pixels: Any, max_b64: int) -> bool:
    """Whether the PNG of ``pixels`` is more than twice ``max_b64``, judged
    from :data:`_BANDS` bands of rows spread over the image, compressed as the
    PNG would be: encoding a 4096 x 4096 image whole to learn that it does not
    fit took seconds of the caller's thread. Small images are not judged."""
    np = _numpy()
    height = int(pixels.shape[0])
    row_bytes = 1 + int(pixels.shape[1]) * int(pixels.shape[2])
    if height < 8 * _BANDS or height * row_bytes < 8 * max_b64:
        return False
    band = height // (8 * _BANDS)
    starts = [k * height // _BANDS for k in range(_BANDS)]
    sample = np.concatenate([pixels[start : start + band] for start in starts])
    compressed = len(zlib.compress(_rows(sample).tobytes(), 6))
    estimate = compressed * (height / sample.shape[0]) * 4 / 3  # base64
    return bool(estimate > 2 * max_b64)


def _halved(pixels: Any) -> Any:
    np = _numpy()
    h, w = pixels.shape[0], pixels.shape[1]
    h2, w2 = max(1, h // 2), max(1, w // 2)
    even = pixels[: h2 * 2 if h > 1 else 1, : w2 * 2 if w > 1 else 1].astype(np.uint16)
    fy, fx = (2 if h > 1 else 1), (2 if w > 1 else 1)
    blocks = even.reshape(h2, fy, w2, fx, pixels.shape[2])
    return (blocks.sum(axis=(1, 3)) // (fy * fx)).astype(np.uint8)


_PNG_COLOUR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def _png(pixels: Any) -> bytes:
    """A PNG file (8 bits per channel, no filter) of HxWxC uint8 pixels."""
    height, width, channels = pixels.shape
    header = struct.pack("!IIBBBBB", width, height, 8, _PNG_COLOUR[channels], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(_rows(pixels).tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def _rows(pixels: Any) -> Any:
    """A PNG's scanlines of HxWxC uint8 pixels: filter byte 0, then the row."""
    np = _numpy()
    height, width, channels = pixels.shape
    rows = np.zeros((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 1:] = pixels.reshape(height, width * channels)
    return rows


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", zlib.crc32(kind + body))
