"""The end of a job, 20 times in a row: four ranks that log together and
exit together, a follower that sees all 800 events every time."""

from __future__ import annotations

from ..integration.test_end_of_job import _one_job
from ..processes import Spawner


def test_four_ranks_that_exit_together_lose_no_event_twenty_times_in_a_row(spawn: Spawner) -> None:
    for _ in range(20):
        _one_job(spawn)
