"""Simulated training runs for the demo: realistic curves, several threads,
each holding its own reference to the shared server.

Each run logs loss (falling, with noise), accuracy (rising), a warm-up +
cosine learning-rate schedule, gradient norm and throughput, exactly as a
training loop would: ``get_stream_server()`` at the start, ``log()`` every
step, ``release_stream_server()`` at the end.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from dataclasses import dataclass

from .config import StreamConfig
from .manager import get_stream_server, release_stream_server

__all__ = ["SimulatedRun", "run_demo_threads"]

logger = logging.getLogger(__name__)


@dataclass
class SimulatedRun:
    """One fake training run; ``step_interval`` seconds between steps."""

    name: str
    steps: int = 2000
    step_interval: float = 0.05
    base_lr: float = 3e-4
    difficulty: float = 1.0
    seed: int = 0

    def metrics(self, step: int, rng: random.Random) -> dict[str, float]:
        progress = step / max(1, self.steps)
        warmup = min(1.0, step / (0.05 * self.steps + 1))
        lr = self.base_lr * warmup * 0.5 * (1 + math.cos(math.pi * progress))
        floor = 0.15 * self.difficulty
        loss = floor + (2.3 - floor) * math.exp(-5 * progress / self.difficulty)
        loss *= 1 + rng.gauss(0, 0.04)
        ceiling = 0.97 - 0.1 * (self.difficulty - 1)
        acc = min(0.999, (1 - math.exp(-4 * progress / self.difficulty)) * ceiling)
        acc = max(0.0, acc + rng.gauss(0, 0.01))
        return {
            "loss": round(loss, 5),
            "accuracy": round(acc, 5),
            "learning_rate": lr,
            "grad_norm": abs(rng.gauss(1.0 / (1 + 3 * progress), 0.1)),
            "samples_per_s": round(rng.gauss(2400 / self.difficulty, 60), 1),
        }

    def train(self, stop: threading.Event, config: StreamConfig | None = None) -> None:
        """Run to the end (or until ``stop``), logging one event per step."""
        server = get_stream_server(config=config)
        rng = random.Random(self.seed)
        try:
            server.publish("log", {"text": f"run {self.name} started"}, run=self.name)
            for step in range(self.steps):
                server.log(self.metrics(step, rng), step=step, run=self.name)
                if step and step % 500 == 0:
                    server.publish("log", {"text": f"checkpoint at step {step}"}, run=self.name)
                # Simulated compute time; the wait ends early when asked to stop.
                if stop.wait(self.step_interval):
                    break
            server.publish("log", {"text": f"run {self.name} finished"}, run=self.name)
        finally:
            release_stream_server()


def run_demo_threads(
    runs: int = 3,
    steps: int = 2000,
    step_interval: float = 0.05,
    stop: threading.Event | None = None,
    config: StreamConfig | None = None,
) -> tuple[list[threading.Thread], threading.Event]:
    """Start ``runs`` training threads; returns them and their stop event."""
    stop = stop or threading.Event()
    threads = []
    for i in range(runs):
        run = SimulatedRun(
            name=f"exp{i + 1}",
            steps=steps,
            step_interval=step_interval * (1 + 0.3 * i),
            base_lr=3e-4 * (1 + i),
            difficulty=1.0 + 0.35 * i,
            seed=i,
        )
        thread = threading.Thread(
            target=run.train, args=(stop, config), name=f"train-{run.name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads, stop
