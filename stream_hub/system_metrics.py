"""The machine's own metrics, published by the hosting process:
``StreamConfig(system_metrics=5.0)`` (seconds between samples; ``True`` is 5 s).

Every sample is one metric event of the reserved run :data:`SYSTEM_RUN`
(``"_system"``), so it is kept, served and exported like any curve, while the
dashboard shows it in a section of its own instead of as a run. Its step counts
samples. Names:

- ``cpu/percent`` (the whole machine), ``cpu/process_percent`` (this process,
  100 = one core), ``memory/percent`` (the machine), ``memory/rss_mb`` (this
  process);
- with ``nvidia-ml-py`` installed (``pip install stream_hub[gpu]``) and an
  NVIDIA driver present, per GPU ``i``: ``gpu{i}/util_percent``,
  ``gpu{i}/memory_percent`` and ``gpu{i}/memory_used_mb``.

A daemon thread samples and submits to the hub's intake (never through
``log()``, so ``_system`` is not one of this process's runs: it is not
finished at exit nor counted as live). It starts when this process starts
hosting and stops when it stops hosting.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Protocol

import psutil

from .runtime.signals import block_sigterm_in_this_thread

__all__ = ["SYSTEM_RUN", "SystemMetrics"]

logger = logging.getLogger(__name__)

#: The run that system metrics are published to (runs starting with "_" are the hub's own).
SYSTEM_RUN = "_system"

_MB = 1024 * 1024


class Submitter(Protocol):
    """Where samples go (the hub's intake)."""

    def submit(
        self,
        event_type: str,
        run: str | None,
        step: int | None,
        payload: Any,
        ts: float | None = None,
        rank: int | None = None,
    ) -> int: ...


class SystemMetrics:
    """Samples the machine every ``interval`` seconds on a daemon thread."""

    def __init__(self, intake: Submitter, interval: float) -> None:
        self.intake = intake
        self.interval = interval
        self.samples = 0
        self._process: psutil.Process | None = None
        self._gpus: list[Any] | None = None  # NVML handles, once looked for
        self._nvml: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sampling (a no-op while it runs)."""
        if self.running:
            return
        self._stop = threading.Event()
        self._process = psutil.Process()  # looked up here: a forked child that hosts is another process
        # The first cpu_percent() calls only start their measuring interval.
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)
        self._thread = threading.Thread(target=self._run, name="stream-hub-system-metrics", daemon=True)
        self._thread.start()
        logger.info("publishing system metrics every %g s as run %r", self.interval, SYSTEM_RUN)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sampling; waits for the thread at most ``timeout`` s."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._close_nvml()

    def _run(self) -> None:
        block_sigterm_in_this_thread()  # SIGTERM is the main thread's (runtime/signals.py)
        stop = self._stop
        while not stop.wait(self.interval):
            try:
                sample = self.sample()
            except Exception:  # a sensor that fails must not end sampling for good
                logger.debug("system metrics sample failed", exc_info=True)
                continue
            self.intake.submit("metric", SYSTEM_RUN, self.samples, sample)
            self.samples += 1

    def sample(self) -> dict[str, float]:
        """One sample of every metric available here."""
        process = self._process or psutil.Process()
        memory = process.memory_info()
        out = {
            "cpu/percent": float(psutil.cpu_percent(None)),
            "cpu/process_percent": float(process.cpu_percent(None)),
            "memory/percent": float(psutil.virtual_memory().percent),
            "memory/rss_mb": memory.rss / _MB,
        }
        for i, handle in enumerate(self._gpu_handles()):
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:  # a GPU that fell off the bus, a driver reset
                continue
            out[f"gpu{i}/util_percent"] = float(util.gpu)
            out[f"gpu{i}/memory_used_mb"] = mem.used / _MB
            out[f"gpu{i}/memory_percent"] = 100.0 * mem.used / mem.total if mem.total else 0.0
        return out

    def _gpu_handles(self) -> list[Any]:
        """NVML's device handles; none without nvidia-ml-py or a driver."""
        if self._gpus is None:
            self._gpus = []
            try:
                pynvml = importlib.import_module("pynvml")  # nvidia-ml-py: optional, the [gpu] extra
                pynvml.nvmlInit()
                self._nvml = pynvml
                count = pynvml.nvmlDeviceGetCount()
                self._gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            except ImportError:
                logger.debug("nvidia-ml-py is not installed: no GPU metrics")
            except Exception as exc:  # no driver, no device
                logger.info("no GPU metrics: NVML is not available (%s)", exc)
        return self._gpus

    def _close_nvml(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
        self._gpus = None
