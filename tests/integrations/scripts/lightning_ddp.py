"""A user's ``train.py`` under Lightning's own DDP launcher: started as one
``python lightning_ddp.py ROOT GO_FILE``, Lightning re-launches it for rank
1 (``LOCAL_RANK=1``, no ``RANK``). Two CPU ranks fit a tiny model with
``StreamHubLogger()`` (no run given: the default one).

Then rank 0 ends (its process exits); rank 1 waits until it has, logs
``after`` at steps 1000-1004 (the hub must still be there), prints
``{"after": ...}`` and stays until the test creates GO_FILE. Each rank prints
one JSON line ``{"rank", "pid", "run"}`` once fitted (stdout is shared).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning
import torch

from stream_hub.integrations.lightning import StreamHubLogger


class Tiny(lightning.LightningModule):  # type: ignore[misc,name-defined]
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)  # each rank its own value (no sync_dist)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def wait_until(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"rank 1: {what} did not happen within {timeout} s")
        time.sleep(0.05)


def main() -> None:
    root, go = sys.argv[1], Path(sys.argv[2])
    launcher = os.getppid()  # for rank 1: rank 0, which started it
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    stream_logger = StreamHubLogger()
    trainer = lightning.Trainer(
        max_steps=3,
        logger=stream_logger,
        log_every_n_steps=1,
        strategy="ddp",
        devices=2,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(Tiny(), loader)
    rank = trainer.global_rank
    print(json.dumps({"rank": rank, "pid": os.getpid(), "run": stream_logger.run}), flush=True)
    if rank == 0:
        return  # the process exits: at exit stream_hub stops its part of the hub
    wait_until(lambda: os.getppid() != launcher, "rank 0's exit")
    for i in range(5):
        stream_logger.log_metrics({"after": float(i)}, step=1000 + i)
    print(json.dumps({"after": 5, "pid": os.getpid()}), flush=True)
    wait_until(go.exists, "the test's go")


if __name__ == "__main__":
    main()
