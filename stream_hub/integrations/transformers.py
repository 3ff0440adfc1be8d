"""A Hugging Face ``TrainerCallback`` that streams the Trainer's logs to the hub.

    from stream_hub.integrations.transformers import StreamHubCallback

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[StreamHubCallback()])

- ``on_train_begin``: the ``TrainingArguments`` and the model's config as the
  run's ``config`` event (flat: ``model/hidden_size``, ``learning_rate``, ...);
- ``on_log``: every number the Trainer logs, at ``state.global_step``, named as
  the wandb integration names them (``train/loss``, ``eval/loss``, ``test/...``);
- ``on_train_end``: ``run_end`` (finished; a process that dies is marked
  failed by stream_hub at exit).

The run is ``run=`` if given, else ``args.run_name`` when it is set (and not
just the output directory), else the job's run. The Trainer's logged values
are already reduced over processes, so by default only the main process
(``state.is_world_process_zero``) publishes (``ranks="zero"``); with
``ranks="all"`` every process does, each event carrying its rank.

Importing this module needs nothing; using ``StreamHubCallback`` needs
transformers (``pip install 'stream_hub[transformers]'``).
"""

from __future__ import annotations

from typing import Any, Literal

from .. import job
from ..config import StreamConfig
from ..server import TrainingStreamServer
from ._hub import HubHandle, flat, require

# StreamHubCallback is built on first access (the module __getattr__), when transformers is there.
__all__ = ["StreamHubCallback", "metric_names"]  # noqa: F822

Ranks = Literal["zero", "all"]

_built: type | None = None


def __getattr__(name: str) -> Any:
    if name == "StreamHubCallback":
        global _built
        if _built is None:
            _built = _build()
        return _built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metric_names(logs: dict[str, Any]) -> dict[str, float]:
    """The numbers among the Trainer's logs, named as wandb names them."""
    out: dict[str, float] = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # strings (and the like) the Trainer sometimes logs
        for prefix, group in (("eval_", "eval/"), ("test_", "test/")):
            if key.startswith(prefix):
                out[group + key[len(prefix) :]] = value
                break
        else:
            out["train/" + key] = value
    return out


def _build() -> type:
    transformers = require("transformers", "transformers", "StreamHubCallback")

    class StreamHubCallback(transformers.TrainerCallback):  # type: ignore[misc,name-defined]
        """Streams a Hugging Face ``Trainer``'s logs and hyper-parameters to the hub.

        Args:
            run: the run to log to (default: ``args.run_name`` if set, else the job's run).
            server: the server to publish to (default: the process's shared
                server, taken at the start of training and given back by
                :meth:`close`).
            config: the config of the shared server, when it is started here.
            ranks: ``"zero"`` (default): only the main process publishes;
                ``"all"``: every process does, each event carrying its rank.
        """

        def __init__(
            self,
            run: str | None = None,
            *,
            server: TrainingStreamServer | None = None,
            config: StreamConfig | None = None,
            ranks: Ranks = "zero",
        ) -> None:
            if ranks not in ("zero", "all"):
                raise ValueError(f'ranks must be "zero" or "all", got {ranks!r}')
            self.run = run
            self.ranks = ranks
            self._hub = HubHandle(server, config)

        def _publishes(self, state: Any) -> bool:
            return self.ranks == "all" or bool(getattr(state, "is_world_process_zero", True))

        def _run_of(self, args: Any) -> str:
            if self.run is None:
                name = getattr(args, "run_name", None)
                given = isinstance(name, str) and name and name != getattr(args, "output_dir", None)
                self.run = str(name) if given else job.current().run
            return str(self.run)

        def on_train_begin(
            self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
        ) -> None:
            if not self._publishes(state):
                return
            run = self._run_of(args)
            params = flat(args.to_sanitized_dict()) if hasattr(args, "to_sanitized_dict") else {}
            model_config = getattr(model, "config", None)
            if model_config is not None and hasattr(model_config, "to_dict"):
                params.update(flat(model_config.to_dict(), "model/"))
            self._hub.server.publish("config", params, run=run)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not logs or not self._publishes(state):
                return
            metrics = metric_names(dict(logs))
            if metrics:
                self._hub.server.log(metrics, step=state.global_step, run=self._run_of(args))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._publishes(state):
                self._hub.server.finish(self._run_of(args), "finished")

        def close(self) -> None:
            """Give the shared server's reference back (if one was taken)."""
            self._hub.release()

    StreamHubCallback.__module__ = __name__
    return StreamHubCallback
