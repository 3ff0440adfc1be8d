"""The I/O-free part of ``stream_hub.client``: the SSE decoder (against the
HTML standard's event-stream rules, however the bytes are cut into chunks)
and the follower's decisions (resume point, duplicates, filters, what the
end of a stream means, backoff and giving up)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_hub.client.follow_errors import HubRefused, HubUnreachable
from stream_hub.client.follower import PROBE, Dropped, Follower
from stream_hub.client.sse_decoder import SSEDecoder, SSEFrame

# -- the SSE decoder -------------------------------------------------------------------------

STREAM = (
    b'\xef\xbb\xbfid: 1\r\nevent: metric\r\ndata: {"a":1}\r\n\r\n'
    b": keep-alive\n\n"
    b"id: 2\rdata: x\rdata:  y\r\r"
    b"data\n\n"
    b"event: lonely\n\n"
    b"id: 3\nretry: 1500\ndata:z\nid: bad\0id\n\n"
    b"data: unfinished"
)
EXPECTED = [
    SSEFrame("metric", "1", b'{"a":1}'),
    SSEFrame("message", "2", b"x\n y"),
    SSEFrame("message", "2", b""),
    SSEFrame("message", "3", b"z"),
]


def decode(chunks: list[bytes]) -> tuple[list[SSEFrame], SSEDecoder]:
    decoder = SSEDecoder()
    return [frame for chunk in chunks for frame in decoder.feed(chunk)], decoder


def test_decoder_follows_the_event_stream_rules() -> None:
    frames, decoder = decode([STREAM])
    assert frames == EXPECTED
    # A comment is no event (httpx-sse 0.4.3 dispatches an empty one after it);
    # an event type without data dispatches nothing; an id with NUL is ignored.
    assert decoder.comments == 1
    assert decoder.retry == 1500


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_decoder_does_not_care_how_the_bytes_are_cut(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    frames, _ = decode([STREAM[a:b] for a, b in itertools.pairwise(points)])
    assert frames == EXPECTED


@given(st.lists(st.tuples(st.text(max_size=5), st.text(max_size=30)), max_size=8), st.integers(1, 7))
def test_decoder_round_trips_any_data_with_any_line_ending(events: list[tuple[str, str]], size: int) -> None:
    """Data with newlines is sent as several data: lines; the decoder joins them back."""
    endings = [b"\n", b"\r\n", b"\r"]
    body = b""
    expected = []
    for i, (kind, text) in enumerate(events):
        kind = "".join(c for c in kind if c not in "\r\n:\0 ") or "message"
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        end = endings[i % 3]
        body += b"event: " + kind.encode() + end
        for line in text.split("\n"):
            body += b"data: " + line.encode() + end
        body += end
        expected.append((kind, text.encode()))
    frames, _ = decode([body[i : i + size] for i in range(0, len(body), size)])
    assert [(f.event, f.data) for f in frames] == expected


# -- the follower --------------------------------------------------------------------------------


def event(seq: int, kind: str = "metric", epoch: str = "e1", run: str | None = "r", **data: object) -> dict:
    return {"seq": seq, "type": kind, "epoch": epoch, "run": run, "data": data or None}


def test_from_now_probes_and_takes_the_answer_as_its_start() -> None:
    f = Follower("http://127.0.0.1:8888")
    url, headers = f.sse_request()
    assert url == "http://127.0.0.1:8888/events" and headers["Last-Event-ID"] == str(PROBE)
    ws_url, _ = Follower("ws://127.0.0.1:8889", types="metric").ws_request()
    assert ws_url == f"ws://127.0.0.1:8889/?since={PROBE}&types=metric"
    assert not f.take(event(41, "gap", reason="ahead", since=PROBE, last_seq=41))
    assert (f.last_seq, f.epoch) == (41, "e1")
    url, headers = f.sse_request()
    assert headers["Last-Event-ID"] == "41" and url.endswith("/events?epoch=e1")
    assert f.take(event(42))


def test_positions_duplicates_and_a_new_epoch() -> None:
    f = Follower("http://h:1/events?token=t&since=9", since=10, epoch="e1")
    url, headers = f.sse_request()
    assert url == "http://h:1/events?token=t&epoch=e1" and headers["Last-Event-ID"] == "10"
    assert not f.take(event(10)) and f.duplicates == 1  # at or before the position: a repeat
    assert f.take(event(11))
    assert f.take(event(0, "gap", epoch="e2", reason="epoch", lost=None))  # a new hub process
    assert f.take(event(1, epoch="e2"))
    assert (f.last_seq, f.epoch, f.delivered) == (1, "e2", 3)
    assert not f.take({"type": "pong", "last_seq": 5})  # not an event: ignored


def test_filters() -> None:
    f = Follower("http://h:1", runs="a,b", types=["metric"], since=0)
    assert f.wanted("metric", "a") and not f.wanted("metric", "c") and not f.wanted("log", "a")
    assert f.wanted("gap", None) and not f.wanted("shutdown", None)
    assert not Follower("http://h:1", runs="a", since=0).wanted("status", None)
    assert Follower("http://h:1", runs="a", types="shutdown", since=0).wanted("shutdown", None)
    assert Follower("http://h:1", since=0).wanted("shutdown", None)
    g = Follower("http://h:1", types="metric", since=0)
    assert not g.take(event(1, "shutdown", run=None, restart=True))
    assert g.last_seq == 1  # taken, not handed over


def test_what_the_end_of_a_stream_means() -> None:
    f = Follower("http://h:1", since=0)
    f.connected()
    assert f.ended()  # no shutdown event: a drop, reconnect
    f.take(event(1, "shutdown", restart=True))
    assert f.ended()  # a restart: reconnect
    f.connected()
    f.take(event(2, "shutdown", restart=False))
    assert not f.ended()  # a clean stop ends the iteration (on_shutdown="end")


class Clock:
    """``time.monotonic`` for the follower, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("stream_hub.client.follower.time.monotonic", fake)
    return fake


def test_backoff_and_giving_up(clock: Clock) -> None:
    f = Follower("http://h:1", since=0, retry_for=10)
    delays = [f.failed("refused") for _ in range(8)]
    # Doubling from 0.05 s up to 2 s, with up to 25 % jitter below.
    assert all(0.75 * min(0.05 * 2**i, 2) <= d <= min(0.05 * 2**i, 2) for i, d in enumerate(delays))
    clock.now += 9.9
    assert f.failed("refused") <= 0.1 + 1e-9  # never sleeps past the moment it gives up
    clock.now += 0.1
    with pytest.raises(HubUnreachable, match=r"for 10 s \(last: refused\)"):
        f.failed("refused")
    assert isinstance(f.refused(503, "shutting down"), Dropped)
    refused = f.refused(401, "a read token is required")
    assert isinstance(refused, HubRefused) and "token=" in str(refused)


def test_a_cleanly_stopped_hub_is_waited_for_indefinitely(clock: Clock) -> None:
    w = Follower("http://h:1", since=0, on_shutdown="wait", retry_for=1)
    w.connected()
    w.take(event(1, "shutdown", restart=False))
    assert w.ended()
    clock.now += 3600
    assert 0 <= w.failed("refused") <= 2


def test_bad_arguments() -> None:
    for kwargs in ({"since": -1}, {"since": True}, {"idle_timeout": 0}, {"read_timeout": 0}):
        with pytest.raises(ValueError):
            Follower("http://h:1", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http:// or https://"):
        Follower("localhost:8888")
    with pytest.raises(TypeError):
        Follower("http://h:1", runs=[1])  # type: ignore[list-item]
