"""An incremental ``text/event-stream`` decoder (I/O-free): bytes in, event
frames out, as the HTML standard's "event stream interpretation" says.

- Lines end with CRLF, LF or CR, also when a CRLF is split across two chunks.
- ``:`` starts a comment (the hub's keep-alives); ``data:`` lines join with
  ``\\n``; one space after the colon is dropped; a blank line dispatches the
  frame; a frame without data is not dispatched; the last event id carries
  over to later frames; a leading UTF-8 BOM is ignored; ``retry:`` takes
  digits only.

It works on bytes and hands ``data`` over as bytes, so the JSON decoder reads
it without a detour through ``str`` (see ``BENCHMARKS.md``: this is why
stream_hub keeps its own decoder rather than httpx-sse's).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEDecoder", "SSEFrame"]

_BOM = b"\xef\xbb\xbf"


class SSEFrame(NamedTuple):
    """One dispatched event: its type (``message`` when none was given), the
    last event id seen (or None), and its data."""

    event: str
    id: str | None
    data: bytes


class SSEDecoder:
    """Feed it chunks as they arrive; it returns the frames they complete.

    ``comments`` counts comment lines (keep-alives) and ``retry`` holds the
    last reconnection time the stream asked for, in milliseconds.
    """

    __slots__ = ("_data", "_event", "_first", "_id", "_partial", "_pending_cr", "comments", "retry")

    def __init__(self) -> None:
        self._partial = b""  # an unfinished line
        self._pending_cr = False  # the last chunk ended in CR: a LF next is part of it
        self._first = True
        self._data: list[bytes] = []
        self._event = ""
        self._id: str | None = None
        self.comments = 0
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEFrame]:
        """The frames completed by ``chunk``."""
        if not chunk:
            return []
        if self._first:
            buffered = self._partial + chunk
            if len(buffered) < len(_BOM) and _BOM.startswith(buffered):
                self._partial = buffered  # perhaps a BOM split across chunks
                return []
            self._first = False
            self._partial = b""
            chunk = buffered[len(_BOM) :] if buffered.startswith(_BOM) else buffered
        if self._pending_cr:
            # The last chunk ended with CR, which ended a line: a LF now belongs to it.
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._pending_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        if self._partial:
            lines[0] = self._partial + lines[0]
        self._partial = lines.pop()  # what follows the last line end (b"" after one)
        out: list[SSEFrame] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    out.append(SSEFrame(self._event or "message", self._id, b"\n".join(data)))
                    data.clear()
                self._event = ""
                continue
            # The hub's own lines first, without splitting them.
            head = line[:6]
            if head == b"data: ":
                data.append(line[6:])
                continue
            if head == b"event:":
                value = line[7:] if line[6:7] == b" " else line[6:]
                self._event = value.decode("utf-8", "replace")
                continue
            if line[0] == 0x3A:  # ":" a comment (a keep-alive)
                self.comments += 1
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\0" not in value:
                    self._id = value.decode("utf-8", "replace")
            elif name == b"retry":
                if value.isdigit():
                    self.retry = int(value)
        return out
