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

Entries written by someone else (another tool, a hand-typed ``XADD``):

- the counter is the authority on what is ours: every seq is taken from it
  and written in the same script, so every entry of ours has an ID at or
  below ``<counter>-0``. An entry above it is *foreign*: replicas never serve
  it, and the first writer that finds one (a publisher whose ``XADD`` is
  refused, a replica that read it) removes every entry above the counter and
  sets the stream's last ID back to ``<counter>-0`` (:data:`REMOVE_FOREIGN`),
  so publishers go on with the next seq: no seq is skipped or given twice;
- an entry in our numbering (``<seq>-0`` at or below the counter) that is not
  an event a publisher of ours writes — not JSON, fields of the wrong kind, a
  raw line break, a type only hubs emit (:data:`~stream_hub.events.RESERVED_TYPES`)
  — is served as a one-event ``gap`` (reason ``rejected``), the same bytes on
  every replica, so the seqs stay consecutive (:func:`decode_entries`);
- an entry at or below the counter with a sequence part of its own
  (``<seq>-<n>``, ``n`` > 0) is foreign too, and left out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ..core.hub import Archived
from ..core.ring import Numbered
from ..events import (
    RESERVED_TYPES,
    compose,
    encode_event,
    validate_rank,
    validate_run,
    validate_step,
    validate_ts,
    validate_type,
)

__all__ = [
    "APPEND",
    "ENSURE_EPOCH",
    "MISSING_REDIS",
    "REMOVE_FOREIGN",
    "Decoded",
    "StreamKeys",
    "decode_entries",
    "entry_id",
    "parse_id",
    "safe_url",
]

#: What a Redis backend says when the redis package is not installed.
MISSING_REDIS = "StreamConfig(backend=...) needs the redis package: pip install 'stream_hub[redis]'"

# The epoch, made if missing: a namespace without one has lost its data (or
# never had any), so whatever is left of its stream and counter goes too,
# and seqs start from 1 again. So does a namespace whose counter is gone
# while its stream is still there (deleted, evicted): the next seqs would be
# ones already given. KEYS: stream, epoch, seq. ARGV[1]: a candidate.
_EPOCH = """
local epoch = redis.call('GET', KEYS[2])
if not epoch or (redis.call('EXISTS', KEYS[3]) == 0 and redis.call('EXISTS', KEYS[1]) == 1) then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SET', KEYS[2], epoch)
end
"""

#: Returns the namespace's epoch (making it if missing).
ENSURE_EPOCH = _EPOCH + "return epoch\n"

# Every entry above <counter>-0 removed (none is ours: see the module's
# docstring), and the stream's last ID set back to <counter>-0 so that the
# next seq can be added. Returns how many entries went.
_REMOVE_FOREIGN = """
local function remove_foreign(stream, counter)
  local removed = 0
  while true do
    local above = redis.call('XRANGE', stream, counter .. '-1', '+', 'COUNT', 1000)
    if #above == 0 then break end
    local ids = {}
    for i, entry in ipairs(above) do ids[i] = entry[1] end
    removed = removed + redis.call('XDEL', stream, unpack(ids))
  end
  if redis.call('EXISTS', stream) == 1 then
    redis.call('XSETID', stream, counter .. '-0')
  end
  return removed
end
"""

#: KEYS: stream, seq. Removes the entries above the counter; returns how many.
REMOVE_FOREIGN = (
    _REMOVE_FOREIGN
    + """
return remove_foreign(KEYS[1], tonumber(redis.call('GET', KEYS[2]) or '0'))
"""
)

