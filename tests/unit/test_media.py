"""Media events (contract v3, "New event types"): the checks of ``histogram``
and ``image`` data, and their byte budget in the ring, apart from metrics."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from stream_hub.core.cursor import HubCounters
from stream_hub.core.hub import Hub
from stream_hub.core.ring import JSON, Ring
from stream_hub.events import (
    MAX_HISTOGRAM_BINS,
    MAX_IMAGE_BYTES,
    encode_data,
    validate_data,
    validate_histogram,
    validate_image,
)

from ..conftest import need

EPOCH = "e" * 32
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()


def image(b64: str = PNG, **changes: Any) -> dict[str, Any]:
    return {"tag": "sample", "mime": "image/png", "width": 4, "height": 3, "b64": b64, **changes}


# -- the checks --------------------------------------------------------------------------


def test_a_histogram_is_kept_as_float_lists() -> None:
    data = validate_histogram({"tag": "w", "edges": (0, 1, 2.5), "counts": [3, 0]})
    assert data == {"tag": "w", "edges": [0.0, 1.0, 2.5], "counts": [3.0, 0.0]}
    assert validate_data("histogram", {"tag": "w", "edges": [0, 0], "counts": [5]})["counts"] == [5.0]


@pytest.mark.parametrize(
    ("data", "kind", "says"),
    [
        ([1, 2], TypeError, "must be an object"),
        ({"tag": "w", "edges": [0, 1]}, TypeError, "needs counts"),
        ({"tag": "w", "edges": [0, 1], "counts": [1], "extra": 1}, TypeError, "unknown field(s) extra"),
        ({"tag": "", "edges": [0, 1], "counts": [1]}, TypeError, "tag must be a non-empty str"),
        ({"tag": "w", "edges": [0, 1, 2], "counts": [1]}, ValueError, "one more than its counts"),
        ({"tag": "w", "edges": [1, 0], "counts": [1]}, ValueError, "must not decrease"),
        ({"tag": "w", "edges": [0, 1], "counts": [-1]}, ValueError, "must not be negative"),
        ({"tag": "w", "edges": [0, float("nan")], "counts": [1]}, ValueError, "finite"),
        ({"tag": "w", "edges": [0, "1"], "counts": [1]}, TypeError, "must hold numbers"),
        ({"tag": "w", "edges": [0], "counts": []}, ValueError, "1 to 512 bins"),
        (
            {
                "tag": "w",
                "edges": list(range(MAX_HISTOGRAM_BINS + 2)),
                "counts": [1] * (MAX_HISTOGRAM_BINS + 1),
            },
            ValueError,
            "1 to 512 bins",
        ),
    ],
)
def test_a_histogram_that_is_not_one_is_refused_saying_why(
    data: Any, kind: type[Exception], says: str
) -> None:
    with pytest.raises(kind, match=None) as caught:
        validate_histogram(data)
    assert says in str(caught.value)


def test_an_image_is_checked_field_by_field() -> None:
    assert validate_image(image()) == image()
    for changes, says in [
        ({"mime": "image/svg+xml"}, "image mime must be one of"),
        ({"width": 0}, "width must be an int from 1"),
        ({"height": 2.0}, "height must be an int"),
        ({"b64": ""}, "1 to 262144 characters"),
        ({"b64": "A" * (MAX_IMAGE_BYTES + 4)}, "scale the image down"),
        ({"b64": "not base64!"}, "not base64"),
    ]:
        with pytest.raises(ValueError) as caught:
            validate_image(image(**changes))
        assert says in str(caught.value), changes
    with pytest.raises(TypeError, match="needs b64"):
        validate_image({k: v for k, v in image().items() if k != "b64"})


def test_publish_checks_media_in_the_callers_thread() -> None:
    hub = Hub(history_size=10)
    with pytest.raises(ValueError, match="edges must not decrease"):
        hub.intake.publish("histogram", {"tag": "w", "edges": [2, 1], "counts": [1]})
    with pytest.raises(ValueError, match="image mime"):
        hub.intake.publish("image", image(mime="text/html"))
    seq = hub.intake.publish("histogram", {"tag": "w", "edges": [0, 1], "counts": [2]}, run="r", step=3)
    assert seq == 1


# -- the media budget -----------------------------------------------------------------------


def flat(seq: int, event_type: str, payload: Any) -> list[Any]:
    return [seq, 1000.0 + seq, event_type, "r", seq, payload, None]


def events(ring: Ring) -> list[dict[str, Any]]:
    ring.encode_all()
    return [json.loads(body) for body in ring.json_range(ring.oldest, ring.head)]


def test_media_past_their_budget_leave_as_gaps_and_metrics_stay() -> None:
    big = image("A" * 200_000)  # about 600 KB charged (three encodings)
    ring = Ring(100, EPOCH, HubCounters(), max_bytes=1 << 20, media_max_bytes=1 << 20)
    batch: list[Any] = []
    for seq in range(1, 21):
        kind, payload = ("image", encode_data(big)) if seq % 2 else ("metric", {"x": float(seq)})
        batch += flat(seq, kind, payload)
    ring.store(batch, 20, lambda *args: None, {})
    kept = events(ring)
    assert [e["seq"] for e in kept] == list(range(1, 21))  # one unbroken stretch, every metric kept
    assert [e["seq"] for e in kept if e["type"] == "metric"] == list(range(2, 21, 2))
    images = [e["seq"] for e in kept if e["type"] == "image"]
    gaps = [e for e in kept if e["type"] == "gap"]
    assert images and images[-1] == 19 and len(images) <= 2
    assert all(g["data"]["reason"] == "media" and g["data"]["type"] == "image" for g in gaps)
    assert len(images) + len(gaps) == 10 and ring.media_dropped == len(gaps)
    assert ring.media_bytes <= 1 << 20 and ring.bytes < 1 << 20


def test_a_media_event_a_reader_encoded_ahead_leaves_as_its_gap() -> None:
    # A reader following from the head encodes its own events ahead of the
    # unread ones (Ring.encode_range); an image so encoded and then pushed
    # out of the media budget must be sent as its gap, not as the image.
    big = image("A" * 200_000)  # about 600 KB charged once encoded
    ring = Ring(100, EPOCH, HubCounters(), max_bytes=1 << 24, media_max_bytes=1 << 20)
    batch = (
        flat(1, "image", encode_data(big))
        + flat(2, "image", encode_data(big))
        + flat(3, "metric", {"x": 1.0})
    )
    ring.store(batch, 3, lambda *args: None, {})
    ring.encode_range(2, 2)
    ring.store(flat(4, "image", encode_data(big)), 1, lambda *args: None, {})
    ring.encode_range(4, 4)
    kept = {e["seq"]: e for e in events(ring)}
    assert [kept[seq]["type"] for seq in (1, 2, 3, 4)] == ["gap", "gap", "metric", "image"]
    assert kept[2]["data"] == {"lost": 1, "from": 2, "to": 2, "reason": "media", "type": "image"}


def test_media_leaving_the_ring_with_old_events_are_no_longer_charged() -> None:
    ring = Ring(4, EPOCH, HubCounters(), media_max_bytes=1 << 30)
    batch: list[Any] = []
    for seq in range(1, 4):
        batch += flat(seq, "histogram", encode_data({"tag": "w", "edges": [0, 1], "counts": [seq]}))
    ring.store(batch, 3, lambda *args: None, {})
    assert ring.media_bytes > 0
    batch = []
    for seq in range(4, 10):
        batch += flat(seq, "metric", {"x": 1.0})
    ring.store(batch, 6, lambda *args: None, {})
    ring.encode_all()
    assert ring.media_bytes == 0 and ring.media_dropped == 0


def test_a_hub_serves_histograms_and_images_like_any_event() -> None:
    hub = Hub(history_size=50)
    hub.intake.publish("histogram", {"tag": "w", "edges": [0, 1, 2], "counts": [1, 2]}, run="r", step=1)
    hub.intake.publish("image", image(), run="r", step=1)
    hub.intake.commit()
    hub.ring.encode_all()
    bodies = [json.loads(b) for b in hub.ring.json_range(1, 2)]
    assert bodies[0]["data"] == {"tag": "w", "edges": [0.0, 1.0, 2.0], "counts": [1.0, 2.0]}
    assert bodies[1]["data"] == image() and bodies[1]["step"] == 1
    assert hub.ring.select(JSON, 0, 2, lambda run, kind: kind == "image")[0] == [
        hub.ring.json_range(2, 2)[0].encode()
    ]


# -- what SummaryWriter makes of arrays (stream_hub/integrations/media.py) ------------------


def numpy() -> Any:
    """numpy (the [tensorboard] extra's): a skip without it, a failure in CI."""
    try:
        import numpy
    except ImportError:
        need(False, "numpy (pip install 'stream_hub[tensorboard]')")
        raise
    return numpy


def decode_png(b64: str) -> Any:
    """The pixels of a PNG media.png_image wrote (8-bit, filter 0 rows)."""
    import struct
    import zlib

    np = numpy()
    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack("!IIBB", raw[16:26])
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    idat = raw[raw.index(b"IDAT") + 4 : raw.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * channels)
    assert depth == 8 and not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, channels)


