"""A subscriber's filters and the hub's counters (stream_hub/core/cursor.py)."""

from __future__ import annotations

import pytest

from stream_hub.core.cursor import Cursor, HubCounters
from stream_hub.core.ring import SSE, WS


def test_a_cursor_without_filters_wants_everything() -> None:
    cursor = Cursor(5)
    assert (cursor.pos, cursor.fmt, cursor.epoch, cursor.pending_gap) == (5, SSE, "", None)
    assert not cursor.filtered
    assert cursor.wants("a", "metric") and cursor.wants(None, "note")


def test_empty_filters_mean_no_filter() -> None:
    cursor = Cursor(0, WS, runs=[], types=())
    assert cursor.runs is None and cursor.types is None and not cursor.filtered


@pytest.mark.parametrize(
    ("run", "event_type", "wanted"),
    [
        ("a", "metric", True),
        ("b", "metric", False),
        (None, "metric", True),  # the server's own events have no run
        ("a", "note", False),
        ("b", "gap", False),  # a gap of another run is not this subscriber's
        (None, "gap", True),  # whatever its type filter: it explains a hole
        (None, "shutdown", True),  # ... or the end of the stream
    ],
)
def test_filters_by_run_and_type(run: str | None, event_type: str, wanted: bool) -> None:
    cursor = Cursor(0, runs=["a"], types=["metric"])
    assert cursor.filtered
    assert cursor.wants(run, event_type) is wanted


def test_a_type_filter_alone_lets_gap_and_shutdown_through() -> None:
    cursor = Cursor(0, types={"log"})
    assert cursor.wants("x", "log") and cursor.wants("x", "gap") and cursor.wants(None, "shutdown")
    assert not cursor.wants("x", "metric")


def test_filters_are_copied() -> None:
    runs = ["a"]
    cursor = Cursor(0, runs=runs)
    runs.append("b")
    assert not cursor.wants("b", "metric")


def test_counters_report_shed_events_as_dropped() -> None:
    counters = HubCounters()
    counters.published, counters.delivered, counters.dropped, counters.rejected = 10, 7, 2, 1
    assert counters.as_dict() == {"published": 10, "delivered": 7, "dropped": 2, "rejected": 1}
    assert counters.as_dict(shed=5)["dropped"] == 7
