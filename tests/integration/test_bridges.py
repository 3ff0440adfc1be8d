"""The bridges (``stream_hub.integrations``) as far as they need no framework:
importable without one (a clear ImportError naming the extra when one is
used), ``SummaryWriter`` streaming without torch, ``StreamHandler`` with its
rate limit. Events are checked over REST on a real server.

The bridges against the real frameworks are in ``tests/integrations/``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import httpx
import pytest

from stream_hub import TrainingStreamServer, get_stream_server_manager
from stream_hub.integrations.lightning import publishes_on_this_rank
from stream_hub.integrations.logging import StreamHandler
from stream_hub.integrations.tensorboard import SummaryWriter
from stream_hub.integrations.transformers import metric_names

from ..conftest import committed, free_config, wait_for
from ..processes import run_python


def history(server: TrainingStreamServer, run: str, types: str | None = None) -> list[dict[str, Any]]:
    committed(server, server.hub.last_seq)
    params = {"run": run, "since": 0, "limit": 1000, **({"types": types} if types else {})}
    response = httpx.get(server.urls["rest"] + "/api/history", params=params, timeout=10)
    assert response.status_code == 200, response.text
    events = response.json()["events"]
    # The hub sends gap and shutdown events whatever the type filter says.
    return [e for e in events if types is None or e["type"] == types]


# -- importable without the frameworks ---------------------------------------------------------

BLOCK_FRAMEWORKS = """
import sys
BLOCKED = ("torch", "transformers", "lightning", "pytorch_lightning", "tensorboard", "tensorboardX")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def test_each_bridge_imports_without_its_framework_and_says_which_extra_it_needs() -> None:
    result = run_python(
        BLOCK_FRAMEWORKS
        + """
import stream_hub.integrations.tensorboard as tb
import stream_hub.integrations.logging as lg
import stream_hub.integrations.transformers as hf
import stream_hub.integrations.lightning as pl
from stream_hub.integrations.transformers import metric_names
for module, name in ((hf, "StreamHubCallback"), (pl, "StreamHubLogger")):
    try:
        getattr(module, name)
    except ImportError as exc:
        print(name, "->", exc)
try:
    tb.SummaryWriter("runs/x", also_tensorboard=True)
except ImportError as exc:
    print("also_tensorboard ->", exc)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" -> ", 1) for line in result.stdout.splitlines() if " -> " in line)
    assert "pip install 'stream_hub[transformers]'" in lines["StreamHubCallback"]
    assert "pip install 'stream_hub[lightning]'" in lines["StreamHubLogger"]
    assert (
        "stream_hub[tensorboard]" in lines["also_tensorboard"] and "tensorboardX" in lines["also_tensorboard"]
    )
    assert "loaded: []" in result.stdout


# -- SummaryWriter without torch ----------------------------------------------------------------


def test_summary_writer_streams_scalars_text_and_hparams(server: TrainingStreamServer) -> None:
    writer = SummaryWriter("runs/exp1", server=server)
    assert writer.run == "exp1" and writer.get_logdir() == "runs/exp1"
    writer.add_scalar("Loss/train", 0.5, global_step=1)
    writer.add_scalar("Loss/train", math.nan, global_step=2, walltime=123.0)
    writer.add_scalars("lr", {"group0": 0.1, "group1": 0.01}, 2)
    writer.add_text("notes", "epoch 1 done", global_step=2)
    writer.add_hparams({"lr": 0.1, "optim": {"name": "adam", "betas": (0.9, 0.99)}}, {"hparam/best": 0.4})
    writer.add_audio("sample", object(), 2)  # accepted (warned), not streamed
    writer.flush()
    writer.close()
    events = history(server, "exp1")
    metrics = [(e["step"], e["metrics"]) for e in events if e["type"] == "metric"]
    assert metrics == [(1, {"Loss/train": 0.5}), (2, {"Loss/train": "NaN"}), (0, {"hparam/best": 0.4})]
    # add_scalars: a run per key, as TensorBoard makes them, the main tag as the metric.
    assert [e["metrics"] for e in history(server, "exp1/lr_group1", "metric")] == [{"lr": 0.01}]
    log = next(e for e in events if e["type"] == "log")
    assert log["data"] == {"message": "epoch 1 done", "level": "INFO", "logger": "notes"} and log["step"] == 2
    config = next(e for e in events if e["type"] == "config")
    assert config["data"] == {"lr": 0.1, "optim/name": "adam", "optim/betas": [0.9, 0.99]}
    with pytest.raises(AttributeError):
        writer.no_such_method  # noqa: B018


def test_summary_writer_takes_and_gives_back_a_reference_to_the_shared_server() -> None:
    manager = get_stream_server_manager()
    with SummaryWriter(run="shared", config=free_config()) as writer:
        assert manager.ref_count == 0  # taken on first use
        writer.add_scalar("x", 1.0, 0)
        assert manager.ref_count == 1 and manager.is_server_running()
        assert [e["metrics"] for e in history(writer.server, "shared", "metric")] == [{"x": 1.0}]
    assert manager.ref_count == 0 and not manager.is_server_running()
    writer.close()  # twice: nothing more is given back
    assert manager.ref_count == 0


# -- StreamHandler ------------------------------------------------------------------------------


def test_log_records_become_log_events_in_the_contract_shape(server: TrainingStreamServer) -> None:
    handler = StreamHandler(run="logs", server=server, rate=None)
    log = logging.getLogger("tests.bridges.shape")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.info("epoch %d done", 3)
        log.debug("detail")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("step failed")
    finally:
        log.removeHandler(handler)
        handler.close()
    events = history(server, "logs", "log")
    data = [e["data"] for e in events]
    assert data[0] == {"message": "epoch 3 done", "level": "INFO", "logger": "tests.bridges.shape"}
    assert data[1]["level"] == "DEBUG"
    assert data[2]["level"] == "ERROR" and "ZeroDivisionError" in data[2]["message"]  # the traceback


def test_the_rate_limit_drops_and_then_says_how_many(server: TrainingStreamServer) -> None:
    handler = StreamHandler(run="chatty", server=server, rate=0.5, burst=5)
    log = logging.getLogger("tests.bridges.chatty")
    log.propagate = False
    log.addHandler(handler)
    try:
        for i in range(50):
            log.warning("line %d", i)
        assert handler.dropped == 45
        handler._tokens = 1.0  # the bucket refilled (2 s at 0.5/s, without the wait)
        log.warning("later")
    finally:
        log.removeHandler(handler)
        handler.close()
    messages = [e["data"]["message"] for e in history(server, "chatty", "log")]
    assert messages[:5] == [f"line {i}" for i in range(5)]
    assert messages[5:] == ["45 log record(s) left out by the rate limit (0.5/s)", "later"]


def test_records_logged_while_publishing_are_not_published_again(server: TrainingStreamServer) -> None:
    """On the root logger, the hub's own records (its loop thread's too) are
    fine: publishing never logs back into the handler in a loop."""
    handler = StreamHandler(run="root", server=server, rate=None)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        server.restart()  # logs at INFO from this thread and the loop thread
        logging.getLogger("tests.bridges.root").warning("after the restart")
        wait_for(
            lambda: any(e["data"]["message"] == "after the restart" for e in history(server, "root", "log")),
            what="the record",
        )
    finally:
        root.removeHandler(handler)
        handler.close()


# -- the pure parts of the framework bridges -----------------------------------------------------


def test_transformers_log_names_follow_the_wandb_integration() -> None:
    logs = {"loss": 0.5, "learning_rate": 1e-3, "eval_loss": 0.4, "test_acc": 1, "note": "x", "flag": True}
    assert metric_names(logs) == {
        "train/loss": 0.5,
        "train/learning_rate": 1e-3,
        "eval/loss": 0.4,
        "test/acc": 1,
    }


def test_which_lightning_ranks_publish() -> None:
    assert publishes_on_this_rank("all", 0, 1, None) == (True, None)
    assert publishes_on_this_rank("all", 1, 2, 1) == (True, None)  # torchrun: one curve per rank
    yes, why = publishes_on_this_rank("all", 1, 2, None)  # no rank to tell it apart: rank 0 only
    assert not yes and why is not None and "torchrun" in why
    assert publishes_on_this_rank("zero", 1, 2, 1) == (False, None)
    assert publishes_on_this_rank("zero", 0, 2, 0) == (True, None)
