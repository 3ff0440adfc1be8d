"""``stream_hub.integrations.logging.capture()``: the records reach the hub
and the console shows exactly what it showed without it — a real
subprocess's stderr, with and without ``logging.basicConfig()`` before or
after the capture.

Before, the one-liner was ``logging.getLogger().addHandler(StreamHandler())``,
which changes the console: a ``basicConfig()`` after it does nothing (the
root logger has a handler), and without one Python's last resort stops
printing warnings (a handler was found). The last case here holds that.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import stream_hub.integrations.logging as hub_logging
from stream_hub import TrainingStreamServer

from ..conftest import committed
from ..processes import PYTHON, child_env, run

# The user's program: {setup} before, {capture}, {after} after, then logging.
PROGRAM = """
import json, logging, sys
{before}
{capture}
{after}
log = logging.getLogger("train")
log.info("step %d", 1)
log.warning("loss is %s", "high")
log.error("bad batch")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("division")
logging.getLogger("quiet").debug("not shown")
print("done", file=sys.stderr)
{report}
"""

CAPTURE = """
from stream_hub import TrainingStreamServer, StreamConfig
import stream_hub.integrations.logging as hub_logging
config = StreamConfig(sse_port=0, ws_port=0, rest_port=0, store=False, port_conflict="fail")
server = TrainingStreamServer(config)
server.start()
hub_logging.capture(server=server, run="logs")
"""

# The captured records, read back from the hub, on stdout (stderr is the console).
REPORT = """
import httpx
from stream_hub.integrations.logging import stop_capture
stop_capture()
rest = server.urls["rest"]
server.log({"x": 1.0}, run="logs")  # the last event: everything before it is committed once it is served
import time
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    events = httpx.get(rest + "/api/history", params={"run": "logs", "since": 0}, timeout=10).json()["events"]
    if any(e["type"] == "metric" for e in events):
        break
print(json.dumps([e["data"] for e in events if e["type"] == "log"]))
server.stop()
"""

SETUPS = {
    "no basicConfig": ("", ""),
    "basicConfig before": ("logging.basicConfig()", ""),
    "basicConfig after": ("", "logging.basicConfig()"),
    "basicConfig(INFO) after": (
        "",
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')",
    ),
}


def _hubs(line: str) -> bool:
    return line.startswith("stream_hub serving:") or any(
        word.startswith("stream_hub.") or word.startswith("websockets.")
        for word in line.replace(":", " ").split()[:2]
    )


def _console(before: str, after: str, captured: bool) -> tuple[str, str]:
    capture = CAPTURE if captured else "\n" * CAPTURE.count("\n")  # the same line numbers either way
    code = PROGRAM.format(before=before, after=after, capture=capture, report=REPORT if captured else "")
    done = run(["-c", textwrap.dedent(code)], prefix=PYTHON, env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    # The program's console, up to its last line (the report after it logs
    # its HTTP requests). The hub's own lines (where it serves, said on
    # stderr when logging is not configured; its records when INFO shows)
    # are the hub's, not the program's: left out of the comparison.
    program = done.stderr[: done.stderr.index("done\n") + 4]
    console = "\n".join(line for line in program.splitlines() if not _hubs(line))
    return console, done.stdout


@pytest.mark.parametrize("setup", list(SETUPS))
def test_capture_leaves_the_console_as_it_was(setup: str) -> None:
    before, after = SETUPS[setup]
    plain, _ = _console(before, after, captured=False)
    with_capture, stdout = _console(before, after, captured=True)
    assert with_capture == plain
    assert "loss is high" in plain and "done" in plain

    records = json.loads(stdout.splitlines()[-1])
    messages = [(r["level"], r["logger"], r["message"].splitlines()[0]) for r in records]
    shown_info = setup == "basicConfig(INFO) after"  # the records the configuration lets through
    expected = [("INFO", "train", "step 1")] if shown_info else []
    expected += [
        ("WARNING", "train", "loss is high"),
        ("ERROR", "train", "bad batch"),
        ("ERROR", "train", "division"),
    ]
    ours = [m for m in messages if m[1] == "train"]
    assert ours == expected, records
    assert "ZeroDivisionError" in records[[m[2] for m in messages].index("division")]["message"]


def test_a_root_handler_would_have_changed_the_console() -> None:
    """Why capture() does not add a handler: the old one-liner, for the record."""
    handler = "from stream_hub.integrations.logging import StreamHandler\nimport stream_hub\n" + (
        "logging.getLogger().addHandler(StreamHandler(server=stream_hub.TrainingStreamServer("
        "stream_hub.StreamConfig(store=False))))"
    )
    plain, _ = _console("", "logging.basicConfig(format='console: %(message)s')", captured=False)
    code = PROGRAM.format(
        before="", capture=handler, after="logging.basicConfig(format='console: %(message)s')", report=""
    )
    done = run(["-c", textwrap.dedent(code)], prefix=PYTHON, env=child_env(), timeout=60)
    assert "console: loss is high" in plain
    assert "console: loss is high" not in done.stderr  # basicConfig did nothing


# -- where the records are taken: past the logger's filters, with extra --------------------


def _logged(server: TrainingStreamServer, run: str) -> list[dict[str, Any]]:
    """The ``log`` events of ``run`` in the hub, once a marker logged last is committed."""
    seq = server.log({"marker": 1.0}, run=run)
    assert seq is not None
    committed(server, seq)
    rest = server.urls["rest"]
    events = httpx.get(rest + "/api/history", params={"run": run, "since": 0}, timeout=10).json()["events"]
    return [e["data"] for e in events if e["type"] == "log"]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Whatever a test does to logging's classes and loggers is undone."""
    call_handlers = logging.Logger.callHandlers
    yield
    hub_logging.stop_capture()
    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
    for name in ("review.filtered", "review.extra", "review.chain"):
        logger = logging.getLogger(name)
        logger.filters.clear()
        logger.handlers.clear()
        logger.propagate = True


