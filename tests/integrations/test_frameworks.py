"""The bridges against the real frameworks: a tiny model built from a config
(nothing downloaded), two steps of training, the events checked over REST.

Marked ``integrations`` (tests/conftest.py): a plain ``pytest`` leaves them
out; ``scripts/test.sh`` installs the frameworks (torch 2.13.0 CPU,
transformers, Lightning, TensorBoard) and runs them. A framework that is not
installed skips its test, or fails it with ``STREAM_HUB_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from stream_hub import TrainingStreamServer

from ..conftest import committed, need


def framework(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        need(False, f"the {name!r} package")
        raise  # unreachable: need() skipped or failed


def history(server: TrainingStreamServer, run: str | None, kind: str) -> list[dict[str, Any]]:
    committed(server, server.hub.last_seq)
    params: dict[str, Any] = {"since": 0, "limit": 1000, "types": kind}
    if run is not None:
        params["run"] = run
    response = httpx.get(server.urls["rest"] + "/api/history", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["type"] == kind]


# -- TensorBoard ---------------------------------------------------------------------------


def test_summary_writer_streams_and_writes_real_event_files(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    torch = framework("torch")
    framework("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from stream_hub.integrations.tensorboard import SummaryWriter

    logdir = tmp_path / "exp1"
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    with SummaryWriter(logdir, server=server, also_tensorboard=True) as writer:
        for step in range(2):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            writer.add_scalar("Loss/train", loss, global_step=step)  # a 0-d tensor, as people pass it
            writer.add_scalars("weights", {"w0": model.weight[0, 0], "b": model.bias[0]}, step)
        writer.add_text("notes", "two steps", global_step=1)
        writer.add_histogram("w", model.weight, 1)  # streamed, and written to the event files
        writer.add_hparams({"lr": 0.1, "batch": 8}, {"hparam/loss": loss.item()})
    metrics = history(server, "exp1", "metric")
    losses = [(e["step"], e["metrics"]["Loss/train"]) for e in metrics if "Loss/train" in e["metrics"]]
    assert [step for step, _ in losses] == [0, 1] and all(isinstance(v, float) for _, v in losses)
    weights = {e["run"] for e in history(server, None, "metric")} - {"exp1"}
    assert weights == {"exp1/weights_w0", "exp1/weights_b"}  # TensorBoard's runs of add_scalars
    assert history(server, "exp1", "config")[0]["data"] == {"lr": 0.1, "batch": 8}
    assert history(server, "exp1", "log")[0]["data"]["message"] == "two steps"

    events = EventAccumulator(str(logdir))
    events.Reload()
    scalars = events.Scalars("Loss/train")
    assert [s.step for s in scalars] == [0, 1]
    assert [round(s.value, 5) for s in scalars] == [round(v, 5) for _, v in losses]
    assert "w" in events.Tags()["histograms"]
    assert [e["data"]["tag"] for e in history(server, "exp1", "histogram")] == ["w"]


# -- Hugging Face transformers -----------------------------------------------------------------


def test_transformers_callback_streams_a_tiny_trainer(server: TrainingStreamServer, tmp_path: Path) -> None:
    torch = framework("torch")
    transformers = framework("transformers")
    framework("accelerate")
    from stream_hub.integrations.transformers import StreamHubCallback

    config = transformers.BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = transformers.BertForSequenceClassification(config)  # from a config: nothing downloaded
    torch.manual_seed(0)
    rows = [{"input_ids": torch.randint(0, 32, (6,)), "labels": torch.tensor(i % 2)} for i in range(8)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = StreamHubCallback(run="hf-tiny", server=server)
    assert isinstance(callback, transformers.TrainerCallback)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])
    trainer.train()

    metrics = history(server, "hf-tiny", "metric")
    steps = [e["step"] for e in metrics if "train/loss" in e["metrics"]]
    assert steps == [1, 2]
    assert all("train/learning_rate" in e["metrics"] for e in metrics if "train/loss" in e["metrics"])
    params = history(server, "hf-tiny", "config")[0]["data"]
    assert params["max_steps"] == 2 and params["model/hidden_size"] == 16
    assert [e["data"] for e in history(server, "hf-tiny", "run_end")] == [{"status": "finished"}]


# -- Lightning -------------------------------------------------------------------------------


def test_lightning_logger_streams_a_tiny_fit(server: TrainingStreamServer, tmp_path: Path) -> None:
    torch = framework("torch")
    lightning = framework("lightning")
    from stream_hub.integrations.lightning import StreamHubLogger

    class Tiny(lightning.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    stream_logger = StreamHubLogger(run="pl-tiny", server=server)
    assert isinstance(stream_logger, lightning.pytorch.loggers.Logger)
    trainer = lightning.Trainer(
        max_steps=2,
        logger=stream_logger,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(Tiny(), loader)

    metrics = history(server, "pl-tiny", "metric")
    assert [e["step"] for e in metrics if "train_loss" in e["metrics"]] == [0, 1]
    assert "rank" not in metrics[0]  # a single process: no rank
    assert history(server, "pl-tiny", "config")[0]["data"] == {"lr": 0.1}
    assert [e["data"] for e in history(server, "pl-tiny", "run_end")] == [{"status": "finished"}]
