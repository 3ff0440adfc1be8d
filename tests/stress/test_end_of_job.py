"""The end of a job, 20 times in a row for each way it ends: four ranks that
log together and end together — normally, by an uncaught exception, by
SIGTERM (with and without a handler of the user's), or mixed — and a
follower that sees all 800 events every time, all of them persisted."""

from __future__ import annotations

import pytest

from ..integration.test_end_of_job import JOBS, _one_job
from ..processes import Spawner

REPEATS = 20


@pytest.mark.parametrize("job", list(JOBS))
def test_four_ranks_that_end_together_lose_no_event_twenty_times_in_a_row(spawn: Spawner, job: str) -> None:
    for _ in range(REPEATS):
        _one_job(spawn, JOBS[job])