def test_capture_respects_the_loggers_filters(server: TrainingStreamServer, restored_logging: None) -> None:
    """A record a logger's filter drops never reaches the console, so it is
    not published either; one a filter redacts is published redacted (a
    record factory sees records before any filter: the token went out)."""

    def redact(record: logging.LogRecord) -> bool:
        record.msg = str(record.msg).replace("hunter2", "***")
        return True

    logger = logging.getLogger("review.filtered")
    logger.addFilter(lambda record: "drop me" not in record.getMessage())
    logger.addFilter(redact)
    hub_logging.capture(server=server, run="filtered", rate=None)
    logger.warning("drop me, a noisy line")
    logger.warning("token hunter2 refreshed")
    messages = [
        data["message"] for data in _logged(server, "filtered") if data["logger"] == "review.filtered"
    ]
    assert messages == ["token *** refreshed"]


def test_capture_formats_with_the_records_extra(server: TrainingStreamServer, restored_logging: None) -> None:
    """``extra=`` is on the record when it is taken: a format using it works."""
    handler = hub_logging.capture(server=server, run="extra", rate=None)
    handler.setFormatter(logging.Formatter("%(user)s: %(message)s"))
    logging.getLogger("review.extra").warning("logged in", extra={"user": "ada"})
    messages = [data["message"] for data in _logged(server, "extra") if data["logger"] == "review.extra"]
    assert messages == ["ada: logged in"]


def test_capture_chains_and_comes_off(server: TrainingStreamServer, restored_logging: None) -> None:
    """Another library's wrapper of the same hook, installed after capture()
    and chaining to it, keeps working after stop_capture(), which then only
    stops publishing; a new capture() publishes again; stopped on top, the
    hook before it is back."""
    before = logging.Logger.callHandlers
    hub_logging.capture(server=server, run="chain", rate=None)
    seen: list[str] = []
    inner = logging.Logger.callHandlers

    def library(self: logging.Logger, record: logging.LogRecord) -> None:
        seen.append(record.getMessage())
        inner(self, record)

    logging.Logger.callHandlers = library  # type: ignore[method-assign]
    logger = logging.getLogger("review.chain")
    logger.warning("one")
    hub_logging.stop_capture()
    logger.warning("two")
    assert logging.Logger.callHandlers is library
    hub_logging.capture(server=server, run="chain", rate=None)
    logger.warning("three")
    hub_logging.stop_capture()
    logger.warning("four")
    assert logging.Logger.callHandlers is library  # its own wrapper, set before the second capture
    messages = [data["message"] for data in _logged(server, "chain") if data["logger"] == "review.chain"]
    assert messages == ["one", "three"]
    assert seen == ["one", "two", "three", "four"]
    logging.Logger.callHandlers = before  # type: ignore[method-assign]
    hub_logging.capture(server=server, run="chain", rate=None)
    hub_logging.stop_capture()
    assert logging.Logger.callHandlers is before
