"""The event model and its one JSON encoding, shared by every transport.

An event on the wire::

    {"seq": 42, "epoch": "3f2a...", "ts": 1764000000.123, "type": "metric",
     "run": "exp1", "step": 10, "metrics": {"loss": 0.12, "acc": 0.9}}

Non-metric events carry ``data`` instead of ``metrics``. Each event is encoded
to JSON once, and from that to an SSE frame and a WebSocket frame once; every
client of a transport is sent the same bytes.
"""

from __future__ import annotations

import binascii
import itertools
import math
import struct
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "ALERT_LEVELS",
    "IMAGE_MIMES",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_HISTOGRAM_BINS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "MAX_TS",
    "MEDIA_TYPES",
    "RESERVED_TYPES",
    "alert_data",
    "compose",
    "encode_data",
    "encode_event",
    "encode_template",
    "event_fields",
    "sse_frame",
    "validate_alert",
    "validate_data",
    "validate_histogram",
    "validate_image",
    "validate_metrics",
    "validate_rank",
    "validate_run",
    "validate_step",
    "validate_ts",
    "validate_type",
    "wire_numbers",
    "ws_text_frame",
]

# Types only the server emits; user code cannot publish them.
RESERVED_TYPES = frozenset({"gap", "shutdown", "error", "status"})

#: An ``alert`` event's levels, mildest first (contract v3, "New event types").
ALERT_LEVELS = ("info", "warning", "error")
_ALERT_KEYS = frozenset({"level", "title", "text", "metric", "source"})
_MAX_ALERT_TITLE = 200
_MAX_ALERT_TEXT = 4000

#: The event types whose data is media (contract v3, "New event types"): kept
#: in history under a byte budget of their own, so they never push metrics out.
MEDIA_TYPES = frozenset({"histogram", "image"})
#: The most bins a ``histogram`` event carries.
MAX_HISTOGRAM_BINS = 512
#: The most characters of an ``image`` event's ``b64`` (its encoded bytes).
MAX_IMAGE_BYTES = 256 * 1024
#: The image formats an ``image`` event may carry (browsers show each in an ``<img>``).
IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_HISTOGRAM_KEYS = frozenset({"tag", "edges", "counts"})
_IMAGE_KEYS = frozenset({"tag", "mime", "width", "height", "b64"})
#: The longest side of an ``image`` event, in pixels.
MAX_IMAGE_SIDE = 1 << 15

#: The steps and int metric values JSON carries exactly everywhere (orjson,
#: SQLite, the dashboard's BigInt-free JSON.parse aside): the signed 64-bit range.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_MAX_NAME = 200
_MAX_NESTING = 8
_DATA_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
#: The latest publish time accepted from a client (the year 2286).
MAX_TS = 1e10

# NaN and the infinities are not JSON numbers; they travel as these strings,
# which both float() in Python and Number() in JavaScript read back exactly.
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def validate_metrics(metrics: object) -> dict[str, Any]:
    """Check metric values in the caller's thread and return a private copy.

    Accepts ``int``, ``float``, ``bool`` and anything with ``__float__`` (numpy
    and 0-d torch scalars), which is converted to ``float``. An ``int`` beyond
    the signed 64-bit range is sent as a ``float`` (JSON carries it no other
    way); one too large even for a float is refused. Nested mappings are
    flattened with ``/``: ``{"train": {"loss": 0.1}}`` is ``{"train/loss": 0.1}``.

    Raises:
        TypeError: ``metrics`` is not a mapping of ``str`` to real numbers
            (or to mappings of them).
        ValueError: an ``int`` value is too large for a float (about 1.8e308),
            naming the metric.
    """
    # HOT PATH (training thread): the common case is one dict copy, one type
    # check per float and one range comparison per int; anything else takes
    # the slow branch. (Intake.log inlines this loop: keep the two alike.)
    if type(metrics) is not dict:
        if not hasattr(metrics, "items"):
            raise TypeError(f"metrics must be a mapping of name -> number, got {type(metrics).__name__}")
        metrics = dict(metrics.items())
    assert isinstance(metrics, dict)
    out: dict[str, Any] = metrics.copy()
    for key, value in out.items():
        if type(key) is not str or (
            type(value) is not float and (type(value) is not int or not INT64_MIN <= value <= INT64_MAX)
        ):
            return _coerce_slow(out)
    return out


