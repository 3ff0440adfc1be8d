"""The garbage collector of a process that only serves (stream_hub.runtime.collector),
in a process of its own: the choices are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

TUNED = """
import gc, json
from stream_hub.runtime.collector import SERVING_THRESHOLDS, tune_for_serving
loaded = [[k] for k in range(1000)]  # alive when tuned: out of the collector's sight
frozen = tune_for_serving()
later = [[k] for k in range(1000)]  # made after: the collector still walks it
walked = {id(o) for o in gc.get_objects()}
print(json.dumps({
    "frozen": frozen,
    "thresholds": list(gc.get_threshold()) == list(SERVING_THRESHOLDS),
    "loaded_walked": any(id(x) in walked for x in loaded),
    "later_walked": all(id(x) in walked for x in later),
}))
"""


def test_what_is_loaded_is_frozen_and_collections_are_rarer() -> None:
    command = [sys.executable, "-c", TUNED]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["frozen"] > 1000 and got["thresholds"]
    assert not got["loaded_walked"] and got["later_walked"]