def test_histograms_of_arrays_count_every_finite_value_in_at_most_512_bins() -> None:
    np = numpy()
    from stream_hub.integrations.media import histogram_data, raw_histogram_data

    values = np.concatenate([np.arange(1000.0), [np.nan, np.inf]])
    data = histogram_data("w", values)
    assert data is not None and len(data["counts"]) == 64 and sum(data["counts"]) == 1000
    assert data["edges"][0] == 0 and data["edges"][-1] == 999
    assert validate_histogram(data) == data
    merged = histogram_data("w", values, bins=5000)
    assert (
        merged is not None and len(merged["counts"]) <= MAX_HISTOGRAM_BINS and sum(merged["counts"]) == 1000
    )
    auto = histogram_data("w", [1.0, 2.0, 3.0], bins="auto", max_bins=2)
    assert auto is not None and len(auto["counts"]) <= 2 and sum(auto["counts"]) == 3
    assert histogram_data("w", [np.nan]) is None
    raw = raw_histogram_data("w", -1.0, 3.0, [0.0, 1.0, 1e308], [2, 3, 4])
    assert raw == {"tag": "w", "edges": [-1.0, 0.0, 1.0, 3.0], "counts": [2.0, 3.0, 4.0]}


def test_histograms_of_any_range_and_of_edges_tensorboard_takes() -> None:
    """Values whose span overflows a float (near ±1.8e308) and explicit edges
    reaching to ±inf: TensorBoard's writer takes both; each is a valid
    histogram event here (numpy raised, or the infinite edges were refused)."""
    np = numpy()
    from stream_hub.integrations.media import histogram_data

    wide = histogram_data("w", np.array([-1e308, 0.0, 1e308]))
    assert wide is not None and validate_histogram(wide) == wide
    assert sum(wide["counts"]) == 3 and (wide["edges"][0], wide["edges"][-1]) == (-1e308, 1e308)
    counted = histogram_data("w", np.array([-1.7e308, 1.7e308]), bins=np.int64(7))
    assert counted is not None and len(counted["counts"]) == 7 and validate_histogram(counted)
    assert histogram_data("w", [-1e308, 1e308], bins="auto") is not None
    values = np.array([-3.0, -1.0, 0.5, 2.0, 10.0])
    open_ended = histogram_data("w", values, bins=[-np.inf, 0.0, 1.0, np.inf])
    assert open_ended == {"tag": "w", "edges": [-3.0, 0.0, 1.0, 10.0], "counts": [2.0, 1.0, 2.0]}
    assert validate_histogram(open_ended) == open_ended


