"""The Hugging Face bridge as its users meet it: a real (tiny, built from a
config: nothing downloaded) model trained on CPU by a real ``Trainer``, with
``callbacks=[StreamHubCallback()]`` beside ``report_to`` (transformers has
no ``report_to="stream_hub"``: its list of integrations is closed).

Evaluation's metrics come as their own series (``eval/...``), the
``TrainingArguments`` and the model's config as the run's config, and the
run ends as the Trainer does: finished, or failed when ``train()`` raises —
before, a caught exception (a notebook) left the run running for ever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_hub import TrainingStreamServer

from .test_frameworks import framework, history


def _tiny(tmp_path: Path, **arguments: Any) -> tuple[Any, Any, list[dict[str, Any]]]:
    """A one-layer BERT, its TrainingArguments and eight rows."""
    torch = framework("torch")
    transformers = framework("transformers")
    framework("accelerate")
    config = transformers.BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    rows = [{"input_ids": torch.randint(0, 32, (6,)), "labels": torch.tensor(i % 2)} for i in range(8)]
    values: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
    }
    values.update(arguments)
    return model, transformers.TrainingArguments(**values), rows


def test_eval_metrics_are_their_own_series_beside_another_tracker(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    transformers = framework("transformers")
    framework("tensorboard")
    from stream_hub.integrations.transformers import StreamHubCallback

    model, args, rows = _tiny(tmp_path, eval_strategy="steps", eval_steps=1, report_to=["tensorboard"])
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        eval_dataset=rows[:4],
        callbacks=[StreamHubCallback(run="hf-eval", server=server)],
    )
    trainer.train()

    metrics = history(server, "hf-eval", "metric")
    evals = [e for e in metrics if any(k.startswith("eval/") for k in e["metrics"])]
    assert [e["step"] for e in evals] == [1, 2]
    assert all(set(e["metrics"]) >= {"eval/loss", "eval/runtime"} for e in evals)
    assert all(k.startswith("eval/") for e in evals for k in e["metrics"]), evals  # not mixed with train/
    trains = [e for e in metrics if "train/loss" in e["metrics"]]
    assert [e["step"] for e in trains] == [1, 2]
    params = history(server, "hf-eval", "config")[0]["data"]
    assert params["eval_strategy"] == "steps" and params["learning_rate"] == args.learning_rate
    assert params["model/hidden_size"] == 16 and params["model/num_hidden_layers"] == 1
    assert [e["data"] for e in history(server, "hf-eval", "run_end")] == [{"status": "finished"}]
    assert list(tmp_path.rglob("events.out.tfevents.*")), "the other tracker wrote nothing"


def failing_at(step: int) -> Any:
    """A callback that raises at the end of training step ``step`` (0: never),
    as a bad batch or a NaN check would: before that step's logs."""
    transformers = framework("transformers")

    class Failing(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == step:
                raise RuntimeError("a bad batch")

    return Failing()


def test_an_exception_in_train_fails_the_run_even_when_caught(
    server: TrainingStreamServer, tmp_path: Path
) -> None:
    transformers = framework("transformers")
    from stream_hub.integrations.transformers import StreamHubCallback

    model, args, rows = _tiny(tmp_path, max_steps=4)
    callback = StreamHubCallback(run="hf-fails", server=server)
    failing = failing_at(2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback, failing])
    with pytest.raises(RuntimeError, match="a bad batch"):
        trainer.train()  # caught, as a notebook cell's exception is: the process lives on

    assert [e["step"] for e in history(server, "hf-fails", "metric")] == [1]
    assert [e["data"] for e in history(server, "hf-fails", "run_end")] == [{"status": "failed"}]

    # Trained again (the cell re-run): the run runs again and ends as this time's training does.
    trainer.remove_callback(failing)
    trainer.train()
    assert [e["data"] for e in history(server, "hf-fails", "run_end")] == [
        {"status": "failed"},
        {"status": "finished"},
    ]


def test_a_callback_added_later_fails_the_next_training(server: TrainingStreamServer, tmp_path: Path) -> None:
    transformers = framework("transformers")
    from stream_hub.integrations.transformers import StreamHubCallback

    model, args, rows = _tiny(tmp_path, max_steps=4)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
    trainer.add_callback(StreamHubCallback(run="hf-added", server=server))
    trainer.train()  # wraps train() from the next call on
    trainer.add_callback(failing_at(1))
    with pytest.raises(RuntimeError, match="a bad batch"):
        trainer.train()
    assert [e["data"] for e in history(server, "hf-added", "run_end")] == [
        {"status": "finished"},
        {"status": "failed"},
    ]
