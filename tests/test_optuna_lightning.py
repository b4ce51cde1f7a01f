"""MeasurePruningCallback with real Trainers: both Lightning packages, a live ProbeCallback, errors.

DDP runs are in test_optuna_ddp.py (a lean module: each spawned rank imports it).
"""

from __future__ import annotations

import lightning.pytorch as L
import optuna
import pytest
import pytorch_lightning as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import probe
from integrations.lightning import ProbeCallback
from integrations.optuna import MeasurePruner, MeasurePruningCallback, get_measures, report_measures

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRAINER = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0, max_epochs=4)


class _Tiny:
    """A small classifier on fixed random data; records its val scores."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        self.val_scores: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean() + self.current_epoch)

    def on_validation_epoch_end(self):
        self.val_scores.append(float(self.trainer.callback_metrics["val_acc"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TinyL(_Tiny, L.LightningModule):
    pass


class TinyPL(_Tiny, pl.LightningModule):
    pass


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)),
                      batch_size=8)


def _study(storage: str | None = None, **pruner_kwargs) -> optuna.Study:
    """A study with one completed trial whose measures beat anything a tiny model reaches."""
    pruner = MeasurePruner(**{"n_startup_trials": 1, **pruner_kwargs})
    study = optuna.create_study(direction="maximize", pruner=pruner, storage=storage)
    done = study.ask()
    for epoch in range(TRAINER["max_epochs"]):
        report_measures(done, {"E_L2_BE": 1e6}, epoch)
    study.tell(done, 1.0)
    return study


@pytest.mark.parametrize(("package", "module"), [(L, TinyL), (pl, TinyPL)], ids=["lightning.pytorch", "pytorch_lightning"])
def test_prunes_single_process(package, module):
    study = _study(n_warmup_steps=1)
    models = []

    def objective(trial: optuna.Trial) -> float:
        models.append(module())
        trainer = package.Trainer(callbacks=[MeasurePruningCallback(trial)], **TRAINER)
        trainer.fit(models[-1], _loader())
        return 0.5

    study.optimize(objective, n_trials=1)
    trial = study.trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    measures = get_measures(trial)
    assert list(measures) == [0, 1]  # pruned at the first step after warmup: training stopped there
    assert measures[1] == pytest.approx(probe.measure(models[0]).network, nan_ok=True)
    assert trial.intermediate_values == {} and trial.value is None


@pytest.mark.parametrize("background", [False, "thread"])
def test_reuses_the_live_probe_report_wherever_it_is_listed(tmp_path, background):
    study = _study(n_startup_trials=100)
    with_logger = {**TRAINER, "logger": CSVLogger(tmp_path)}
    for order in ("live first", "pruning first"):
        trial = study.ask()
        live, pruning = ProbeCallback(background=background), MeasurePruningCallback(trial)
        callbacks = [live, pruning] if order == "live first" else [pruning, live]
        L.Trainer(callbacks=callbacks, **with_logger).fit(TinyL(), _loader())
        assert pruning.last_report is live.last_report and pruning.last_epoch == live.last_epoch == 3, order
        # one measurement per epoch, shared (background: the pruner waited for it, it did not measure again)
        assert [t.epoch for t in live.timings] == [0, 1, 2, 3]
        assert get_measures(trial)[3] == pytest.approx(live.last_report.network, nan_ok=True)


def test_monitor_is_reported_and_a_wrapped_pruner_can_prune():
    study = _study(n_startup_trials=100, wrapped_pruner=optuna.pruners.ThresholdPruner(upper=2.5))
    models = []

    def objective(trial: optuna.Trial) -> float:
        models.append(TinyL())
        trainer = L.Trainer(callbacks=[MeasurePruningCallback(trial, monitor="val_acc")], **TRAINER)
        trainer.fit(models[-1], _loader(), _loader())
        return 0.5

    study.optimize(objective, n_trials=1)
    trial = study.trials[1]
    scores = models[0].val_scores  # val_acc + epoch: exceeds 2.5 at epoch 2 or 3
    pruned_at = next(epoch for epoch, score in enumerate(scores) if score > 2.5)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == dict(enumerate(scores))
    assert list(get_measures(trial)) == list(range(pruned_at + 1))
    assert trial.value == scores[pruned_at]


def test_errors_missing_monitor_multi_objective_and_in_memory_ddp():
    trial = _study().ask()
    with pytest.raises(ValueError, match=r"monitor='val_loss' is not among the logged metrics"):
        L.Trainer(callbacks=[MeasurePruningCallback(trial, monitor="val_loss")], **TRAINER).fit(TinyL(), _loader())
    multi = optuna.create_study(directions=["maximize", "minimize"]).ask()
    with pytest.raises(ValueError, match="multi-objective"):
        L.Trainer(callbacks=[MeasurePruningCallback(multi)], **TRAINER).fit(TinyL(), _loader())
    ddp = L.Trainer(strategy="ddp_spawn", devices=2, **TRAINER)
    with pytest.raises(ValueError, match="needs a storage shared between processes"):
        MeasurePruningCallback(trial).setup(ddp, TinyL(), "fit")
    with pytest.raises(ValueError, match="measures='E_L2'"):
        MeasurePruningCallback(trial, measures=["E_L2"])