def test_images_become_pngs_that_decode_to_their_pixels() -> None:
    np = numpy()
    from stream_hub.integrations.media import image_grid, image_pixels, png_image

    chw = np.linspace(0.0, 1.0, 12).reshape(1, 3, 4).repeat(3, axis=0)  # CHW floats in [0, 1]
    pixels = image_pixels(chw, "CHW")
    assert pixels.shape == (3, 4, 3) and pixels.dtype == np.uint8 and pixels[-1, -1, 0] == 255
    encoded = png_image(pixels)
    assert (encoded.width, encoded.height, encoded.downscaled) == (4, 3, False)
    assert (decode_png(encoded.b64) == pixels).all()
    assert validate_image(encoded.data("t"))["width"] == 4
    assert image_pixels(np.zeros((5, 6), dtype=np.uint8), "HW").shape == (5, 6, 1)
    assert image_pixels(np.zeros((5, 6, 4)), "HWC").shape == (5, 6, 4)
    with pytest.raises(ValueError, match="needs 3 dimensions"):
        image_pixels(np.zeros((5, 6)), "CHW")
    with pytest.raises(ValueError, match="1 to 4 channels"):
        image_pixels(np.zeros((5, 5, 6)), "CHW")
    # Grey and alpha, as TensorBoard takes it (it was refused): a PNG of colour type 4.
    grey_alpha = image_pixels(np.stack([np.full((5, 6), 0.5), np.ones((5, 6))]), "CHW")
    assert grey_alpha.shape == (5, 6, 2)
    assert (decode_png(png_image(grey_alpha).b64) == grey_alpha).all()
    assert image_grid(np.zeros((3, 2, 4, 4)), "NCHW").shape == (4, 12, 2)
    grid = image_grid(np.ones((9, 1, 2, 3)), "NCHW")
    assert grid.shape == (4, 24, 1) and grid[:2].all() and grid[2:, :3].all() and not grid[2:, 3:].any()


