"""Which SSE decoder stream_hub.client uses: ours or httpx-sse, measured.

A real hub replays N metric events over SSE; the bytes are captured as they
arrived (same chunks for both) and decoded again and again, frames only and
frames + JSON (orjson in both). httpx-sse is not a dependency: install it to
compare (pip install httpx-sse).

    python scripts/bench_sse_decoder.py [--events 50000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import httpx
import orjson

from stream_hub import StreamConfig, TrainingStreamServer
from stream_hub.client.sse_decoder import SSEDecoder


def capture(n: int) -> list[bytes]:
    config = StreamConfig(sse_port=0, ws_port=0, rest_port=0, port_conflict="fail", history_size=n + 10)
    server = TrainingStreamServer(config)
    server.start()
    try:
        for i in range(n):
            server.log({"loss": 1.0 / (i + 1), "acc": i / n, "lr": 3e-4}, step=i, run="exp1")
        deadline = time.monotonic() + 60
        while server.status()["last_seq"] < n and time.monotonic() < deadline:
            time.sleep(0.01)
        chunks, frames = [], 0
        url = server.urls["sse"] + "/events"
        with httpx.stream("GET", url, headers={"Last-Event-ID": "0"}, timeout=30) as response:
            for chunk in response.iter_raw():
                chunks.append(chunk)
                frames += chunk.count(b"\n\n")
                if frames > n:
                    break
        return chunks
    finally:
        server.stop()


def ours(chunks: list[bytes], parse_json: bool) -> int:
    decoder, n = SSEDecoder(), 0
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            if parse_json:
                orjson.loads(frame.data)
            n += 1
    return n


def theirs(chunks: list[bytes], parse_json: bool) -> int:
    from httpx_sse import EventSource

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    n = 0
    for event in EventSource(response).iter_sse():
        if not event.data:
            continue  # httpx-sse dispatches a keep-alive comment as an empty event
        if parse_json:
            orjson.loads(event.data)
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    chunks = capture(args.events)
    print(f"{sum(map(len, chunks)) / 1e6:.1f} MB of SSE in {len(chunks)} chunks, {args.events} events")
    decoders: list[tuple[str, Callable[[list[bytes], bool], int]]] = [("stream_hub SSEDecoder", ours)]
    try:
        import httpx_sse  # noqa: F401
    except ImportError:
        print("httpx-sse is not installed: only ours is measured")
    else:
        decoders.append(("httpx-sse", theirs))
    for parse_json in (False, True):
        for name, decode in decoders:
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                n = decode(chunks, parse_json)
                times.append(time.perf_counter() - start)
            what = "frames + JSON" if parse_json else "frames only"
            median = statistics.median(times)
            print(f"{name:24s} {what:14s} median {median * 1e3:7.1f} ms  {n / median / 1e3:6.0f} k events/s")


if __name__ == "__main__":
    main()
