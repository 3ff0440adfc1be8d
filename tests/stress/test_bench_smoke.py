"""The benchmark still runs end to end and produces every figure for both sides,
and its load generator still counts events right.

Only that the figures exist is checked, never how large they are: the targets
are checked by ``scripts/bench.py`` itself, on a quiet machine.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..processes import PYTHON, REPO, run

if str(REPO) not in sys.path:  # benchmarks/ is a top-level package, not installed
    sys.path.insert(0, str(REPO))

from benchmarks.wire import SseParser, WsParser


def test_bench_quick_tiny_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # The tiny sizes make the work itself a few seconds; the run is ~20 fresh
    # processes (every group for each side, a redis-server, a stream-hub serve,
    # spawned joiners): ~1 min on a quiet 2-core machine, several on a loaded
    # one. The deadline only catches a hang.
    proc = run(
        [str(REPO / "scripts" / "bench.py"), "--quick", "--tiny", "--json", str(out)],
        prefix=PYTHON,
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    doc = json.loads(out.read_text())
    assert doc["mode"] == "tiny"
    figures = doc["figures"]
    expected = {
        "publish_us",
        "publish_us_1client",
        "fanout_sse_per_s",
        "fanout_ws_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "train_slowdown_pct",
        "train_cpu_overhead_pct",
        "train_watch_p99_ms",
        "start_ms",
        "stop_ms",
        "restart_ms",
        "rss_kb_per_client",
        "train_cpu_s_per_m_inproc",
        "train_slowdown_inproc_pct",
        # The baseline's side: its in-process hub, under each mode's key.
        "shm_spin_p99_ms_shm",
        "shm_spin_p99_ms_socket",
        "shm_log_cpu_us_shm",
        "shm_process_cpu_us_shm",
        "shm_slowdown_pct_shm",
    }
    # Many processes, one hub: the hand-written baseline can neither join nor serve.
    ours_only = {
        "joined_publish_us",
        "ingest_4proc_per_s",
        "train_cpu_s_per_m_serve",
        "train_slowdown_serve_pct",
        "shm_log_cpu_vs_inproc",
        "shm_slowdown_below_socket_pp",
    }
    assert expected | ours_only <= set(figures)
    for key in expected | ours_only:
        for side in ("stream_hub", "baseline") if key in expected else ("stream_hub",):
            value = figures[key][side]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, side)
            assert math.isfinite(value), (key, side, value)
        assert figures[key]["result"] in (None, "PASS", "MISS")
    # The store's figures compare stream_hub with and without a store: no baseline.
    store = {
        "store_durable_per_s",
        "store_publish_us",
        "store_publish_us_without",
        "store_publish_cpu_us",
        "store_publish_cpu_us_without",
        "store_writer_cpu_us",
        "store_mb_per_million",
        "store_train_slowdown_pct",
        "store_train_slowdown_pct_without",
        "store_train_cpu_overhead_pct",
        "store_train_cpu_overhead_pct_without",
    }
    for key in store:
        value = figures[key]["stream_hub"]
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
        assert figures[key]["baseline"] is None
    assert "| figure" in proc.stdout


# -- the load generator's parsers, byte by byte -------------------------------------


def _sse_body(sep: str, n: int) -> bytes:
    frames = [
        f"id: {k}{sep}event: metric{sep}data: " + json.dumps({"seq": k, "ts": 1.0}) + sep + sep
        for k in range(1, n + 1)
    ]
    return "".join(frames).encode() + f": keep-alive{sep}{sep}".encode()


def _ws_frame(payload: bytes, first: int = 0x81) -> bytes:
    n = len(payload)
    head = bytes([first, n]) if n < 126 else bytes([first, 126]) + n.to_bytes(2, "big")
    return head + payload


def test_sse_parser_counts_across_any_split_and_chunking() -> None:
    for sep in ("\n", "\r\n"):
        body = _sse_body(sep, 50)
        chunked = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 37]), body[i : i + 37]) for i in range(0, len(body), 37)
        )
        for src, is_chunked in ((body, False), (chunked + b"0\r\n\r\n", True)):
            for step in (1, 5, 4096):
                for timed in (False, True):
                    parser, latencies, count = SseParser(is_chunked, timed), [], 0
                    for i in range(0, len(src), step):
                        count += parser.feed(src[i : i + step], 2.0, latencies)
                    assert (count, parser.last_seq) == (50, 50)
                    assert len(latencies) == (50 if timed else 0)


def test_ws_parser_counts_fragments_and_answers_control_frames() -> None:
    events = [json.dumps({"seq": k, "ts": 1.0, "pad": "x" * k}).encode() for k in range(1, 60)]
    last = json.dumps({"seq": 60, "ts": 1.0}).encode()
    stream = (
        b"".join(_ws_frame(e) for e in events)
        + _ws_frame(b"hi", 0x89)  # ping
        + _ws_frame(last[:5], 0x01)  # a fragmented text message
        + _ws_frame(last[5:], 0x80)
        + _ws_frame(b"\x03\xe8", 0x88)  # close
    )
    for step in (1, 7, 4096):
        for timed in (False, True):
            parser, latencies, count = WsParser(timed), [], 0
            for i in range(0, len(stream), step):
                count += parser.feed(stream[i : i + step], 2.0, latencies)
            assert (count, parser.last_seq, parser.closed) == (60, 60, True)
            assert len(parser.outbox) == 2  # the pong and the close echo
            assert len(latencies) == (60 if timed else 0)
