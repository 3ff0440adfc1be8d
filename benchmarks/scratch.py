"""A data directory of its own for a script's hubs.

Hubs persist by default (contract v3) and claim run names in the data
directory, so every benchmark and screenshot script points
``STREAM_HUB_HOME`` at a temporary directory (inherited by the processes it
starts, removed at exit) unless the caller set one: nothing a script runs
lands among the user's runs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def scratch_home(prefix: str = "stream_hub-bench-") -> str:
    """Set ``STREAM_HUB_HOME`` to a new temporary directory unless it is set; return it."""
    home = os.environ.get("STREAM_HUB_HOME")
    if home:
        return home
    home = tempfile.mkdtemp(prefix=prefix)
    os.environ["STREAM_HUB_HOME"] = home
    atexit.register(shutil.rmtree, home, True)
    return home
