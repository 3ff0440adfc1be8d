"""One namespace's stream in Redis: its keys, the script that appends to it,
and how its entries become events.

Per namespace ``ns``:

- ``ns:stream`` — a Redis stream; entry ``<seq>-0`` holds field ``e``, the
  event's JSON without seq and epoch (:func:`stream_hub.events.encode_template`),
  trimmed to about ``maxlen`` entries (``MAXLEN ~``);
- ``ns:epoch`` — the epoch: set by the first append after Redis lost its data
  (or ever), so every replica sees the same one;
- ``ns:seq`` — the last seq given;
- ``ns:src:<source>`` — the last batch number taken from one publisher (an
  append already taken is answered, not taken again: retries are idempotent).

The append is one Lua script (atomic in Redis): set the epoch if missing,
check the publisher's batch number, take ``n`` seqs at once, ``XADD`` each
entry under its seq, remember the batch. Every replica composes the same event
JSON from an entry and the epoch, so a client resumes on any replica with the
same ``Last-Event-ID``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ..core.hub import Archived
from ..core.ring import Numbered
from ..events import compose

__all__ = ["APPEND", "ENSURE_EPOCH", "MISSING_REDIS", "StreamKeys", "decode_entries", "safe_url", "seq_of"]

#: What a Redis backend says when the redis package is not installed.
MISSING_REDIS = "StreamConfig(backend=...) needs the redis package: pip install 'stream_hub[redis]'"

# The epoch, made if missing: a namespace without one has lost its data (or
# never had any), so whatever is left of its stream and counter goes too,
# and seqs start from 1 again. KEYS: stream, epoch, seq. ARGV[1]: a candidate.
_EPOCH = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SET', KEYS[2], epoch)
end
"""

#: Returns the namespace's epoch (making it if missing).
ENSURE_EPOCH = _EPOCH + "return epoch\n"

# KEYS: stream, epoch, seq, source key. ARGV: epoch candidate, maxlen, batch
# number, source ttl, then one template per event. Returns {epoch, first, last}
# ({epoch, 0, 0} for a batch already taken).
APPEND = (
    _EPOCH
    + """
local batch = tonumber(ARGV[3])
local taken = tonumber(redis.call('GET', KEYS[4]) or '0')
if batch <= taken then
  return {epoch, 0, 0}
end
local n = #ARGV - 4
local last = redis.call('INCRBY', KEYS[3], n)
local first = last - n + 1
for i = 1, n do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], (first + i - 1) .. '-0', 'e', ARGV[i + 4])
end
redis.call('SET', KEYS[4], batch, 'EX', ARGV[4])
return {epoch, first, last}
"""
)

_FLOATS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


@dataclasses.dataclass(frozen=True)
class StreamKeys:
    """The Redis keys of one namespace."""

    namespace: str

    @property
    def stream(self) -> str:
        return f"{self.namespace}:stream"

    @property
    def epoch(self) -> str:
        return f"{self.namespace}:epoch"

    @property
    def seq(self) -> str:
        return f"{self.namespace}:seq"

    def source(self, source: str) -> str:
        return f"{self.namespace}:src:{source}"


def safe_url(url: str) -> str:
    """``url`` with its password masked, for logs."""
    from ..config.fields import mask_url as _mask_url

    return str(_mask_url(url))


def seq_of(entry_id: bytes | str) -> int:
    """The seq of a stream entry id (``<seq>-0``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def decode_entries(entries: list[Any], epoch: str) -> tuple[list[Numbered], list[Archived]]:
    """Stream entries (``[(id, {b"e": template}), ...]``) as events for the ring
    and for resumes: their JSON composed with ``epoch``, their fields for
    filters and run curves. Malformed entries are skipped."""
    numbered: list[Numbered] = []
    archived: list[Archived] = []
    for entry_id, fields in entries:
        template = fields.get(b"e") if isinstance(fields, dict) else None
        if not isinstance(template, bytes):
            continue
        seq = seq_of(entry_id)
        body = compose(seq, epoch, template)
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        event_type = str(event.get("type", ""))
        run, step, rank = event.get("run"), event.get("step"), event.get("rank")
        if event_type == "metric":
            metrics = event.get("metrics") or {}
            payload: Any = {k: _FLOATS.get(v, v) if type(v) is str else v for k, v in metrics.items()}
        else:
            payload = event.get("data")
        numbered.append((seq, float(event.get("ts", 0.0)), event_type, run, step, rank, body, payload))
        archived.append((seq, event_type, run, rank, body))
    return numbered, archived
