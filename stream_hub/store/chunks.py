"""How the store keeps events: consecutive events of one epoch are one
*chunk* (one row), whose body is the zlib-compressed JSON of seven columns::

    [seqs, ts, types, runs, steps, ranks, payloads]

Columns, because they come out of a committed flat batch (:mod:`stream_hub.core.intake`)
as seven C-level slices, and are turned into JSON by one ``orjson.dumps``:
writing costs no Python-level work per event. A column whose values are all
the same (the type, the run and the rank of one process's events) is kept
as ``{"all": value}``, and consecutive integers (seqs, steps) as ``{"from":
first}``: less to encode and to compress. A payload is the metrics dict of
a metric event (NaN and the infinities as the wire's strings), the data of
any other event, in JSON. Reading rebuilds each event's JSON exactly as
:func:`stream_hub.events.encode_event` makes it.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any

import orjson

from ..core.hub import Archived
from ..core.intake import FIELDS
from ..events import encode_event, event_fields

__all__ = [
    "Chunk",
    "compress",
    "decode",
    "decode_columns",
    "encode",
    "event_json",
    "events_in",
    "metrics_of",
    "pack",
    "rows",
]

_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: zlib level: 1 compresses metric events about 3x at a few hundred MB/s.
LEVEL = 1


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk, ready to be inserted."""

    first_seq: int
    last_seq: int
    count: int
    min_ts: float
    max_ts: float
    runs: str  # the JSON list of the runs it holds events of
    body: bytes


