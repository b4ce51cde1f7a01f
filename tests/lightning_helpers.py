"""Tiny LightningModules, trainers and a recorder shared by the Lightning tests (CPU, seconds each)."""

from __future__ import annotations

import copy
import importlib
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

PACKAGES = ("lightning.pytorch", "pytorch_lightning")
BATCHES = 4  # training batches per epoch


def loader(seed: int, n: int = 8 * BATCHES) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    return DataLoader(data, batch_size=8)


def conv_net(depth: int = 0) -> nn.Module:
    """Conv(3→8), Conv(8→8), then ``depth`` × Linear(256→256) (cheap to train, slow to measure), Linear(→10)."""
    torch.manual_seed(0)
    middle = [nn.Linear(128, 256), *[nn.Linear(256, 256) for _ in range(depth)]] if depth else []
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), *middle,
                         nn.Linear(256 if depth else 128, 10))


def module(pl, *, validation: bool = True, depth: int = 0, step_sleep: float = 0.0, build: str = "init",
           manual: bool = False):
    """A LightningModule over :func:`conv_net` logging ``train_loss`` (epoch) and ``val_loss``.

    ``build``: where the layers are made (``"init"``, ``"configure_model"`` or ``"setup"``).
    ``manual``: manual optimization with two optimizers (convs and the rest), both stepped per batch.
    ``step_sleep`` seconds per training step stand in for a GPU-bound step.
    """

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.steps = 0
            self.automatic_optimization = not manual
            if build == "init":
                self.net = conv_net(depth)

        def configure_model(self) -> None:
            if build == "configure_model" and not hasattr(self, "net"):
                self.net = conv_net(depth)

        def setup(self, stage: str) -> None:
            if build == "setup" and not hasattr(self, "net"):
                self.net = conv_net(depth)

        def training_step(self, batch, batch_idx):
            self.steps += 1
            time.sleep(step_sleep)
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            if not manual:
                return loss
            for optimizer in self.optimizers():
                optimizer.zero_grad()
            self.manual_backward(loss)
            for optimizer in self.optimizers():
                optimizer.step()
            return None

        def configure_optimizers(self):
            if manual:
                convs = [p for m in self.net if isinstance(m, nn.Conv2d) for p in m.parameters()]
                rest = [p for m in self.net if not isinstance(m, nn.Conv2d) for p in m.parameters()]
                return torch.optim.SGD(convs, lr=0.1), torch.optim.SGD(rest, lr=0.1)
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return loader(0)

    if validation:
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

        Net.validation_step = validation_step
        Net.val_dataloader = lambda self: loader(1, 16)
    return Net()


def recorder(pl, probe_callback: Any = None):
    class Recorder(pl.Callback):
        """Copies the weights and the probe entries of callback_metrics at each epoch end;
        with ``probe_callback``, also its ``last_epoch`` with the metrics (``lag``)."""

        def __init__(self) -> None:
            self.states, self.steps, self.at_validation_end, self.at_train_epoch_end = {}, {}, {}, {}
            self.lag: dict[int, tuple[int | None, dict[str, float]]] = {}

        def on_validation_end(self, trainer, module) -> None:
            if not trainer.sanity_checking:
                self.at_validation_end[trainer.current_epoch] = probe_metrics(trainer)

        def on_train_epoch_end(self, trainer, module) -> None:
            epoch = trainer.current_epoch
            self.states[epoch] = copy.deepcopy(module.state_dict())
            self.steps[epoch] = trainer.global_step
            self.at_train_epoch_end[epoch] = probe_metrics(trainer)
            if probe_callback is not None:
                self.lag[epoch] = (probe_callback.last_epoch, probe_metrics(trainer))

    return Recorder()


def recording_stopper(pl, *args: Any, **kwargs: Any):
    """An ``EarlyStopping(*args, **kwargs)`` of ``pl`` that also keeps, at each check, the step, the value it
    reads and the weights (``.reads``)."""

    class RecordingEarlyStopping(importlib.import_module(f"{pl.__name__}.callbacks").EarlyStopping):
        def __init__(self) -> None:
            super().__init__(*args, **kwargs)
            self.reads: list[tuple[int, float, dict]] = []

        def _run_early_stopping_check(self, trainer) -> None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                self.reads.append((trainer.global_step, float(value), copy.deepcopy(trainer.lightning_module.state_dict())))
            super()._run_early_stopping_check(trainer)

    return RecordingEarlyStopping()


def probe_metrics(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("probe/")}


def trainer(pl, tmp_path, callbacks, *, max_epochs: int = 3, logger=None, **kwargs):
    if logger is None:
        logger = importlib.import_module(f"{pl.__name__}.loggers").TensorBoardLogger(tmp_path, name="tb", version=0)
    options = {"enable_checkpointing": False, "log_every_n_steps": 1, **kwargs}
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, **options)
