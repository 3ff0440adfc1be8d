"""``histogram`` and ``image`` events (contract v3) end to end: published in
process, over ``POST /api/publish`` and from a joined process; received over
SSE, WebSocket and REST; kept by the store across hubs; refused with a reason
when they are not of their shape.
"""

from __future__ import annotations

import base64
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import httpx

from stream_hub import StreamConfig, TrainingStreamServer

from ..clients import SSEStream, events_until, send_op, ws_open
from ..conftest import free_config, wait_for
from ..processes import PYTHON, child_env, free_ports, run

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()
HISTOGRAM = {"tag": "w", "edges": [0.0, 0.5, 1.0], "counts": [3.0, 4.0]}
IMAGE = {"tag": "sample", "mime": "image/png", "width": 8, "height": 8, "b64": PNG}


def media_history(rest: str, run: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{rest}/api/history", params={"run": run, "types": "histogram,image", "since": 0}, timeout=10
    ).json()
    return [e for e in answer["events"] if e["type"] in ("histogram", "image")]


def test_histograms_and_images_pass_every_face_and_the_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    server = TrainingStreamServer(free_config(store=str(db)))
    server.start()
    try:
        stream = SSEStream(
            server.urls["sse"] + "/events", params={"types": "histogram,image", "last_event_id": 0}
        )
        with ws_open(server) as ws:
            send_op(ws, "subscribe", types=["histogram", "image"], since=0)
            wait_for(lambda: server.status()["clients"]["ws"] == 1 and server.status()["clients"]["sse"] == 1)
            first = server.publish("histogram", HISTOGRAM, run="exp", step=1)
            server.publish("image", IMAGE, run="exp", step=1)
            posted = httpx.post(
                server.urls["rest"] + "/api/publish",
                json=[
                    {"type": "histogram", "run": "exp", "step": 2, "data": HISTOGRAM},
                    {"type": "image", "run": "exp", "step": 2, "data": IMAGE},
                ],
                timeout=10,
            )
            assert posted.status_code == 200, posted.text
            last = server.hub.last_seq
            over_ws = [e for e in events_until(ws, last) if e["type"] in ("histogram", "image")]
        over_sse = [f.json for f in stream.read_until_seq(last) if f.event in ("histogram", "image")]
        stream.close()
        over_rest = media_history(server.urls["rest"], "exp")
        for events in (over_sse, over_ws, over_rest):
            assert [(e["type"], e["step"], e["seq"]) for e in events] == [
                ("histogram", 1, first),
                ("image", 1, first + 1),
                ("histogram", 2, first + 2),
                ("image", 2, first + 3),
            ]
            assert events[0]["data"] == HISTOGRAM and events[3]["data"] == IMAGE
        # Not of their shape: refused, saying why; nothing stored.
        bad = httpx.post(
            server.urls["rest"] + "/api/publish",
            json={"type": "image", "run": "exp", "data": {**IMAGE, "mime": "text/html"}},
            timeout=10,
        )
        assert bad.status_code == 422 and "image mime must be one of" in bad.text
        bad = httpx.post(
            server.urls["rest"] + "/api/publish",
            json={"type": "histogram", "run": "exp", "data": {"tag": "w", "edges": [1], "counts": [1]}},
            timeout=10,
        )
        assert bad.status_code == 422 and "edges are one more than its counts" in bad.text
        wait_for(lambda: server.status()["store"]["last_seq"] >= last, what="written to the store")
    finally:
        server.stop()
    # The next hub on the store serves them again.
    again = TrainingStreamServer(free_config(store=str(db)))
    again.start()
    try:
        kept = media_history(again.urls["rest"], "exp")
        assert [e["data"] for e in kept] == [HISTOGRAM, IMAGE, HISTOGRAM, IMAGE]
    finally:
        again.stop()


def test_a_joined_process_publishes_media_and_gets_bad_ones_refused_in_its_own_thread() -> None:
    sse, ws, rest = free_ports(3)
    host = TrainingStreamServer(StreamConfig(sse_port=sse, ws_port=ws, rest_port=rest, store=False))
    host.start()
    try:
        result = run_joined(sse, ws, rest)
        assert "role joined" in result.stdout, result.stderr
        assert "refused a histogram's edges must not decrease" in result.stdout
        wait_for(
            lambda: len(media_history(host.urls["rest"], "joined")) == 2, what="the joined process's media"
        )
        kept = media_history(host.urls["rest"], "joined")
        assert [(e["type"], e["step"], e["data"]) for e in kept] == [
            ("histogram", 5, HISTOGRAM),
            ("image", 5, IMAGE),
        ]
    finally:
        host.stop()


def run_joined(sse: int, ws: int, rest: int) -> subprocess.CompletedProcess[str]:
    """A process that joins the hub on those ports, publishes media and a bad histogram."""
    code = f"""
        from stream_hub import get_stream_server, release_stream_server
        server = get_stream_server()
        print("role", server.role)
        server.publish("histogram", {HISTOGRAM!r}, run="joined", step=5)
        server.publish("image", {IMAGE!r}, run="joined", step=5)
        try:
            server.publish("histogram", {{"tag": "w", "edges": [2, 1], "counts": [1]}}, run="joined")
        except ValueError as exc:
            print("refused", exc)
        release_stream_server()
        """
    env = child_env(
        STREAM_HUB_SSE_PORT=str(sse),
        STREAM_HUB_WS_PORT=str(ws),
        STREAM_HUB_REST_PORT=str(rest),
        STREAM_HUB_PORT_CONFLICT="join",
        STREAM_HUB_STORE="off",
    )
    return run(["-c", textwrap.dedent(code)], prefix=PYTHON, env=env, timeout=60)


def test_images_past_history_media_bytes_leave_history_as_gaps_and_metrics_stay() -> None:
    big = {**IMAGE, "b64": base64.b64encode(bytes(150_000)).decode()}  # 200 000 characters
    server = TrainingStreamServer(
        free_config(store=False, history_media_bytes=1 << 20, history_bytes=1 << 20)
    )
    server.start()
    try:
        for step in range(20):
            server.publish("image", big, run="exp", step=step)
            server.log({"loss": 1.0 / (step + 1)}, step=step, run="exp")
        last = server.hub.last_seq
        wait_for(lambda: server.status()["last_seq"] >= last, what="committed")
        answer = httpx.get(server.urls["rest"] + "/api/history", params={"since": 0}, timeout=10).json()
        events = answer["events"]
        assert [e["seq"] for e in events] == list(range(1, last + 1))  # one unbroken stretch
        assert [e["step"] for e in events if e["type"] == "metric"] == list(range(20))  # every metric kept
        images = [e["step"] for e in events if e["type"] == "image"]
        gaps = [e["data"] for e in events if e["type"] == "gap"]
        assert images[-1] == 19 and len(images) < 10 and len(images) + len(gaps) == 20
        assert all(g["reason"] == "media" and g["type"] == "image" for g in gaps)
        metrics = httpx.get(server.urls["rest"] + "/metrics", timeout=10).text
        assert f"stream_hub_history_media_dropped_total {float(len(gaps))}" in metrics
        assert "stream_hub_history_media_bytes " in metrics
    finally:
        server.stop()