def _fragment(value: Any) -> Any:
    if type(value) is bytes:  # data already encoded in the publisher's thread
        return orjson.Fragment(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _wire(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metric values as on the wire: NaN and the infinities as strings."""
    return {
        k: (_NON_FINITE[repr(v)] if type(v) is float and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }


def encode(flat: list[Any]) -> Chunk:
    """The chunk of a flat batch (FIELDS values per event, consecutive events).

    An event that cannot be encoded (a server event whose data is not
    JSON-able) is kept as a ``gap`` event in its place (reason ``rejected``),
    as the ring does, so the sequence stays contiguous.
    """
    return compress(pack(flat))


def compress(chunk: Chunk) -> Chunk:
    """A chunk from :func:`pack`, its body compressed (without the GIL)."""
    return dataclasses.replace(chunk, body=zlib.compress(chunk.body, LEVEL))


def pack(flat: list[Any]) -> Chunk:
    """:func:`encode` but for the compression: the body is the chunk's JSON.

    Compressing takes a while without the GIL, and the training thread runs
    meanwhile, collecting its young garbage: every big list still alive then
    (the batch, its seven columns) is walked again by each collection, which
    made a store cost the training thread ~0.3 µs per event. So callers let
    go of the batches before they :func:`compress`.
    """
    seqs, tss, types, runs = flat[0::FIELDS], flat[1::FIELDS], flat[2::FIELDS], flat[3::FIELDS]
    steps, payloads, ranks = flat[4::FIELDS], flat[5::FIELDS], flat[6::FIELDS]
    try:
        data = orjson.dumps(payloads, default=_fragment)
        if b"null" in data:  # NaN or an infinity in metrics (or a null in some data)
            payloads = [_wire(p) if t == "metric" else p for t, p in zip(types, payloads)]
            data = orjson.dumps(payloads, default=_fragment)
    except (TypeError, orjson.JSONEncodeError):
        types, runs, payloads = _one_by_one(seqs, types, runs, payloads)
        data = orjson.dumps(payloads, default=_fragment)
    # Seqs only grow: they count up by one when the last is n - 1 after the first.
    seq_column = {"from": seqs[0]} if seqs[-1] - seqs[0] == len(seqs) - 1 else seqs
    head = orjson.dumps([seq_column, tss, _same(types), _same(runs), _counted(steps), _same(ranks)])
    names = set(runs)
    names.discard(None)
    body = head[:-1] + b"," + data + b"]"
    return Chunk(seqs[0], seqs[-1], len(seqs), min(tss), max(tss), orjson.dumps(sorted(names)).decode(), body)


def _same(column: list[Any]) -> Any:
    """``{"all": value}`` when every value is the same, else the column."""
    first = column[0]
    return {"all": first} if column.count(first) == len(column) else column


def _counted(column: list[Any]) -> Any:
    """``{"from": first}`` when the values count up by one, else the column."""
    first = column[0]
    if (
        type(first) is int
        and column[-1] == first + len(column) - 1
        and column == list(range(first, column[-1] + 1))
    ):
        return {"from": first}
    return column


def _column(value: Any, n: int) -> list[Any]:
    if type(value) is not dict:
        return value  # type: ignore[no-any-return]
    if "all" in value:
        return [value["all"]] * n
    return list(range(value["from"], value["from"] + n))


def _one_by_one(
    seqs: list[int], types: list[str], runs: list[Any], payloads: list[Any]
) -> tuple[list[str], list[Any], list[Any]]:
    """Payloads that encode one by one: integers beyond 64 bits as floats
    (as :func:`encode_event` sends them), anything else that fails as a gap."""
    types, runs, payloads = list(types), list(runs), list(payloads)
    for i, payload in enumerate(payloads):
        if types[i] == "metric":
            payload = payloads[i] = _wire(payload)
        try:
            orjson.dumps(payload, default=_fragment)
            continue
        except (TypeError, orjson.JSONEncodeError) as exc:
            error = str(exc)
        if types[i] == "metric":
            floats = {k: float(v) if type(v) is int else v for k, v in payload.items()}
            try:
                orjson.dumps(floats)
                payloads[i] = floats
                continue
            except (TypeError, orjson.JSONEncodeError):
                pass
        seq = seqs[i]
        types[i], runs[i] = "gap", None
        payloads[i] = {"lost": 1, "from": seq, "to": seq, "reason": "rejected", "error": error[:200]}
    return types, runs, payloads


def decode(body: bytes) -> list[list[Any]]:
    """A chunk's seven columns: seqs, ts, types, runs, steps, ranks, payloads."""
    return decode_columns(orjson.loads(zlib.decompress(body)))


def decode_columns(columns: list[Any]) -> list[list[Any]]:
    """:func:`decode` of a body already parsed (its columns as stored)."""
    n = len(columns[1])
    return [_column(column, n) for column in columns]


def event_json(
    seq: int,
    epoch: str,
    ts: float,
    event_type: str,
    run: str | None,
    step: int | None,
    payload: Any,
    rank: int | None,
) -> bytes:
    """An event's JSON from its stored fields (the same bytes as :func:`encode_event`)."""
    if event_type != "metric":
        return encode_event(seq, epoch, ts, event_type, run, step, payload, rank)
    event = event_fields(seq, epoch, ts, event_type, run, step, rank)
    event["metrics"] = payload  # stored as on the wire already
    return orjson.dumps(event)


def rows(columns: list[list[Any]]) -> zip[tuple[Any, ...]]:
    """(seq, ts, type, run, step, rank, payload) per event."""
    return zip(*columns)


def events_in(columns: list[list[Any]], epoch: str, first: int, last: int) -> list[Archived]:
    """The archived events of seqs ``first..last`` in a decoded chunk."""
    out: list[Archived] = []
    for seq, ts, event_type, run, step, rank, payload in zip(*columns):
        if first <= seq <= last:
            out.append(
                (seq, event_type, run, rank, event_json(seq, epoch, ts, event_type, run, step, payload, rank))
            )
    return out


def metrics_of(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored metrics dict with NaN and the infinities as floats again."""
    for value in payload.values():
        if type(value) is str:
            return {k: _FLOATS.get(v, v) if type(v) is str else v for k, v in payload.items()}
    return payload
