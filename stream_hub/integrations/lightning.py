"""A Lightning ``Logger`` that streams to the hub, rank-aware.

    from stream_hub.integrations.lightning import StreamHubLogger

    trainer = Trainer(logger=StreamHubLogger(), max_epochs=3)

``log_metrics`` publishes ``metric`` events at Lightning's step,
``log_hyperparams`` the run's ``config`` event, ``finalize`` a ``run_end``
(success: finished; failed: failed).

Ranks. With stream_hub every process of a job can publish: all ranks meet in
one hub and each event carries its rank, so the hub keeps one curve per rank.
What each rank does:

- ``ranks="all"`` (default): every rank publishes its own values (what
  ``self.log(...)`` gives on that rank), stamped with its rank. Under
  torchrun or srun stream_hub knows the rank from the environment; under
  Lightning's own launcher (``Trainer(strategy="ddp", devices=N)`` started
  as one ``python train.py``, which re-launches the script for the other
  ranks without ``RANK``) the logger gives the server Lightning's global
  rank (:meth:`~stream_hub.TrainingStreamServer.adopt_rank`) before its
  first publish. All ranks share the run: the process you started claims
  it and the ranks it launches find the same name.
- ``ranks="zero"``: only global rank 0 publishes (Lightning's loggers' way;
  values logged with ``sync_dist=True`` are the same on every rank anyway).

Hyper-parameters are published by global rank 0 only (they are the run's).
The global rank is Lightning's (``rank_zero_only.rank``). Each rank's
``finalize`` ends its own part of the run (a ``run_end`` stamped with its
rank): the run is over when every rank that published has ended, so rank
0 finishing first does not end it while another rank still logs, and the
hub outlives rank 0 (its host hands it to a rank still connected).

Importing this module needs nothing; using ``StreamHubLogger`` needs
Lightning (``pip install 'stream_hub[lightning]'``; ``lightning`` or
``pytorch_lightning``).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

from .. import job
from ..config import StreamConfig
from ..server import TrainingStreamServer
from ._hub import HubHandle, flat, require

# StreamHubLogger is built on first access (the module __getattr__), when Lightning is there.
__all__ = ["StreamHubLogger", "publishes_on_this_rank"]  # noqa: F822

logger = logging.getLogger(__name__)

Ranks = Literal["all", "zero"]

_built: type | None = None

# How a Lightning finalize() status reads as a run_end status.
_END = {"success": "finished", "finished": "finished", "failed": "failed", "interrupted": "killed"}


def __getattr__(name: str) -> Any:
    if name == "StreamHubLogger":
        global _built
        if _built is None:
            _built = _build()
        return _built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def publishes_on_this_rank(
    ranks: Ranks, global_rank: int, world_size: int, stamped_rank: int | None
) -> tuple[bool, str | None]:
    """Does this process publish metrics, and why not (for a one-time note)?

    ``global_rank`` and ``world_size`` are Lightning's; ``stamped_rank`` is the
    rank stream_hub puts on this process's events (None: it knows none).
    """
    if global_rank == 0:
        return True, None
    if ranks == "zero":
        return False, None
    if stamped_rank is None:
        return False, (
            f"StreamHubLogger: rank {global_rank} of {world_size} does not publish: stream_hub "
            "knows no rank for this process (no RANK/WORLD_SIZE or SLURM_PROCID), so its events "
            "could not be told apart from rank 0's; launch with torchrun (or srun) for one curve "
            'per rank, or pass ranks="zero" to silence this'
        )
    return True, None


def _world_size() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_world_size())
    except ImportError:
        pass
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _lightning() -> tuple[Any, Any]:
    """Lightning's ``Logger`` base class and ``rank_zero_only`` (lightning, else pytorch_lightning)."""
    try:
        loggers = require("lightning.pytorch.loggers", "lightning", "StreamHubLogger")
        utilities = require("lightning.pytorch.utilities", "lightning", "StreamHubLogger")
    except ImportError as missing:
        try:
            loggers = require("pytorch_lightning.loggers", "lightning", "StreamHubLogger")
            utilities = require("pytorch_lightning.utilities", "lightning", "StreamHubLogger")
        except ImportError:
            raise missing from None
    return loggers.Logger, utilities.rank_zero_only


def _build() -> type:
    base, rank_zero_only = _lightning()

    class StreamHubLogger(base):  # type: ignore[misc,valid-type]
        """Streams Lightning's metrics and hyper-parameters to the hub.

        Args:
            run: the run to log to (default: the job's run).
            server: the server to publish to (default: the process's shared
                server, taken at the first publish and given back by :meth:`close`).
            config: the config of the shared server, when it is started here.
            ranks: ``"all"`` (default) or ``"zero"``: see the module's docs.
        """

        def __init__(
            self,
            run: str | None = None,
            *,
            server: TrainingStreamServer | None = None,
            config: StreamConfig | None = None,
            ranks: Ranks = "all",
        ) -> None:
            super().__init__()
            if ranks not in ("all", "zero"):
                raise ValueError(f'ranks must be "all" or "zero", got {ranks!r}')
            self.run = run or job.current().run
            self.ranks = ranks
            self._hub = HubHandle(server, config)
            self._noted = False
            self._published = False
            self._stamped = False

        @property
        def name(self) -> str:
            return "stream_hub"

        @property
        def version(self) -> str:
            return self.run

        @property
        def global_rank(self) -> int:
            return int(getattr(rank_zero_only, "rank", 0) or 0)

        def _stamp(self) -> None:
            """Give the server Lightning's global rank when stream_hub knows
            none (Lightning's own launcher sets no ``RANK``), once."""
            if self._stamped:
                return
            world = _world_size()
            if world > 1:  # else not launched yet, or one process: asked again next time
                if job.current().rank is None:
                    self._hub.server.adopt_rank(self.global_rank, world)
                self._stamped = True

        def _publishes(self) -> bool:
            self._stamp()
            stamped = job.current().rank  # what stream_hub stamps on this process's events
            yes, why = publishes_on_this_rank(self.ranks, self.global_rank, _world_size(), stamped)
            if why is not None and not self._noted:
                self._noted = True
                logger.info(why)
            return yes

        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            if not self._publishes():
                return
            self._hub.server.log(dict(metrics), step=step, run=self.run)
            self._published = True

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            if self.global_rank != 0:
                return
            self._stamp()
            if isinstance(params, argparse.Namespace):
                params = vars(params)
            self._hub.server.publish("config", flat(params), run=self.run)

        def finalize(self, status: str) -> None:
            if self._published:
                self._hub.server.finish(self.run, _END.get(status, "finished"))

        def close(self) -> None:
            """Give the shared server's reference back (if one was taken)."""
            self._hub.release()

    StreamHubLogger.__module__ = __name__
    return StreamHubLogger