# KEYS: stream, epoch, seq, source key. ARGV: epoch candidate, maxlen, batch
# number, source ttl, then one template per event. Returns {epoch, first, last}
# ({epoch, 0, 0} for a batch already taken). The first XADD is refused when
# the stream's last ID is past the counter (an entry someone else added):
# the entries above the counter go, and the batch is added after the counter.
APPEND = (
    _EPOCH
    + _REMOVE_FOREIGN
    + """
local batch = tonumber(ARGV[3])
local taken = tonumber(redis.call('GET', KEYS[4]) or '0')
if batch <= taken then
  return {epoch, 0, 0}
end
local n = #ARGV - 4
local last = redis.call('INCRBY', KEYS[3], n)
local first = last - n + 1
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], first .. '-0', 'e', ARGV[5])
if type(added) == 'table' and added.err then
  remove_foreign(KEYS[1], first - 1)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], first .. '-0', 'e', ARGV[5])
end
for i = 2, n do
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


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry ID (``<ms>-<seq>``; ours are ``<seq>-0``) as two ints.

    Raises:
        ValueError: not an entry ID.
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    high, _, low = text.partition("-")
    return int(high), int(low or "0")


def entry_id(position: tuple[int, int]) -> str:
    """``position`` as an entry ID (for ``XREAD``/``XRANGE``)."""
    return f"{position[0]}-{position[1]}"


class RejectedEntry(ValueError):
    """An entry in our numbering that is not an event of ours; ``reserved``:
    because its type is one only hubs emit."""

    def __init__(self, message: str, reserved: bool = False) -> None:
        super().__init__(message)
        self.reserved = reserved


@dataclasses.dataclass
class Decoded:
    """Stream entries as events (:func:`decode_entries`).

    ``numbered`` for the ring, ``archived`` for resumes: the same events,
    oldest first, an entry that was rejected replaced by its gap.
    ``rejected``: ``(seq, why)`` of each entry served as a gap, ``reserved``
    of them because of their type. ``foreign``: entries left out (not in our
    numbering), ``above``: how many of those are above the counter (someone
    should remove them: :data:`REMOVE_FOREIGN`). ``position``: the ID of the
    last entry read at or below the counter (where the next read starts).
    """

    numbered: list[Numbered] = dataclasses.field(default_factory=list)
    archived: list[Archived] = dataclasses.field(default_factory=list)
    rejected: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    reserved: int = 0
    foreign: int = 0
    above: int = 0
    position: tuple[int, int] | None = None


def decode_entries(entries: list[Any], epoch: str, counter: int) -> Decoded:
    """Stream entries (``[(id, {b"e": template}), ...]``, oldest first) as
    events for the ring and for resumes: their JSON composed with ``epoch``,
    their fields for filters and run curves.

    ``counter`` is the namespace's counter as read after the entries (or the
    last seq asked for): an entry above ``<counter>-0`` is not ours. Nothing
    an entry holds raises here: see the module's docstring for what becomes
    of entries written by someone else.
    """
    out = Decoded()
    top = (counter, 0)
    for raw_id, fields in entries:
        try:
            position = parse_id(raw_id)
        except ValueError:  # not an ID Redis gives: nothing to place it by
            out.foreign += 1
            continue
        if position > top:
            out.foreign += 1
            out.above += 1
            continue
        out.position = position
        seq, part = position
        if part != 0:
            out.foreign += 1
            continue
        template = fields.get(b"e") if isinstance(fields, dict) else None
        try:
            body, event = _read_template(seq, epoch, template)
            numbered = _numbered(seq, body, event)
        except RejectedEntry as exc:
            why = str(exc)
            out.rejected.append((seq, why))
            out.reserved += exc.reserved
            data = {"lost": 1, "from": seq, "to": seq, "reason": "rejected", "error": why}
            body = encode_event(seq, epoch, 0.0, "gap", None, None, data)
            numbered = (seq, 0.0, "gap", None, None, None, body, data)
        out.numbered.append(numbered)
        out.archived.append((seq, numbered[2], numbered[3], numbered[5], body))
    return out


def _read_template(seq: int, epoch: str, template: object) -> tuple[bytes, dict[str, Any]]:
    """The event JSON an entry's template makes, and its fields, if it is an
    event a publisher of ours could have written.

    Raises:
        RejectedEntry: it is not.
    """
    if not isinstance(template, bytes):
        raise RejectedEntry("no event template (field 'e')")
    if b"\n" in template or b"\r" in template:
        # JSON allows them between tokens, an SSE data line does not.
        raise RejectedEntry("a line break in the event's JSON")
    body = compose(seq, epoch, template)
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RejectedEntry("not an event's JSON") from None
    if not isinstance(event, dict):
        raise RejectedEntry("not an event's JSON")
    if type(event.get("seq")) is not int or event["seq"] != seq or event.get("epoch") != epoch:
        raise RejectedEntry("the event's JSON gives a seq or an epoch of its own")
    event_type = event.get("type")
    if type(event_type) is str and event_type in RESERVED_TYPES:
        raise RejectedEntry(f"type {event_type!r} is reserved for the hubs", reserved=True)
    try:
        validate_type(event_type)
        if validate_ts(event.get("ts")) is None:
            raise TypeError("no ts")
        if event.get("run") is not None:
            validate_run(event["run"])
        validate_step(event.get("step"))
        validate_rank(event.get("rank"))
    except (TypeError, ValueError) as exc:
        raise RejectedEntry(str(exc)[:200]) from None
    return body, event


def _numbered(seq: int, body: bytes, event: dict[str, Any]) -> Numbered:
    """An event (checked by :func:`_read_template`) as the ring stores it."""
    event_type: str = event["type"]
    payload: Any
    if event_type == "metric":
        metrics = event.get("metrics")
        if not isinstance(metrics, dict):
            raise RejectedEntry("a metric event without a metrics object")
        payload = {}
        for name, value in metrics.items():
            value = _FLOATS.get(value, value) if type(value) is str else value
            if type(value) is not float and type(value) is not int:
                raise RejectedEntry(f"metric {name[:80]!r} is not a number")
            payload[name] = value
    else:
        payload = event.get("data")
    return (
        seq,
        float(event["ts"]),
        event_type,
        event.get("run"),
        event.get("step"),
        event.get("rank"),
        body,
        payload,
    )
