"""MeasurePruningCallback under real 2-process CPU DDP (ddp_spawn, gloo).

Kept lean: each spawned rank imports this module to unpickle the model.
"""

from __future__ import annotations

import lightning.pytorch as L
import optuna
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from integrations.optuna import MeasurePruner, MeasurePruningCallback, get_measures, report_measures

optuna.logging.set_verbosity(optuna.logging.WARNING)

MAX_EPOCHS = 4
TRAINER = dict(accelerator="cpu", strategy="ddp_spawn", devices=2, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, max_epochs=MAX_EPOCHS)


class Tiny(L.LightningModule):
    """A small classifier; each rank appends ``"<rank> <epoch>"`` to ``epochs_file`` as an epoch starts."""

    def __init__(self, epochs_file: str | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        self.epochs_file = epochs_file

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def on_train_epoch_start(self):
        if self.epochs_file:
            with open(self.epochs_file, "a") as f:
                f.write(f"{self.global_rank} {self.current_epoch}\n")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)),
                      batch_size=8)


def _study(storage: str, **pruner_kwargs) -> optuna.Study:
    """A study with one completed trial whose measures beat anything the tiny model reaches."""
    study = optuna.create_study(direction="maximize", storage=storage,
                                pruner=MeasurePruner(n_startup_trials=1, **pruner_kwargs))
    done = study.ask()
    for epoch in range(MAX_EPOCHS):
        report_measures(done, {"E_L2_BE": 1e6}, epoch)
    study.tell(done, 1.0)
    return study


@pytest.mark.timeout(240)
def test_ddp_every_rank_stops_at_the_pruned_epoch(tmp_path):
    study = _study(f"sqlite:///{tmp_path / 'study.db'}", n_warmup_steps=1)
    epochs = tmp_path / "epochs.txt"

    def objective(trial: optuna.Trial) -> float:
        pruning = MeasurePruningCallback(trial)
        trainer = L.Trainer(callbacks=[pruning], **TRAINER)
        trainer.fit(Tiny(str(epochs)), _loader())
        pruning.check_pruned()
        return 0.5

    study.optimize(objective, n_trials=1)
    trial = study.trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(get_measures(trial)) == [0, 1]
    started = sorted(tuple(map(int, line.split())) for line in epochs.read_text().splitlines())
    assert started == [(0, 0), (0, 1), (1, 0), (1, 1)]  # both ranks stopped after epoch 1


@pytest.mark.timeout(240)
def test_ddp_error_on_rank_zero_stops_every_rank(tmp_path):
    """A failure on rank zero (here: an unlogged monitor) reaches every rank: no deadlock."""
    trial = _study(f"sqlite:///{tmp_path / 'study.db'}").ask()
    trainer = L.Trainer(callbacks=[MeasurePruningCallback(trial, monitor="nope")], **TRAINER)
    with pytest.raises(Exception, match="monitor='nope'"):
        trainer.fit(Tiny(), _loader())
