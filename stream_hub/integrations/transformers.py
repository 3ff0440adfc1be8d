"""A Hugging Face ``TrainerCallback`` that streams the Trainer's logs to the hub.

    from stream_hub.integrations.transformers import StreamHubCallback

    args = TrainingArguments(..., report_to="none")  # or beside others: report_to=["tensorboard"]
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[StreamHubCallback()])
    trainer.train()

``report_to="stream_hub"`` cannot work: transformers accepts only the names
of the integrations it ships (any other raises ``ValueError``), so the hub
comes in as a callback. ``report_to`` chooses the other trackers as usual
(``"none"``: no other one; ``"all"``: every one installed).

- Hyper-parameters: when training begins, the ``TrainingArguments`` and the
  model's config as the run's ``config`` event, flat (``learning_rate``,
  ``model/hidden_size``, ...);
- metrics: every number the Trainer logs, at ``state.global_step``, named as
  the wandb integration names them: ``train/loss``, ``train/learning_rate``,
  and evaluation's as their own series ``eval/loss``, ``eval/accuracy``
  (``test/...`` for ``predict``);
- the end: ``run_end`` finished when training ends; failed when
  ``trainer.train()`` raises (killed for ``KeyboardInterrupt``), even when
  the exception is caught (a notebook): given to the Trainer's constructor
  (``callbacks=[...]``), the callback wraps that Trainer's ``train`` when
  the Trainer finishes its set-up (``on_init_end``). Added later
  (``trainer.add_callback``), it wraps ``train`` from the next call on; a
  process that dies of the exception is marked failed by stream_hub at exit
  anyway.

The run is ``run=`` if given, else ``args.run_name`` when it is set (and not
just the output directory), else the job's run. The Trainer's logged values
are already reduced over processes, so by default only the main process
(``state.is_world_process_zero``) publishes (``ranks="zero"``); with
``ranks="all"`` every process does, each event carrying its rank.

Importing this module needs nothing; using ``StreamHubCallback`` needs
transformers (``pip install 'stream_hub[transformers]'``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Literal

from .. import job
from ..config import StreamConfig
from ..server import TrainingStreamServer
from ._hub import HubHandle, flat, require

# StreamHubCallback is built on first access (the module __getattr__), when transformers is there.
__all__ = ["StreamHubCallback", "calling_trainer", "metric_names"]  # noqa: F822

logger = logging.getLogger(__name__)

Ranks = Literal["zero", "all"]

# How an exception out of ``train()`` ends the run.
_KILLED = (KeyboardInterrupt, SystemExit)
# Frames looked at above a callback for the Trainer that called it.
_FRAMES = 12

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
    # An evaluation's logs carry the epoch too: it belongs to the train/ series
    # (which has it at that step already), not to eval/ or test/.
    evaluation = any(key.startswith(("eval_", "test_")) for key in logs)
    for key, value in logs.items():
        if evaluation and key == "epoch":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # strings (and the like) the Trainer sometimes logs
        for prefix, group in (("eval_", "eval/"), ("test_", "test/")):
            if key.startswith(prefix):
                out[group + key[len(prefix) :]] = value
                break
        else:
            out["train/" + key] = value
    return out


def calling_trainer(trainer_class: type) -> Any:
    """The ``trainer_class`` instance whose method called the callback now
    running (the ``self`` of a frame above), or None.

    Callbacks are not given their Trainer; its ``CallbackHandler`` is called
    from the Trainer's own methods, a few frames up."""
    frame = inspect.currentframe()
    try:
        for _ in range(_FRAMES):
            if frame is None:
                return None
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, trainer_class):
                return candidate
            frame = frame.f_back
        return None
    finally:
        del frame  # a frame in a local keeps every frame above it alive


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
            self._trainer_class = transformers.Trainer
            self._training: Any = None  # the TrainingArguments, between begin and end

        def _publishes(self, state: Any) -> bool:
            return self.ranks == "all" or bool(getattr(state, "is_world_process_zero", True))

        def _run_of(self, args: Any) -> str:
            if self.run is None:
                name = getattr(args, "run_name", None)
                given = isinstance(name, str) and name and name != getattr(args, "output_dir", None)
                self.run = str(name) if given else job.current().run
            return str(self.run)

        def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._watch(calling_trainer(self._trainer_class))

        def _watch(self, trainer: Any) -> None:
            """Wrap ``trainer.train`` (once) so that an exception out of it ends the run."""
            if trainer is None or getattr(trainer.train, "_stream_hub_watched", None) is self:
                return
            train = trainer.train

            @functools.wraps(train)
            def watched_train(*args: Any, **kwargs: Any) -> Any:
                try:
                    return train(*args, **kwargs)
                except BaseException as exc:
                    self._failed("killed" if isinstance(exc, _KILLED) else "failed")
                    raise

            watched_train._stream_hub_watched = self  # type: ignore[attr-defined]
            trainer.train = watched_train

        def _failed(self, status: str) -> None:
            """Training raised: end the run it was logging to (if it began here)."""
            args, self._training = self._training, None
            if args is None:
                return
            try:
                self._hub.server.finish(self._run_of(args), status)
            except Exception:  # the user's exception matters more than ours
                logger.exception("could not end run %s as %s", self.run, status)

        def on_train_begin(
            self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
        ) -> None:
            self._watch(calling_trainer(self._trainer_class))  # added after the Trainer's __init__
            if not self._publishes(state):
                return
            self._training = args
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
            self._training = None
            if self._publishes(state):
                self._hub.server.finish(self._run_of(args), "finished")

        def close(self) -> None:
            """Give the shared server's reference back (if one was taken)."""
            self._hub.release()

    StreamHubCallback.__module__ = __name__
    return StreamHubCallback