def _coerce_slow(metrics: Mapping[Any, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """The values of ``metrics`` as int/float, nested mappings flattened."""
    if depth > _MAX_NESTING:
        raise TypeError(f"metrics nested deeper than {_MAX_NESTING} levels under {prefix[:-1]!r}")
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if type(key) is not str:
            raise TypeError(f"metric names must be str, got {key!r} ({type(key).__name__})")
        name = prefix + key
        kind = type(value)
        if kind is float:
            out[name] = value
        elif kind is int:
            out[name] = value if INT64_MIN <= value <= INT64_MAX else _wide_int(name, value)
        elif kind is bool:
            out[name] = int(value)
        elif isinstance(value, Mapping):
            out.update(_coerce_slow(value, name + "/", depth + 1))
        elif isinstance(value, (str, bytes, bytearray, complex)) or not hasattr(value, "__float__"):
            raise TypeError(
                f"metric {name!r} must be a real number (int, float, bool or a numeric "
                f"scalar) or a mapping of them, got {kind.__name__}: {value!r:.80}"
            )
        else:
            try:
                out[name] = float(value)
            except (TypeError, ValueError, OverflowError) as exc:
                raise TypeError(f"metric {name!r} could not be converted to float: {exc}") from None
    return out


def _wide_int(name: str, value: int) -> float:
    """An int metric beyond 64 bits, as the float JSON can carry (ValueError
    when even a float cannot hold it)."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"metric {name!r} is an int too large for a float (about 1.8e308), so JSON cannot carry "
            f"it: {'-' if value < 0 else ''}2**{value.bit_length() - 1} or more in magnitude"
        ) from None


def encode_data(data: object) -> bytes:
    """The JSON of a non-metric event's ``data``, made in the caller's thread.

    Encoding at publish time both copies the data (later changes to the
    caller's objects do not reach the event) and checks it (an object that
    is not JSON-able raises here, not later on the server). NaN and the
    infinities inside ``data`` become ``null``.

    Raises:
        TypeError: ``data`` cannot be encoded as JSON (or nests too deeply).
    """
    try:
        return orjson.dumps(data, option=_DATA_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"event data cannot be encoded as JSON: {exc}") from None


def validate_ts(ts: object) -> float | None:
    """A client-given publish time: Unix seconds from 0 to ``MAX_TS``, or None."""
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise TypeError(f"ts must be Unix seconds (a number), got {ts!r:.60}")
    value = float(ts)
    if not 0.0 <= value <= MAX_TS:
        raise TypeError(f"ts must be Unix seconds from 0 to {MAX_TS:.0f}, got {ts!r:.60}")
    return value


def validate_run(run: object, default: str = "default") -> str:
    """``run`` as a str (``default`` when None); TypeError otherwise."""
    if run is None:
        return default
    if type(run) is not str or not run or len(run) > _MAX_NAME:
        raise TypeError(f"run must be a non-empty str of at most {_MAX_NAME} characters, got {run!r}")
    return run


def validate_step(step: object) -> int | None:
    """``step`` as an int in the signed 64-bit range, or None.

    Raises:
        TypeError: ``step`` is not an int (or an object with ``__index__``).
        ValueError: ``step`` is outside the signed 64-bit range.
    """
    if step is None:
        return None
    if isinstance(step, bool) or not (isinstance(step, int) or hasattr(step, "__index__")):
        raise TypeError(f"step must be an int or None, got {type(step).__name__}: {step!r:.80}")
    value = int(step.__index__())
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"step must be within the signed 64-bit range (-2**63 to 2**63 - 1), got {value}")
    return value


def validate_type(event_type: object) -> str:
    """A publishable event type: a short word, not one of the reserved types."""
    if type(event_type) is not str or not event_type or len(event_type) > 64:
        raise TypeError(f"event type must be a non-empty str of at most 64 characters, got {event_type!r}")
    if not event_type.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise TypeError(f"event type may hold letters, digits, '_', '-', '.', got {event_type!r}")
    if event_type in RESERVED_TYPES:
        raise TypeError(f"event type {event_type!r} is reserved for the server")
    return event_type


def alert_data(
    title: object, text: object, level: object = "warning", metric: object = None, source: str = "user"
) -> dict[str, Any]:
    """The ``data`` of an ``alert`` event, checked: ``{"level", "title",
    "text", "metric"?, "source"}`` (``metric`` only when given).

    Raises:
        TypeError: ``title``, ``text`` or ``metric`` is not a str.
        ValueError: ``level`` is not info, warning or error; ``title`` is
            empty or longer than 200 characters, ``text`` longer than 4000,
            ``metric`` empty or longer than 200.
    """
    if level not in ALERT_LEVELS:
        raise ValueError(f"alert level must be one of {', '.join(ALERT_LEVELS)}, got {level!r:.60}")
    if type(title) is not str:
        raise TypeError(f"alert title must be a str, got {type(title).__name__}")
    if not title.strip() or len(title) > _MAX_ALERT_TITLE:
        raise ValueError(f"alert title must be a non-empty str of at most {_MAX_ALERT_TITLE} characters")
    if type(text) is not str:
        raise TypeError(f"alert text must be a str, got {type(text).__name__}")
    if len(text) > _MAX_ALERT_TEXT:
        raise ValueError(f"alert text must be at most {_MAX_ALERT_TEXT} characters, got {len(text)}")
    data: dict[str, Any] = {"level": level, "title": title, "text": text}
    if metric is not None:
        if type(metric) is not str:
            raise TypeError(
                f"alert metric must be a metric's name (a str) or None, got {type(metric).__name__}"
            )
        if not metric or len(metric) > _MAX_NAME:
            raise ValueError(f"alert metric must be a non-empty str of at most {_MAX_NAME} characters")
        data["metric"] = metric
    data["source"] = source
    return data


def validate_alert(data: object) -> dict[str, Any]:
    """The ``data`` of an ``alert`` a user publishes (``publish("alert", ...)``,
    ``POST /api/publish``), checked as :func:`alert_data` does, its ``source``
    ``"user"``: only the hub raises alerts with source ``"hub"``.

    Raises:
        TypeError: ``data`` is not an object of the alert's fields (an unknown
            field, a missing title or text, a field of the wrong type), or
            claims a source other than ``"user"``.
        ValueError: a field's value is out of range (see :func:`alert_data`).
    """
    if not isinstance(data, Mapping):
        raise TypeError('alert data must be an object: {"level", "title", "text", "metric"?}')
    unknown = set(data) - _ALERT_KEYS
    if unknown:
        raise TypeError(f"alert data has unknown field(s) {', '.join(sorted(map(str, unknown)))[:200]}")
    if "title" not in data or "text" not in data:
        raise TypeError('alert data needs "title" and "text"')
    source = data.get("source", "user")
    if source != "user":
        raise TypeError(
            f'a published alert\'s source is "user" (only the hub raises its own), got {source!r:.40}'
        )
    return alert_data(data["title"], data["text"], data.get("level", "warning"), data.get("metric"))


def _media_tag(kind: str, data: Mapping[Any, Any], keys: frozenset[str]) -> str:
    """The checked ``tag`` of a media event's ``data`` (and no unknown field)."""
    unknown = set(data) - keys
    if unknown:
        raise TypeError(f"{kind} data has unknown field(s) {', '.join(sorted(map(str, unknown)))[:200]}")
    missing = keys - set(data)
    if missing:
        raise TypeError(f"{kind} data needs {', '.join(sorted(missing))}")
    tag = data["tag"]
    if type(tag) is not str or not tag or len(tag) > _MAX_NAME:
        raise TypeError(
            f"{kind} tag must be a non-empty str of at most {_MAX_NAME} characters, got {tag!r:.60}"
        )
    return tag


def _finite_list(kind: str, field: str, values: object) -> list[float]:
    """``values`` as a list of finite floats (any sequence of real numbers)."""
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{kind} {field} must be a list of numbers, got {type(values).__name__}")
    out: list[float] = []
    for value in values:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
            raise TypeError(f"{kind} {field} must hold numbers, got {type(value).__name__}: {value!r:.40}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{kind} {field} must be finite numbers, got {number}")
        out.append(number)
    return out


def validate_histogram(data: object) -> dict[str, Any]:
    """The ``data`` of a ``histogram`` event, checked: ``{"tag", "edges",
    "counts"}``, ``counts[i]`` values falling in ``[edges[i], edges[i+1])``
    (the last bin closed), at most :data:`MAX_HISTOGRAM_BINS` bins.

    Raises:
        TypeError: ``data`` is not an object of those fields, or a field has
            the wrong type.
        ValueError: no bin or more than 512; ``edges`` not one longer than
            ``counts`` or decreasing; a count negative; a value not finite.
    """
    if not isinstance(data, Mapping):
        raise TypeError('histogram data must be an object: {"tag", "edges", "counts"}')
    tag = _media_tag("histogram", data, _HISTOGRAM_KEYS)
    edges = _finite_list("histogram", "edges", data["edges"])
    counts = _finite_list("histogram", "counts", data["counts"])
    if not 1 <= len(counts) <= MAX_HISTOGRAM_BINS:
        raise ValueError(f"a histogram has 1 to {MAX_HISTOGRAM_BINS} bins, got {len(counts)}")
    if len(edges) != len(counts) + 1:
        raise ValueError(
            f"a histogram's edges are one more than its counts: {len(edges)} edges, {len(counts)} counts"
        )
    if any(b < a for a, b in itertools.pairwise(edges)):
        raise ValueError("a histogram's edges must not decrease")
    if any(c < 0 for c in counts):
        raise ValueError("a histogram's counts must not be negative")
    return {"tag": tag, "edges": edges, "counts": counts}


def validate_image(data: object) -> dict[str, Any]:
    """The ``data`` of an ``image`` event, checked: ``{"tag", "mime",
    "width", "height", "b64"}``, ``b64`` the image file in base64, at most
    :data:`MAX_IMAGE_BYTES` characters, ``mime`` one of :data:`IMAGE_MIMES`.

    Raises:
        TypeError: ``data`` is not an object of those fields, or a field has
            the wrong type.
        ValueError: an unknown mime type, a side not from 1 to 32768, ``b64``
            empty, too long or not base64.
    """
    if not isinstance(data, Mapping):
        raise TypeError('image data must be an object: {"tag", "mime", "width", "height", "b64"}')
    tag = _media_tag("image", data, _IMAGE_KEYS)
    mime = data["mime"]
    if mime not in IMAGE_MIMES:
        raise ValueError(f"image mime must be one of {', '.join(sorted(IMAGE_MIMES))}, got {mime!r:.60}")
    sides = []
    for side in ("width", "height"):
        value = data[side]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGE_SIDE:
            raise ValueError(f"image {side} must be an int from 1 to {MAX_IMAGE_SIDE}, got {value!r:.40}")
        sides.append(value)
    b64 = data["b64"]
    if type(b64) is not str:
        raise TypeError(f"image b64 must be a str (the image file in base64), got {type(b64).__name__}")
    if not b64 or len(b64) > MAX_IMAGE_BYTES:
        raise ValueError(
            f"image b64 must hold 1 to {MAX_IMAGE_BYTES} characters (256 KiB encoded), got {len(b64)}: "
            "scale the image down"
        )
    try:
        binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image b64 is not base64: {exc}") from None
    return {"tag": tag, "mime": mime, "width": sides[0], "height": sides[1], "b64": b64}


def validate_data(event_type: str, data: object) -> object:
    """A non-metric event's ``data`` checked for the types whose shape the
    contract defines with checks (``alert``, ``histogram``, ``image``); any
    other type's data as it is."""
    if event_type == "alert":
        return validate_alert(data)
    if event_type == "histogram":
        return validate_histogram(data)
    if event_type == "image":
        return validate_image(data)
    return data


def wire_numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metric values as they go on the wire: NaN and the infinities as the
    strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (the same dict when all
    are finite)."""
    total = sum(metrics.values())
    if total - total == 0:  # every value finite: one C-level pass
        return metrics
    return {
        k: (_NON_FINITE[repr(v)] if type(v) is float and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }


def validate_rank(rank: object) -> int | None:
    """A rank in a distributed job: a non-negative int, or None."""
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < 1 << 20:
        raise TypeError(f"rank must be a non-negative int (the process's rank), got {rank!r:.40}")
    return rank


def event_fields(
    seq: int, epoch: str, ts: float, event_type: str, run: str | None, step: int | None, rank: int | None
) -> dict[str, Any]:
    """An event's fields but its payload, in the wire's order (``rank`` only when known)."""
    if rank is None:
        return {"seq": seq, "epoch": epoch, "ts": ts, "type": event_type, "run": run, "step": step}
    return {"seq": seq, "epoch": epoch, "ts": ts, "type": event_type, "run": run, "rank": rank, "step": step}


def encode_event(
    seq: int,
    epoch: str,
    ts: float,
    event_type: str,
    run: str | None,
    step: int | None,
    payload: Any,
    rank: int | None = None,
) -> bytes:
    """The JSON of one event.

    ``payload`` is the metrics dict of a metric event; for any other event it
    is ``data``, either already encoded (bytes from :func:`encode_data`) or a
    JSON-able object (the server's own events).

    Raises:
        TypeError: ``payload`` cannot be encoded (not JSON-able).
    """
    event = event_fields(seq, epoch, ts, event_type, run, step, rank)
    if event_type == "metric":
        metrics = event["metrics"] = wire_numbers(payload)
        try:
            return orjson.dumps(event)
        except orjson.JSONEncodeError:
            # Integers beyond 64 bits are still numbers: send them as floats.
            event["metrics"] = {k: float(v) if type(v) is int else v for k, v in metrics.items()}
            return orjson.dumps(event)
    event["data"] = orjson.Fragment(payload) if type(payload) is bytes else payload
    return orjson.dumps(event)


def sse_frame(seq: int, event_type: str, body: bytes) -> bytes:
    """``id:``/``event:``/``data:`` lines; orjson never emits a raw newline."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event_type.encode(), body)


_HEADER_SHORT = struct.Struct("!BB")
_HEADER_MEDIUM = struct.Struct("!BBH")
_HEADER_LONG = struct.Struct("!BBQ")


def ws_text_frame(body: bytes) -> bytes:
    """A complete, unmasked, uncompressed WebSocket text frame (RFC 6455 5.2).

    Server-to-client frames are not masked, so with compression off the frame
    is the same bytes for every client: it is built once per event.
    """
    n = len(body)
    if n < 126:
        return _HEADER_SHORT.pack(0x81, n) + body
    if n < 65536:
        return _HEADER_MEDIUM.pack(0x81, 126, n) + body
    return _HEADER_LONG.pack(0x81, 127, n) + body


# -- events numbered elsewhere (a Redis stream) -------------------------------------------

_TEMPLATE_PREFIX = b'{"seq":0,"epoch":"",'


def encode_template(
    ts: float, event_type: str, run: str | None, step: int | None, payload: Any, rank: int | None = None
) -> bytes:
    """An event's JSON without its seq and epoch, for whoever numbers it later
    (:func:`compose` puts them back: the result is exactly :func:`encode_event`'s).

    Raises:
        TypeError: ``payload`` cannot be encoded.
    """
    return encode_event(0, "", ts, event_type, run, step, payload, rank)[len(_TEMPLATE_PREFIX) :]


def compose(seq: int, epoch: str, template: bytes) -> bytes:
    """The event JSON of ``template`` (:func:`encode_template`) numbered ``seq`` in ``epoch``."""
    return b'{"seq":%d,"epoch":"%s",' % (seq, epoch.encode()) + template
