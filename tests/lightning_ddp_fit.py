"""A 2-process CPU DDP fit (gloo) with ProbeCallback; run by tests/test_lightning_ddp.py.

Usage: ``python tests/lightning_ddp_fit.py OUT_DIR``. Lightning's ``ddp`` launcher starts
rank 1 by re-running this script. One fit carries two callbacks: a synchronous one (the
headline measures, monitored by ``EarlyStopping``) and a background one (``BACKGROUND``
measures only). Each rank writes ``rank{r}.json`` (its probe entries of
``callback_metrics`` at each epoch end, and per callback ``last_epoch``, ``last_report``'s
network and the measured epochs); rank 0 also writes ``states.pt`` (weights at each epoch end).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger

from integrations.lightning import ProbeCallback
from integrations.tensorboard import LogOptions


def _loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(32, 3, 8, 8, generator=generator), torch.randint(0, 10, (32,), generator=generator))
    return DataLoader(data, batch_size=8)


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(L.Callback):
    def __init__(self) -> None:
        self.metrics: dict[str, dict] = {}
        self.states: dict[int, dict] = {}
        self.steps: dict[int, int] = {}

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.metrics[f"validation_end/{trainer.current_epoch}"] = _probe(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.metrics[f"train_epoch_end/{trainer.current_epoch}"] = _probe(trainer)
        self.states[trainer.current_epoch] = copy.deepcopy(module.state_dict())
        self.steps[trainer.current_epoch] = trainer.global_step


def _probe(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("probe/")}


BACKGROUND = ["ER_mean_t0_BE", "SQ_wp_t0_AE"]


def main(out: Path) -> None:
    recorder = Recorder()
    probes = {
        "sync": ProbeCallback(),
        "background": ProbeCallback(background=True, measures=BACKGROUND, log_options=LogOptions(layer_quantities=(), histograms=False)),
    }
    stopper = EarlyStopping("probe/E_L2_BE", mode="max", patience=100)
    trainer = L.Trainer(
        accelerator="cpu", strategy="ddp", devices=2, max_epochs=3, logger=TensorBoardLogger(out, name="tb", version=0),
        callbacks=[recorder, *probes.values(), stopper], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1,
    )
    trainer.fit(Net(), _loader(0), _loader(1))
    rank = trainer.global_rank
    result = {"metrics": recorder.metrics, "steps": recorder.steps, "world_size": trainer.world_size}
    for mode, callback in probes.items():
        report = callback.last_report
        result[mode] = {
            "last_epoch": callback.last_epoch,
            "last_network": None if report is None else report.network,
            "measured": [t.epoch for t in callback.timings],
        }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    if rank == 0:
        torch.save(recorder.states, out / "states.pt")
    if torch.distributed.is_initialized():  # gloo's threads joined before exit, which could otherwise abort
        torch.distributed.destroy_process_group()  # ("terminate called without an active exception", seen once in CI)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
