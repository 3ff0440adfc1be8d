"""What the hub's detectors (stream_hub/core/watch.py) cost per committed
metric event, beside a baseline: the same commits with the watch taken off.

Events are submitted to a hub with no server (nothing else runs) and
committed in batches of ``--batch`` (what the loop does); the time per event
is the commit's (ring + run curves + detectors), the best of ``--rounds``
rounds, each round a fresh hub. Shapes: a run logging a ``loss`` and three
other metrics (the divergence rule's window works on every event), and the
same without any loss metric (only the NaN check). Nothing is wrong in the
data, so no alert is raised: the figure is what watching costs while all
is well.

    python scripts/bench_watch.py [--events 200000] [--batch 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import time

from stream_hub.core.hub import Hub

SHAPES = {
    "loss + 3 metrics": lambda i: {
        "train/loss": 1 + i * 7 % 13 / 13,
        "acc": 0.5,
        "lr": 3e-4,
        "grad_norm": 1.5,
    },
    "4 metrics, no loss": lambda i: {"acc": 0.5, "lr": 3e-4, "grad_norm": 1.5, "tokens": float(i)},
}


class Held:
    """A notifier that commits nothing by itself: the benchmark commits."""

    def wake(self) -> None:
        pass

    def wake_urgent(self) -> None:
        pass

    def committed(self) -> None:
        pass


def per_event(events: int, batch: int, metrics: object, watched: bool) -> float:
    """Seconds per event of committing ``events`` metric events, ``batch`` at a time."""
    hub = Hub(history_size=batch * 2, series_points=1000)
    if not watched:
        hub.runs.watch = None
    hub.attach(Held())  # submitting then only queues; commit() below does the work
    make = SHAPES[str(metrics)]
    payloads = [make(i) for i in range(batch)]
    elapsed = 0.0
    gc.collect()
    for start in range(0, events, batch):
        for i, payload in enumerate(payloads):
            hub.intake.submit("metric", "exp1", start + i, payload)
        began = time.perf_counter()
        hub.commit()
        elapsed += time.perf_counter() - began
    assert not hub.watch.raised and not hub.watch.counts, "the data raised an alert: not a baseline"
    return elapsed / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"commit cost per metric event, best of {args.rounds} rounds of {args.events} events")
    print(f"{'shape':<22}{'without detectors':>20}{'with detectors':>18}{'difference':>14}")
    for shape in SHAPES:
        # Interleaved rounds: a slow moment of the machine hits both sides alike.
        base, watched = [], []
        for _ in range(args.rounds):
            base.append(per_event(args.events, args.batch, shape, watched=False))
            watched.append(per_event(args.events, args.batch, shape, watched=True))
        b, w = min(base) * 1e6, min(watched) * 1e6
        print(f"{shape:<22}{b:>17.3f} µs{w:>15.3f} µs{w - b:>+11.3f} µs")


if __name__ == "__main__":
    main()