def test_an_image_over_the_budget_is_halved_until_it_fits() -> None:
    np = numpy()
    from stream_hub.integrations.media import png_image

    noise = np.random.default_rng(0).integers(0, 256, (256, 200, 3), dtype=np.uint8)
    encoded = png_image(noise, max_b64=40_000)
    assert len(encoded.b64) <= 40_000 and encoded.downscaled
    assert encoded.original == (200, 256) and (encoded.width, encoded.height) in {
        (100, 128),
        (50, 64),
        (25, 32),
    }
    assert decode_png(encoded.b64).shape == (encoded.height, encoded.width, 3)


def test_an_image_longer_than_an_events_side_is_halved_until_it_fits() -> None:
    """A long strip (1 x 40 000: a waveform, a row of tiles) compresses to a
    few bytes, but an ``image`` event's sides stop at 32 768 pixels: it is
    halved to fit them (the event was refused, the caller's script crashed)."""
    np = numpy()
    from stream_hub.events import MAX_IMAGE_SIDE
    from stream_hub.integrations.media import image_pixels, png_image

    encoded = png_image(image_pixels(np.zeros((1, 1, 40_000)), "CHW"))
    assert (encoded.width, encoded.height, encoded.original) == (20_000, 1, (40_000, 1))
    assert validate_image(encoded.data("strip"))["width"] == 20_000 <= MAX_IMAGE_SIDE
    tall = png_image(np.zeros((70_000, 3, 1), dtype=np.uint8))
    assert (tall.width, tall.height) == (1, 17_500) and validate_image(tall.data("tall"))


def test_a_huge_image_is_not_encoded_whole_to_learn_it_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """add_image runs in the training thread: a 2048 x 2048 photo-like image
    (noise: it compresses least) is judged from a sample and halved before
    any PNG of it is made (each PNG of it whole took about a second at 4096);
    a flat one of the same size, which fits, is still kept whole."""
    np = numpy()
    from stream_hub.integrations import media

    encoded_sides: list[tuple[int, int]] = []
    png = media._png

    def counted(pixels: Any) -> bytes:
        encoded_sides.append((int(pixels.shape[1]), int(pixels.shape[0])))
        return png(pixels)

    monkeypatch.setattr(media, "_png", counted)
    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    encoded = media.png_image(noise)
    assert len(encoded.b64) <= MAX_IMAGE_BYTES and encoded.downscaled
    assert max(encoded_sides) <= (512, 512), encoded_sides
    encoded_sides.clear()
    flat = media.png_image(np.full((2048, 2048, 3), 200, dtype=np.uint8))
    assert (flat.width, flat.height, flat.downscaled) == (2048, 2048, False) and encoded_sides == [
        (2048, 2048)
    ]


def test_float_images_are_scaled_as_tensorboard_scales_them() -> None:
    """x * 255 in float32, clipped, truncated: TensorBoard's own pixels."""
    np = numpy()
    from stream_hub.integrations.media import image_pixels

    x = np.random.default_rng(1).random((3, 32, 32))
    theirs = (x.transpose(1, 2, 0).astype(np.float32) * 255).clip(0, 255).astype(np.uint8)
    assert (image_pixels(x, "CHW") == theirs).all()
    assert (
        image_pixels(x.astype(np.float16), "CHW")
        == image_pixels(x.astype(np.float16).astype(np.float32), "CHW")
    ).all()
    assert image_pixels(np.array([[[np.nan, np.inf, -np.inf, 2.0, -1.0]]]), "CHW").ravel().tolist() == [
        0,
        255,
        0,
        255,
        0,
    ]
