"""Torture: many threads sharing the managed server while ops restart it and
clients drop and resume, for ``--torture-seconds`` (10 s by default).

Load:
  * 32 worker threads loop get_stream_server -> log a few events -> release;
  * one thread calls ``force_restart`` at random moments (holding a lease, so
    references are held while it restarts);
  * SSE and WebSocket clients read, stall, drop and resume from their last
    seq (SSE ``Last-Event-ID`` header; WebSocket ``subscribe`` with ``since``);
  * the test holds one reference itself; at quiescent points it parks every
    worker and checks the count; every other such point it lets the count
    reach zero (the server stops and its ports must be free) and starts it again.

Invariants: no exception in any thread; ``ref_count`` equals the references
actually held at every quiescent point; each client sees strictly increasing
seqs, every hole announced by a ``gap`` event that names exactly the missing
range; each run's steps arrive in order; at the end every client reaches the
head; file descriptors and threads return to their starting counts and every
port used is free.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as ws_connect

from stream_hub import (
    StreamConfig,
    get_stream_server,
    get_stream_server_manager,
    release_stream_server,
)

from ..clients import SSEParser, strict_json
from ..conftest import free_config, wait_for
from ..processes import port_is_bindable

pytestmark = pytest.mark.torture

WORKERS = 32
SSE_CLIENTS = 3
WS_CLIENTS = 3
QUIESCE_EVERY = 1.5  # seconds between quiescent checks


def thread_stacks() -> str:
    """Where every thread is (for a test that finds the load stuck)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    )


# -- shared state -------------------------------------------------------------------------


