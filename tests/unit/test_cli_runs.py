"""``stream-hub runs``' RANKS column: a running run's rank that fell silent is named."""

from __future__ import annotations

from stream_hub.cli.runs import SILENT_S, _ranks


def test_a_running_runs_silent_rank_is_named_and_others_are_not() -> None:
    now = 1_000_000.0
    seen = {"0": now, "1": now - SILENT_S - 5, "2": now - 1}
    assert _ranks({"status": "running", "ranks": [0, 1, 2], "rank_last_ts": seen}) == "3 (1 silent)"
    # Once the run is over, ranks that ended early are not news.
    assert _ranks({"status": "finished", "ranks": [0, 1, 2], "rank_last_ts": seen}) == "3"
    assert _ranks({"status": "running", "ranks": [0, 1], "rank_last_ts": {"0": now, "1": now - 2}}) == "2"
    assert _ranks({"status": "running", "ranks": []}) == "-"
