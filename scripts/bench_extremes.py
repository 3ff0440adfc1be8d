"""What keeping every extreme costs an overloaded commit
(stream_hub/core/extremes.py), beside the sample alone (the commit before it).

An overloaded commit is one that brings more events than the ring holds
(``history_size``): the ring keeps the newest, and the run curves get a
sample of the batch. With extremes, they also get, per (run, rank) and
metric, the events carrying the min and max of each stretch of the batch,
and every event that is not a metric. Events are submitted to a hub with no
server and committed ``--batch`` at a time into a ring of ``--ring``
events; the time per event of the commits, best of ``--rounds`` rounds,
each round a fresh hub, the sides interleaved. "Sample only" is the same
code with :func:`~stream_hub.core.extremes.must_observe` picking nothing;
"every event" commits the same batches into a ring large enough to hold
them (no overload: every event observed), for scale.

    python scripts/bench_extremes.py [--events 400000] [--batch 50000] [--ring 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from stream_hub.core import ring as ring_module
from stream_hub.core.hub import Hub

# name -> (metrics of event i, (run, rank) of event i)
Shape = tuple[Callable[[int], dict[str, float]], Callable[[int], tuple[str, int | None]]]
SHAPES: dict[str, Shape] = {
    "1 run, 4 metrics": (
        lambda i: {"train/loss": 1 + i * 7 % 13 / 13, "acc": 0.5, "lr": 3e-4, "grad_norm": 1.5},
        lambda i: ("exp1", None),
    ),
    "4 ranks, 4 metrics": (
        lambda i: {"train/loss": 1 + i * 7 % 13 / 13, "acc": 0.5, "lr": 3e-4, "grad_norm": 1.5},
        lambda i: ("exp1", i % 4),
    ),
    "50 runs, 20 metrics": (
        lambda i: {f"m{k}": float(i * (k + 1) % 97) for k in range(20)},
        lambda i: (f"run-{i % 50}", None),
    ),
}


class Held:
    """A notifier that commits nothing by itself: the benchmark commits."""

    def wake(self) -> None:
        pass

    def wake_urgent(self) -> None:
        pass

    def committed(self) -> None:
        pass


def _nothing(batch: list[Any], count: int, budget: int) -> tuple[set[int], Counter[str]]:
    return set(), Counter()


def per_event(events: int, batch: int, ring: int, shape: str, extremes: bool) -> float:
    """Seconds per event of committing ``events`` metric events, ``batch`` at a time."""
    hub = Hub(history_size=ring, series_points=1000)
    hub.runs.watch = None  # the detectors are measured elsewhere (bench_watch.py)
    hub.attach(Held())
    metrics, owner = SHAPES[shape]
    payloads = [metrics(i) for i in range(batch)]
    owners = [owner(i) for i in range(batch)]
    ring_module.must_observe = ring_module_must_observe if extremes else _nothing
    elapsed = 0.0
    gc.collect()
    try:
        for start in range(0, events, batch):
            submit = hub.intake.submit
            for i, payload in enumerate(payloads):
                run, rank = owners[i]
                submit("metric", run, start + i, payload, None, rank)
            began = time.perf_counter()
            hub.commit()
            elapsed += time.perf_counter() - began
    finally:
        ring_module.must_observe = ring_module_must_observe
    return elapsed / events


ring_module_must_observe = ring_module.must_observe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--ring", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(
        f"overloaded commits of {args.batch} events into a ring of {args.ring}: "
        f"time per event, best of {args.rounds} rounds of {args.events} events"
    )
    print(f"{'shape':<22}{'sample only':>14}{'with extremes':>16}{'difference':>14}{'every event':>15}")
    for shape in SHAPES:
        # Interleaved rounds: a slow moment of the machine hits every side alike.
        base, kept, full = [], [], []
        for _ in range(args.rounds):
            base.append(per_event(args.events, args.batch, args.ring, shape, extremes=False))
            kept.append(per_event(args.events, args.batch, args.ring, shape, extremes=True))
            full.append(per_event(args.events, args.batch, args.batch + 1, shape, extremes=True))
        b, k, f = min(base) * 1e6, min(kept) * 1e6, min(full) * 1e6
        print(f"{shape:<22}{b:>11.3f} µs{k:>13.3f} µs{k - b:>+11.3f} µs{f:>12.3f} µs")


if __name__ == "__main__":
    main()