class Failures:
    """Exceptions and invariant violations from every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[str] = []

    def add(self, who: str, what: str) -> None:
        with self._lock:
            if len(self.items) < 50:
                self.items.append(f"[{who}] {what}")

    def guard(self, who: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException:
                self.add(who, traceback.format_exc())

        return run


class Gate:
    """Parks every participant (holding no reference) so the test can look at
    a quiescent manager, then lets them go again."""

    def __init__(self, participants: int, stop: threading.Event) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._parked = 0
        self._participants = participants
        self._stop = stop

    def checkpoint(self) -> None:
        with self._cond:
            if not self._closed:
                return
            self._parked += 1
            self._cond.notify_all()
            while self._closed and not self._stop.is_set():
                self._cond.wait(0.05)
            self._parked -= 1

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closed = True
            ok = self._cond.wait_for(lambda: self._parked == self._participants, timeout)
            assert ok, (
                f"only {self._parked} of {self._participants} threads parked within "
                f"{timeout} s; stacks:\n{thread_stacks()}"
            )

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


@dataclass
class ClientLog:
    """What one client saw, across all its connections."""

    name: str
    failures: Failures
    last: int | None = None  # seq of the last event seen (resume point)
    connections: int = 0
    frames: int = 0
    gaps: int = 0
    lost: int = 0
    refused: int = 0
    timeouts: int = 0
    discarded: int = 0  # WebSocket frames sent before a resubscription took effect
    steps: dict[str, int] = field(default_factory=dict)

    def accept(self, event: dict[str, Any]) -> None:
        """Check one event against everything seen before, across reconnects."""
        seq = event["seq"]
        kind = event["type"]
        self.frames += 1
        expected = None if self.last is None else self.last + 1
        if kind == "gap":
            data = event["data"]
            if data.get("lost") is None or data.get("from") is None:
                self.failures.add(self.name, f"gap without a lost range: {event}")
            elif expected is not None and data["from"] != expected:
                self.failures.add(self.name, f"gap from {data['from']} but expected seq {expected}")
            elif seq != data["to"] or data["lost"] != data["to"] - data["from"] + 1:
                self.failures.add(self.name, f"gap counts do not add up: {event}")
            self.gaps += 1
            self.lost += int(data.get("lost") or 0)
        elif expected is not None and seq != expected:
            hole = "duplicate/out of order" if seq < expected else "silent hole"
            self.failures.add(self.name, f"{hole}: got seq {seq}, expected {expected}")
        if kind == "metric":
            run, step = event["run"], event["step"]
            if step <= self.steps.get(run, -1):
                self.failures.add(self.name, f"run {run}: step {step} after {self.steps[run]}")
            self.steps[run] = step
        self.last = seq


# -- clients -------------------------------------------------------------------------------


def finished(log: ClientLog, stop: threading.Event, target: list[int]) -> bool:
    """Clients stop once told to and caught up with ``target`` (negative: at once)."""
    if not stop.is_set():
        return False
    return target[0] < 0 or (log.last is not None and log.last >= target[0])


def current_urls() -> dict[str, str]:
    server = get_stream_server_manager().server
    return server.urls if server is not None and server.running else {}


def read(log: ClientLog, event: dict[str, Any], rng: random.Random) -> None:
    """Check one event; now and then, stall a while before reading on."""
    log.accept(event)
    if rng.random() < 0.002:
        time.sleep(rng.uniform(0.05, 0.2))  # pacing: a stalled reader


def sse_client(log: ClientLog, stop: threading.Event, target: list[int]) -> None:
    rng = random.Random(log.name)
    with httpx.Client(timeout=httpx.Timeout(5.0, read=5.0)) as client:
        while not finished(log, stop, target):
            url = current_urls().get("sse")
            if url is None:
                time.sleep(0.02)  # pacing: the server is between stop and start
                continue
            headers = {} if log.last is None else {"Last-Event-ID": str(log.last)}
            drop_after = rng.randint(20, 3000)
            try:
                with client.stream("GET", f"{url}/events", headers=headers) as response:
                    if response.status_code == 503:
                        log.refused += 1
                        continue
                    assert response.status_code == 200, response.status_code
                    log.connections += 1
                    read_frames(log, response, drop_after, rng, stop, target)
            except (httpx.TransportError, httpx.RemoteProtocolError):
                log.refused += 1
                time.sleep(0.01)  # pacing before reconnecting
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.15))  # pacing: stay away a while (may cause a gap)


def read_frames(
    log: ClientLog,
    response: httpx.Response,
    drop_after: int,
    rng: random.Random,
    stop: threading.Event,
    target: list[int],
) -> None:
    parser = SSEParser()
    seen = 0
    try:
        for line in response.iter_lines():
            frame = parser.feed(line)
            if frame is not None:
                event = frame.json
                if frame.id != str(event["seq"]) or frame.event != event["type"]:
                    log.failures.add(log.name, f"frame fields {frame} do not match {event}")
                read(log, event, rng)
                seen += 1
                if seen >= drop_after:
                    return
            if (line == "" or line.startswith(":")) and finished(log, stop, target):
                return
    except httpx.ReadTimeout:
        log.timeouts += 1


def ws_client(log: ClientLog, stop: threading.Event, target: list[int]) -> None:
    rng = random.Random(log.name)
    while not finished(log, stop, target):
        url = current_urls().get("ws")
        if url is None:
            time.sleep(0.02)  # pacing: the server is between stop and start
            continue
        try:
            with ws_connect(
                url + "/", proxy=None, compression=None, open_timeout=5, close_timeout=1, max_size=None
            ) as ws:
                log.connections += 1
                ws_session(log, ws, rng, stop, target)
        except (ConnectionClosed, InvalidStatus, InvalidHandshake, OSError):
            log.refused += 1
            time.sleep(0.01)  # pacing before reconnecting
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0, 0.15))  # pacing: stay away a while (may cause a gap)


def ws_session(log: ClientLog, ws: Any, rng: random.Random, stop: threading.Event, target: list[int]) -> None:
    if log.last is not None:
        resubscribe(log, ws)
    drop_after = rng.randint(20, 3000)
    seen = 0
    while not finished(log, stop, target):
        try:
            message = ws.recv(timeout=5)
        except TimeoutError:
            log.timeouts += 1
            return
        event = strict_json(message)
        if event.get("type") in ("pong", "error"):
            if event["type"] == "error":
                log.failures.add(log.name, f"error frame: {event}")
            continue
        read(log, event, rng)
        seen += 1
        if seen >= drop_after:
            return


def resubscribe(log: ClientLog, ws: Any) -> None:
    """Resume with ``subscribe``/``since``, then ping to find where the replay ends.

    A new connection follows live events until its subscribe is read, so the
    frames before the pong are: live frames sent before the subscribe took
    effect, then the replay (starting at ``since + 1``, or a gap from there),
    then newer live ones. The replay starts at the last frame that begins at
    ``since + 1``; everything before it is dropped and counted.
    """
    since = log.last
    assert since is not None
    ws.send(json.dumps({"op": "subscribe", "since": since}))
    ws.send(json.dumps({"op": "ping"}))
    frames: list[dict[str, Any]] = []
    while True:
        event = strict_json(ws.recv(timeout=5))
        if event.get("type") == "pong":
            break
        if event.get("type") == "error":
            log.failures.add(log.name, f"error frame: {event}")
            continue
        frames.append(event)

    def starts_replay(e: dict[str, Any]) -> bool:
        if e["type"] == "gap":
            return e["data"].get("from") == since + 1
        return e["seq"] == since + 1

    starts = [i for i, e in enumerate(frames) if starts_replay(e)]
    first = starts[-1] if starts else 0
    log.discarded += first
    for event in frames[first:]:
        log.accept(event)


# -- the test ------------------------------------------------------------------------------


@dataclass
class Figures:
    cycles: int = 0
    logged: int = 0
    restarts_requested: int = 0
    full_stops: int = 0
    quiescent_checks: int = 0
    ports_used: set[int] = field(default_factory=set)


def test_torture(request: pytest.FixtureRequest) -> None:
    seconds = float(request.config.getoption("--torture-seconds"))
    proc = psutil.Process()
    fds_before = proc.num_fds()
    threads_before = threading.active_count()

    cfg: StreamConfig = free_config(heartbeat_interval=0.5, history_size=10_000, shutdown_timeout=2.0)
    manager = get_stream_server_manager()
    failures = Failures()
    figures = Figures()
    stop_load = threading.Event()
    stop_clients = threading.Event()
    target = [1 << 62]  # clients stop once they have seen this seq (set at the end)
    gate = Gate(WORKERS + 1, stop_load)

    anchor = get_stream_server(config=cfg)  # the test's own reference
    figures.ports_used.update(anchor.ports.values())
    counter_lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(index)
        run = f"w{index}"
        step = 0
        while not stop_load.is_set():
            gate.checkpoint()
            if stop_load.is_set():
                return
            server = get_stream_server(config=cfg)
            logged = 0
            try:
                for _ in range(rng.randint(1, 10)):
                    server.log({"loss": rng.random(), "i": step}, step=step, run=run)
                    step += 1
                    logged += 1
                if rng.random() < 0.05:
                    server.publish("note", {"text": f"{run} at {step}"}, run=run)
            finally:
                release_stream_server()
            with counter_lock:
                figures.cycles += 1
                figures.logged += logged
            time.sleep(rng.uniform(0, 0.004))  # pacing of the load

    def restarter() -> None:
        rng = random.Random("restart")
        while not stop_load.is_set():
            time.sleep(rng.uniform(0.1, 0.8))  # pacing: restarts at random moments
            gate.checkpoint()
            if stop_load.is_set() or not manager.is_server_running():
                continue
            # Our own reference keeps the server from stopping under the restart.
            with manager.lease(config=cfg):
                server = manager.force_restart()
                assert server.running, "force_restart returned a stopped server"
                assert manager.ref_count >= 2, manager.ref_count  # us and the anchor at least
            figures.restarts_requested += 1

    sse_logs = [ClientLog(f"sse{i}", failures) for i in range(SSE_CLIENTS)]
    ws_logs = [ClientLog(f"ws{i}", failures) for i in range(WS_CLIENTS)]
    threads = [
        threading.Thread(
            target=failures.guard(f"worker{i}", lambda i=i: worker(i)), name=f"torture-worker-{i}"
        )
        for i in range(WORKERS)
    ]
    threads.append(threading.Thread(target=failures.guard("restarter", restarter), name="torture-restart"))
    clients = [
        threading.Thread(
            target=failures.guard(log.name, lambda log=log: sse_client(log, stop_clients, target)),
            name=f"torture-{log.name}",
        )
        for log in sse_logs
    ]
    clients += [
        threading.Thread(
            target=failures.guard(log.name, lambda log=log: ws_client(log, stop_clients, target)),
            name=f"torture-{log.name}",
        )
        for log in ws_logs
    ]

    anchor_refs = 1
    started = time.monotonic()
    for t in clients + threads:
        t.start()
    try:
        next_check = started + QUIESCE_EVERY
        while time.monotonic() - started < seconds and not failures.items:
            time.sleep(0.05)  # pacing of the supervisor
            if time.monotonic() < next_check:
                continue
            # -- a quiescent point: nobody but the test holds a reference --
            gate.close()
            figures.quiescent_checks += 1
            status = manager.status()
            assert manager.ref_count == anchor_refs == status["ref_count"], status
            assert status["running"] and status["loop_thread_alive"], status
            rest = httpx.get(f"{anchor.urls['rest']}/api/status", timeout=5).json()
            assert rest["ref_count"] == anchor_refs, rest
            if figures.quiescent_checks % 2 == 0:
                # Let the count reach zero: the server stops, its ports are free.
                ports = list(anchor.ports.values())
                release_stream_server()
                anchor_refs = 0
                assert not manager.is_server_running()
                assert manager.status()["ref_count"] == 0
                assert all(port_is_bindable(p) for p in ports), ports
                anchor = get_stream_server(config=cfg)
                anchor_refs = 1
                figures.full_stops += 1
                figures.ports_used.update(anchor.ports.values())
            gate.open()
            next_check = time.monotonic() + QUIESCE_EVERY
    finally:
        stop_load.set()
        gate.open()
        for t in threads:
            t.join(30)
        # Every client must catch up with the head: nothing stuck or silently lost.
        target[0] = anchor.publish("marker", {"end": True}) if manager.is_server_running() else -1
        stop_clients.set()
        for t in clients:
            t.join(30)
    loads_alive = [t.name for t in threads + clients if t.is_alive()]
    assert not loads_alive, f"threads still running: {loads_alive}"
    assert not failures.items, "\n".join(failures.items)

    status = manager.status()
    assert manager.ref_count == anchor_refs == status["ref_count"] == 1, status
    for log in sse_logs + ws_logs:
        assert log.last == target[0], f"{log.name} stopped at {log.last}, head {target[0]}"
        assert log.connections >= 2, f"{log.name} never resumed ({log.connections} connection)"
    published = status["events"]["published"]
    restarts = status["restarts"]
    # The last reference goes: everything is released.
    release_stream_server()
    assert not manager.is_server_running()
    manager.cleanup()
    wait_for(
        lambda: all(port_is_bindable(p) for p in figures.ports_used),
        timeout=10,
        what="every port used to be free",
    )
    wait_for(
        lambda: threading.active_count() <= threads_before,
        timeout=10,
        what=f"threads back to {threads_before} (now {threading.active_count()}: "
        f"{[t.name for t in threading.enumerate()]})",
    )
    wait_for(
        lambda: proc.num_fds() <= fds_before,
        timeout=10,
        what=f"file descriptors back to {fds_before} (now {proc.num_fds()})",
    )

    logs = sse_logs + ws_logs
    delivered = sum(log.frames for log in logs)
    print(
        f"\ntorture {seconds:.0f} s: {published} events published "
        f"({figures.logged} log() calls in {figures.cycles} get/log/release cycles by {WORKERS} threads); "
        f"{delivered} delivered to {len(logs)} clients over {sum(log.connections for log in logs)} "
        f"connections; {sum(log.gaps for log in logs)} gaps announced "
        f"({sum(log.lost for log in logs)} events skipped); {restarts} restarts survived "
        f"({figures.restarts_requested} force_restart, {figures.full_stops} stops at zero references); "
        f"{figures.quiescent_checks} quiescent ref_count checks; "
        f"{sum(log.discarded for log in ws_logs)} WebSocket frames sent before a resubscription "
        f"took effect; {sum(log.timeouts for log in logs)} client read timeouts"
    )
    assert figures.restarts_requested >= 1 or seconds < 2
    assert sum(log.frames for log in logs) > 0
