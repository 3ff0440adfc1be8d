"""A drop-in for TensorBoard's ``SummaryWriter`` that streams to the hub.

    # from torch.utils.tensorboard import SummaryWriter
    from stream_hub.integrations.tensorboard import SummaryWriter

    writer = SummaryWriter("runs/exp1")               # the run is "exp1"
    writer.add_scalar("Loss/train", loss, global_step=step)

What streams: ``add_scalar`` and ``add_scalars`` as ``metric`` events (the
tags are the metric names: ``Loss/train``, ``main/a``), ``add_text`` as a
``log`` event (the tag as its ``logger``), ``add_hparams`` as a ``config``
event plus its metrics. Other ``add_*`` calls (images, histograms, ...) are
accepted and not streamed.

With ``also_tensorboard=logdir`` (or ``True``: the same ``log_dir``) every call
is also written to real TensorBoard event files, by ``torch.utils.tensorboard``
(torch and tensorboard installed: ``pip install 'stream_hub[tensorboard]'``)
or by tensorboardX, so nothing is lost by switching. ``walltime`` goes into
those files; streamed events carry the time they were logged.

Nothing here needs torch or tensorboard unless ``also_tensorboard`` is asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from .. import job
from ..config import StreamConfig
from ..server import TrainingStreamServer
from ._hub import HubHandle, flat, require

__all__ = ["SummaryWriter"]

logger = logging.getLogger(__name__)


class SummaryWriter:
    """``torch.utils.tensorboard.SummaryWriter``'s interface, streaming to the hub.

    Args:
        log_dir, comment, purge_step, max_queue, flush_secs, filename_suffix:
            as TensorBoard's; ``log_dir``'s last part names the run (unless
            ``run`` does), and all of them go to the event-file writer.
        run: the run to log to (default: from ``log_dir``, else the job's run).
        server: the server to publish to (default: the process's shared
            server, taken on first use and given back by :meth:`close`).
        config: the config of the shared server, when it is started here.
        also_tensorboard: also write TensorBoard event files, to this
            directory (``True``: to ``log_dir``, or TensorBoard's default).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        *,
        run: str | None = None,
        server: TrainingStreamServer | None = None,
        config: StreamConfig | None = None,
        also_tensorboard: bool | str | os.PathLike[str] | None = None,
    ) -> None:
        self.run = run or _run_name(log_dir, comment)
        self._hub = HubHandle(server, config)
        self._skipped: set[str] = set()
        self._tensorboard: Any = None
        if also_tensorboard:
            target = log_dir if also_tensorboard is True else also_tensorboard
            writer_class = _event_file_writer()
            self._tensorboard = writer_class(
                None if target is None else os.fspath(target),
                comment=comment,
                purge_step=purge_step,
                max_queue=max_queue,
                flush_secs=flush_secs,
                filename_suffix=filename_suffix,
            )
        self.log_dir = self._tensorboard.get_logdir() if self._tensorboard is not None else _fspath(log_dir)

    @property
    def server(self) -> TrainingStreamServer:
        """The server this writer publishes to."""
        return self._hub.server

    def get_logdir(self) -> str | None:
        """The event files' directory (``log_dir`` when none are written)."""
        return self.log_dir

    # -- what streams --------------------------------------------------------------------

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        """One value of the metric ``tag`` at ``global_step``."""
        self.server.log({tag: _scalar(scalar_value)}, step=global_step, run=self.run)
        if self._tensorboard is not None:
            self._tensorboard.add_scalar(
                tag,
                scalar_value,
                global_step,
                walltime,
                new_style=new_style,
                double_precision=double_precision,
            )

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Several values at once, as the metrics ``main_tag/<tag>`` of one event."""
        metrics = {f"{main_tag}/{tag}": _scalar(value) for tag, value in tag_scalar_dict.items()}
        self.server.log(metrics, step=global_step, run=self.run)
        if self._tensorboard is not None:
            self._tensorboard.add_scalars(main_tag, dict(tag_scalar_dict), global_step, walltime)

    def add_text(
        self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """A text, as a ``log`` event whose ``logger`` is ``tag``."""
        data = {"message": str(text_string), "level": "INFO", "logger": tag}
        self.server.publish("log", data, run=self.run, step=global_step)
        if self._tensorboard is not None:
            self._tensorboard.add_text(tag, text_string, global_step, walltime)

    def add_hparams(
        self,
        hparam_dict: Mapping[str, Any],
        metric_dict: Mapping[str, Any],
        hparam_domain_discrete: Mapping[str, list[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """Hyper-parameters as the run's ``config`` event; ``metric_dict`` as metrics."""
        self.server.publish("config", flat(hparam_dict), run=self.run)
        if metric_dict:
            metrics = {name: _scalar(value) for name, value in metric_dict.items()}
            self.server.log(metrics, step=global_step, run=self.run)
        if self._tensorboard is not None:
            self._tensorboard.add_hparams(
                dict(hparam_dict),
                dict(metric_dict),
                hparam_domain_discrete=hparam_domain_discrete,
                run_name=run_name,
                global_step=global_step,
            )

    # -- the rest of TensorBoard's interface --------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """Other ``add_*`` methods: written to event files when there are any,
        never streamed (said once, at INFO)."""
        if name.startswith("_"):
            raise AttributeError(name)
        tensorboard = self.__dict__.get("_tensorboard")
        if tensorboard is not None:
            attribute = getattr(tensorboard, name)
            if name.startswith("add_") and callable(attribute):
                self._note_skipped(name)
            return attribute
        if name.startswith("add_"):
            return self._skipper(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _skipper(self, name: str) -> Callable[..., None]:
        def skip(*args: Any, **kwargs: Any) -> None:
            self._note_skipped(name)

        return skip

    def _note_skipped(self, name: str) -> None:
        if name not in self._skipped:
            self._skipped.add(name)
            where = "written to the event files only" if self._tensorboard is not None else "ignored"
            logger.info(
                "SummaryWriter.%s is not streamed to the hub (scalars, text and hparams are); %s%s",
                name,
                where,
                "" if self._tensorboard is not None else " (pass also_tensorboard= to keep it)",
            )

    def flush(self) -> None:
        """Flush the event files (streamed events need no flushing)."""
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        """Close the event files and give the shared server's reference back."""
        if self._tensorboard is not None:
            self._tensorboard.close()
        self._hub.release()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _scalar(value: Any) -> Any:
    """A tensor as TensorBoard reads it: detached from autograd (no warning)."""
    detach = getattr(value, "detach", None)
    return detach() if callable(detach) else value


def _fspath(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


def _run_name(log_dir: str | os.PathLike[str] | None, comment: str) -> str:
    """``runs/exp1`` -> ``exp1``; no log_dir: the job's run (plus ``comment``)."""
    if log_dir is not None:
        name = os.path.basename(os.path.normpath(os.fspath(log_dir)))
        if name not in ("", ".", "..", os.sep):
            return name
    return job.current().run + comment


def _event_file_writer() -> Any:
    """TensorBoard's own writer: torch's when torch is installed, else tensorboardX's."""
    try:
        module = require("torch.utils.tensorboard", "tensorboard", "also_tensorboard=")
    except ImportError as torch_missing:
        try:
            module = require("tensorboardX", "tensorboard", "also_tensorboard=")
        except ImportError:
            raise ImportError(
                "also_tensorboard= writes TensorBoard event files with torch.utils.tensorboard "
                "(pip install 'stream_hub[tensorboard]' torch) or tensorboardX (pip install "
                f"tensorboardX); neither is installed ({torch_missing})"
            ) from torch_missing
    return module.SummaryWriter
