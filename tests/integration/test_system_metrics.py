"""The system-metrics publisher: its samples (CPU, memory, GPUs through a
stand-in for nvidia-ml-py), its thread, and a hosting server that starts and
stops it and serves its curves as the run ``_system``."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stream_hub import TrainingStreamServer
from stream_hub.system_metrics import SYSTEM_RUN, SystemMetrics

from ..conftest import free_config, wait_for

BASE = {"cpu/percent", "cpu/process_percent", "memory/percent", "memory/rss_mb"}


class Intake:
    """Collects what the publisher submits."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def submit(
        self,
        event_type: str,
        run: str | None,
        step: int | None,
        payload: Any,
        ts: Any = None,
        rank: Any = None,
    ) -> int:
        with self.lock:
            self.events.append((event_type, run, step, payload, rank))
            return len(self.events)


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """A stand-in for nvidia-ml-py with two GPUs."""
    state = types.SimpleNamespace(shutdowns=0)
    module = types.ModuleType("pynvml")
    module.nvmlInit = lambda: None  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=40 + h)  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * 2**30, total=8 * 2**30)  # type: ignore[attr-defined]

    def shutdown() -> None:
        state.shutdowns += 1

    module.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", module)
    yield state


def test_a_sample_has_cpu_and_memory() -> None:
    sample = SystemMetrics(Intake(), 1.0).sample()
    assert BASE <= set(sample) and all(isinstance(v, float) for v in sample.values())
    assert 0 <= sample["memory/percent"] <= 100 and sample["memory/rss_mb"] > 1


def test_gpus_come_from_nvml_when_it_is_installed(fake_nvml: types.SimpleNamespace) -> None:
    metrics = SystemMetrics(Intake(), 1.0)
    sample = metrics.sample()
    assert sample["gpu0/util_percent"] == 40 and sample["gpu1/util_percent"] == 41
    assert sample["gpu1/memory_used_mb"] == 2048 and sample["gpu0/memory_percent"] == 12.5
    metrics.stop()
    assert fake_nvml.shutdowns == 1


def test_without_nvml_there_are_no_gpu_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert set(SystemMetrics(Intake(), 1.0).sample()) == BASE


def test_the_thread_publishes_metric_events_of_the_system_run_until_stopped() -> None:
    intake = Intake()
    metrics = SystemMetrics(intake, 0.01)
    metrics.start()
    metrics.start()  # a no-op while running
    wait_for(lambda: len(intake.events) >= 3, what="three samples")
    metrics.stop()
    assert not metrics.running
    count = len(intake.events)
    assert [e[2] for e in intake.events] == list(range(count))  # the step counts samples
    assert {(e[0], e[1], e[4]) for e in intake.events} == {("metric", SYSTEM_RUN, None)}


def test_a_hosting_server_publishes_them_while_it_runs() -> None:
    server = TrainingStreamServer(free_config(system_metrics=0.05))
    server.start()
    try:
        rest = server.urls["rest"]

        def system_run() -> dict[str, Any] | None:
            runs = httpx.get(f"{rest}/api/runs", timeout=5).json()["runs"]
            return next((r for r in runs if r["run"] == SYSTEM_RUN and r["metric_events"] >= 2), None)

        run = wait_for(system_run, what="system metrics served")
        assert BASE <= set(run["metrics"])
        assert SYSTEM_RUN not in server.live_runs()  # not one of this process's runs
        assert any(t.name == "stream-hub-system-metrics" for t in threading.enumerate())
    finally:
        server.stop()
    assert not any(t.name == "stream-hub-system-metrics" for t in threading.enumerate())


def test_off_by_default() -> None:
    server = TrainingStreamServer(free_config())
    server.start()
    try:
        assert server._system is None
    finally:
        server.stop()
