"""Many processes, one hub: what joining costs a process, what one hub takes
in from four processes, and what hosting the hub elsewhere saves training.

A ``stream-hub serve`` subprocess hosts the hub on fixed free ports
(:mod:`benchmarks.served`). It and this worker (and the worker's publisher
processes) share one private ``XDG_RUNTIME_DIR``, so they meet in a registry
of their own: with ``port_conflict="auto"`` this worker *joins* the served
hub (``log()`` returns ``None`` there; the host numbers the events).

- ``joined_publish_us``: µs per ``log()`` call in the joined worker (joined
  the default way: over a shared-memory ring, see :mod:`benchmarks.shm_figures`
  for the socket channel beside it), long batches of back-to-back calls as in
  the in-process publish figure (the hub's last_seq is waited for
  between batches, so every batch starts with nothing queued). Each joined
  batch is followed by one into a hub this process hosts, for a comparison at
  the same moment (details).
- ``ingest_4proc_per_s``: four spawned processes join, are released together
  and log ``processes_ingest_events`` events each as fast as they can; events
  per second from the release until the hub has acknowledged (numbered) the
  last of them, once its last_seq over REST shows them all (the host's CPU
  per event in the details).
- Training with ``train_clients`` SSE clients watching, the hub in the
  training process (``inproc``) or in the ``stream-hub serve`` process the
  training process joins (``serve``): segments with no hub alternate with
  watched ones, each of those compared with its two neighbours, as in the
  slowdown group. ``train_cpu_s_per_m_*`` is the CPU the hub costs the
  training process per million deliveries (events received by all clients):
  the CPU of the ``log()`` calls plus that of every thread but the training
  thread, from the start of the segment until every client had every event.
  It is measured, not a difference of two noisy numbers, so it is the stable
  figure; ``train_slowdown_*_pct`` (steps/s against the neighbours) is the
  noisy one. Medians in the table; every value, min and max in the details,
  with the same CPU per event and per ``log()`` call (one event per step: each
  call wakes the hub's committing thread, unlike back-to-back calls) and, for
  ``serve``, the serve process's own CPU per million deliveries.

The baseline (the hand-written hub of :mod:`benchmarks.baseline`) lives only
inside the training process: it has no joining, no multi-process ingest and
no separate server. For it only the in-process training figures are
measured; the joined, ingest and serve rows have no baseline (n/a).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import queue
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .clients import LoadClient
from .served import ServedHub, private_registry
from .sides import make_side
from .training import work

__all__ = ["fig_processes"]

METRICS = {"loss": 0.123456, "acc": 0.9}
PUBLISHERS = 4


def _spread(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "all": values}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite), "all": values}


class _HubCpu:
    """CPU of every thread but this one, from now until :meth:`stop`."""

    def __init__(self) -> None:
        self.process0, self.thread0 = time.process_time(), time.thread_time()

    def stop(self) -> float:
        return (time.process_time() - self.process0) - (time.thread_time() - self.thread0)


# -- publish cost, joined --------------------------------------------------------------------


def _batch(log: Callable[..., Any], batch: int) -> tuple[float, float]:
    """One batch of back-to-back ``log()`` calls: (µs per call, µs of other
    threads' CPU per call meanwhile)."""
    cpu = _HubCpu()
    t0 = time.perf_counter_ns()
    for i in range(batch):
        log(METRICS, step=i, run="pub")
    us = (time.perf_counter_ns() - t0) / batch / 1000.0
    return us, cpu.stop() / batch * 1e6


def _wait_committed(server: Any, timeout: float = 60.0) -> None:
    """Until a hosting server has committed everything logged to it so far."""
    last = server.log(METRICS, step=0, run="pub")  # hosting, log() returns the seq
    deadline = time.monotonic() + timeout
    while server.status()["last_seq"] < last and time.monotonic() < deadline:
        threading.Event().wait(0.001)


def _joined_publish(hub: ServedHub, batches: int, batch: int) -> dict[str, Any]:
    """Batches joined to the served hub, each followed by one in a hub this
    process hosts (ports 0: it meets nobody), so the two compare at the same
    moment of a drifting machine."""
    from stream_hub import StreamConfig, TrainingStreamServer

    local = TrainingStreamServer(StreamConfig(host="127.0.0.1", sse_port=0, ws_port=0, rest_port=0))
    local.start()
    seq = hub.last_seq()
    joined = hub.join()
    try:
        returned = joined.log(METRICS, step=0, run="pub")
        seq += 1
        out, forwarder_us, inproc, complete = [], [], [], True
        for k in range(batches + 1):  # round 0 warms caches and code paths, uncounted
            us, others_us = _batch(joined.log, batch)
            seq += batch
            # Each batch starts with nothing left to forward or commit.
            complete = hub.wait_seq(seq, timeout=60) >= seq and complete
            local_us = _batch(local.log, batch)[0]
            _wait_committed(local)
            if k:
                out.append(us)
                forwarder_us.append(others_us)
                inproc.append(local_us)
        forwarding = joined.status().get("forwarding", {})
    finally:
        joined.stop()
        local.stop()
    return {
        "joined_publish_us": statistics.median(out),
        "details": {
            "batches_us": out,
            "forwarder_cpu_us_per_event_during_batch": forwarder_us,
            "inproc_batches_us_same_process": inproc,
            "inproc_publish_us_same_process": statistics.median(inproc),
            "log_returned": repr(returned),
            "all_reached_hub": complete,
            "forwarding": forwarding,
        },
    }


# -- ingest from four processes ----------------------------------------------------------------


def _publisher_main(config: dict[str, Any], n: int, ready: Any, failed: Any, go: Any, out: Any) -> None:
    """One publisher process: join, get ready, wait for ``go``, log ``n`` events."""
    from stream_hub import StreamConfig, TrainingStreamServer

    server = TrainingStreamServer(StreamConfig(**config))
    server.start()
    if server.role != "joined":
        with failed.get_lock():
            failed.value += 1
    ready.release()
    if server.role != "joined" or not go.wait(120):
        server.stop()
        return
    log = server.log
    t0 = time.perf_counter()
    for i in range(n):
        log(METRICS, step=i, run="ingest")
    spent = time.perf_counter() - t0
    # Over the socket, the host acknowledges each batch once it has taken its
    # events (the forwarder reads the acknowledgements at least every 50 ms);
    # over shared memory, "sent" is what went into the ring, and the hub has
    # taken it all once the ring holds nothing unread.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        forwarding = server.status()["forwarding"]
        if forwarding["sent"] >= n and not forwarding.get("unread_bytes"):
            break
        threading.Event().wait(0.001)
    acknowledged_at = time.time()
    server.stop(timeout=60)
    out.put(
        {
            "log_us": spent / n * 1e6,
            "acknowledged": forwarding["sent"],
            "acknowledged_at": acknowledged_at,
            "dropped": forwarding["dropped"],
        }
    )


def _ingest(hub: ServedHub, n: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, failed, go, out = ctx.Semaphore(0), ctx.Value("i", 0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_publisher_main,
            args=(hub.config(), n, ready, failed, go, out),
            name=f"bench-publisher-{i}",
        )
        for i in range(PUBLISHERS)
    ]
    base = hub.last_seq()
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            if not ready.acquire(timeout=60):
                raise RuntimeError("a publisher process did not get ready")
        if failed.value:
            raise RuntimeError(f"{failed.value} publisher processes did not join the served hub")
        target = base + PUBLISHERS * n
        host_cpu0 = hub.cpu_seconds()
        t0 = time.time()
        go.set()
        # Each publisher leaves once the host has everything it sent; when all
        # have left and the target is not reached, it never will be. A poll
        # costs the host a few hundred µs of CPU (tens of events) and, while
        # it ingests, waits long for an answer: the time comes from the
        # publishers' acknowledgements, the polls only confirm the commit.
        polls0 = hub.polls
        reached = hub.wait_seq(
            target, timeout=300, poll=0.02, give_up=lambda: not any(p.is_alive() for p in procs)
        )
        polled = time.time() - t0
        host_cpu = hub.cpu_seconds() - host_cpu0
        reports = []
        for _ in procs:  # one report from each publisher that lived to the end
            try:
                reports.append(out.get(timeout=60))
            except queue.Empty:
                break
    finally:
        for proc in procs:
            if not go.is_set():
                proc.terminate()  # an error before the start: nothing to wait for
            proc.join(60)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    committed = reached - base
    complete = committed >= PUBLISHERS * n and len(reports) == PUBLISHERS
    elapsed = max(r["acknowledged_at"] for r in reports) - t0 if complete else math.nan
    return {
        "ingest_4proc_per_s": committed / elapsed if complete else math.nan,
        "details": {
            "events": PUBLISHERS * n,
            "committed": committed,
            "elapsed_s": elapsed,
            "elapsed_until_rest_showed_all_s": polled,
            "host_cpu_s": host_cpu,
            "host_cpu_us_per_event": host_cpu / committed * 1e6 if committed else None,
            "health_polls": hub.polls - polls0,
            "log_us_per_process": [r["log_us"] for r in reports],
            "acknowledged_s_per_process": [r["acknowledged_at"] - t0 for r in reports],
            "dropped_per_process": [r["dropped"] for r in reports],
            "publishers_reporting": len(reports),
        },
    }


# -- training with 50 SSE clients: hub in process vs joined to stream-hub serve ----------------


def _train(seconds: float, work_n: int, log: Callable[..., Any] | None) -> dict[str, Any]:
    """One segment of training: steps/s, process CPU µs per step, and the
    training thread's CPU inside ``log()`` (timed the same way with no hub)."""
    steps, log_cpu = 0, 0.0
    metrics = {"loss": 0.5, "acc": 0.5}
    thread_time = time.thread_time
    cpu0 = time.process_time()
    t0 = now = time.perf_counter()
    while now - t0 < seconds:
        work(work_n)
        c0 = thread_time()
        if log is not None:
            metrics["loss"] = 1.0 / (steps + 1)
            log(metrics, step=steps, run="train")
        log_cpu += thread_time() - c0
        steps += 1
        now = time.perf_counter()
    return {
        "rate": steps / (now - t0),
        "cpu_us_per_step": (time.process_time() - cpu0) / steps * 1e6,
        "steps": steps,
        "log_cpu_s": log_cpu,
    }


def _watched(seg: dict[str, Any], others_cpu: float, done: dict[str, Any], published: int) -> dict[str, Any]:
    deliveries = sum(done["counts"])
    hub_cpu = seg["log_cpu_s"] + others_cpu
    return {
        **seg,
        "other_threads_cpu_s": others_cpu,
        "hub_cpu_s": hub_cpu,
        "published": published,
        "deliveries": deliveries,
        "complete": bool(done["ok"]),
        "cpu_s_per_m": hub_cpu / deliveries * 1e6 if deliveries else math.nan,
        "cpu_us_per_event": hub_cpu / published * 1e6,
        "log_cpu_us_per_call": seg["log_cpu_s"] / seg["steps"] * 1e6,
    }


def _inprocess_segment(side_name: str, sz: Mapping[str, Any], client: LoadClient) -> dict[str, Any]:
    """A segment with a fresh hub in this process and ``train_clients`` SSE clients on it."""
    side = make_side(side_name)
    side.start()
    try:
        n = sz["train_clients"]
        reply = client.connect("sse", side.ports["sse"], n)
        if reply["n"] != n:
            raise RuntimeError(f"only {reply['n']} of {n} SSE clients connected: {reply}")
        for _ in range(40):  # a client counts once an event reached it
            first = side.log({"probe": 1.0}, step=0, run="warmup")
            if client.sync(first, timeout=0.25)["ok"]:
                break
        else:
            raise RuntimeError("the SSE clients never all received a probe")
        cpu = _HubCpu()
        seg = _train(sz["train_segment_s"], sz["work_n"], side.log)
        last = side.log(METRICS, step=0, run="train-end")
        done = client.expect(last, timeout=60)
        others = cpu.stop()
        client.drop()
    finally:
        side.stop()
    return _watched(seg, others, done, last - first)


def _served_segment(hub: ServedHub, sz: Mapping[str, Any], client: LoadClient) -> dict[str, Any]:
    """A segment joined to the served hub, whose clients stay connected throughout."""
    seq = hub.last_seq()  # nothing else publishes: our events are seq + 1, + 2, ...
    server = hub.join()
    try:
        for _ in range(20):
            server.log({"probe": 1.0}, step=0, run="warmup")
            seq += 1
            if client.sync(seq, timeout=2.0)["ok"]:
                break
        else:
            raise RuntimeError("the served hub's SSE clients never all received a probe")
        first, serve0 = seq, hub.cpu_seconds()
        cpu = _HubCpu()
        seg = _train(sz["train_segment_s"], sz["work_n"], server.log)
        server.log(METRICS, step=0, run="train-end")
        seq += seg["steps"] + 1
        done = client.expect(seq, timeout=60)
        others = cpu.stop()
        serve_cpu = hub.cpu_seconds() - serve0
    finally:
        server.stop()
    result = _watched(seg, others, done, seq - first)
    result["serve_cpu_s"] = serve_cpu
    result["hub_last_seq_matches"] = hub.last_seq() == seq
    return result


def _training(side_name: str, sz: Mapping[str, Any], hub: ServedHub | None) -> dict[str, Any]:
    """Alone, watched, alone, watched, ... alone: each watched segment against its neighbours."""
    seg_s, work_n = sz["train_segment_s"], sz["work_n"]
    modes = ["inproc", "serve"] if hub is not None else ["inproc"]
    watched: list[tuple[str, dict[str, Any]]] = []
    with contextlib.ExitStack() as stack:
        local = stack.enter_context(LoadClient())  # reconnects to each fresh in-process hub
        if hub is not None:
            remote = stack.enter_context(LoadClient())  # stays on the served hub
            n = sz["train_clients"]
            reply = remote.connect("sse", hub.ports["sse"], n)
            if reply["n"] != n:
                raise RuntimeError(f"only {reply['n']} of {n} SSE clients reached the served hub: {reply}")
        # Warm-up, uncounted: the first hub of a process pays for imports and
        # first-time code paths (several times the CPU of the next ones).
        _train(seg_s / 2, work_n, None)
        _inprocess_segment(side_name, {**sz, "train_segment_s": seg_s / 2}, local)
        alone = [_train(seg_s, work_n, None)]
        for _ in range(sz["processes_train_reps"]):
            for mode in modes:
                if mode == "inproc":
                    watched.append((mode, _inprocess_segment(side_name, sz, local)))
                else:
                    assert hub is not None
                    watched.append((mode, _served_segment(hub, sz, remote)))
                alone.append(_train(seg_s, work_n, None))

    figures: dict[str, Any] = {}
    details: dict[str, Any] = {
        "clients": sz["train_clients"],
        "work_n": work_n,
        "steps_per_s_alone": [a["rate"] for a in alone],
        "cpu_us_per_step_alone": [a["cpu_us_per_step"] for a in alone],
    }
    for mode in modes:
        slowdown, cpu_overhead, per_m, segments = [], [], [], []
        for i, (m, w) in enumerate(watched):
            if m != mode:
                continue
            before, after = alone[i], alone[i + 1]
            slowdown.append((1.0 - 2 * w["rate"] / (before["rate"] + after["rate"])) * 100.0)
            ref_cpu = (before["cpu_us_per_step"] + after["cpu_us_per_step"]) / 2
            cpu_overhead.append((w["cpu_us_per_step"] / ref_cpu - 1.0) * 100.0)
            per_m.append(w["cpu_s_per_m"])
            segments.append(w)
        figures[f"train_cpu_s_per_m_{mode}"] = _spread(per_m)["median"]
        figures[f"train_slowdown_{mode}_pct"] = _spread(slowdown)["median"]
        details[mode] = {
            "cpu_s_per_m_deliveries": _spread(per_m),
            "cpu_us_per_event": _spread([w["cpu_us_per_event"] for w in segments]),
            "log_cpu_us_per_call": _spread([w["log_cpu_us_per_call"] for w in segments]),
            "slowdown_pct": _spread(slowdown),
            "paired_cpu_overhead_pct": _spread(cpu_overhead),
            "segments": segments,
        }
        if mode == "serve":
            # Over all segments at once: the serve process's CPU is read from
            # /proc, in clock ticks (10 ms), too coarse for one short segment.
            delivered = sum(w["deliveries"] for w in segments)
            serve_cpu = sum(w["serve_cpu_s"] for w in segments)
            details[mode]["serve_process_cpu_s_per_m"] = serve_cpu / delivered * 1e6 if delivered else None
    return {"figures": figures, "details": details}


def fig_processes(side_name: str, sz: Mapping[str, Any]) -> dict[str, Any]:
    if side_name != "stream_hub":
        return _training(side_name, sz, None)
    with private_registry() as runtime:
        hub = ServedHub(runtime)
        try:
            publish = _joined_publish(hub, sz["publish_batches"], sz["publish_batch"])
            ingest = _ingest(hub, sz["processes_ingest_events"])
            training = _training(side_name, sz, hub)
        finally:
            hub.stop()
    details = {"publish": publish.pop("details"), "ingest": ingest.pop("details"), **training["details"]}
    details["served_ports"] = hub.ports
    return {"figures": {**publish, **ingest, **training["figures"]}, "details": details}
