"""What the Lightning callbacks read from a Trainer, in one place (both Lightning packages).

Small pure helpers over attributes that ``pytorch_lightning`` and ``lightning.pytorch`` share;
this module imports neither, so either package may be the one installed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Collection
from typing import Any

PACKAGES = ("pytorch_lightning", "lightning.pytorch")
PROBE_PREFIX = "probe/"


def callback_bases(user: str = "integrations.lightning") -> tuple[type, ...]:
    """The ``Callback`` class of each installed Lightning distribution, so that a callback
    deriving from all of them passes either ``Trainer``'s type check."""
    bases = []
    for package in PACKAGES:
        try:
            bases.append(importlib.import_module(package).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError(f"{user} needs Lightning: pip install pytorch-lightning (or lightning)")
    return tuple(bases)


def epoch_metrics_step(trainer: Any, *, in_train_epoch_end: bool) -> int:
    """The step Lightning logs its own epoch-level metrics at (``val_loss``, ``*_epoch``).

    That is the number of batches that stepped, less one at the epoch end (Lightning counts
    the last batch after the end-of-epoch validation and takes it back after
    ``on_train_epoch_end``). It counts batches, not optimizer steps, so manual optimization
    with several optimizers does not stretch the axis as ``global_step`` does.
    """
    stepped = trainer.fit_loop.epoch_loop._batches_that_stepped
    return stepped - 1 if in_train_epoch_end else stepped


def end_of_epoch_validation(trainer: Any) -> bool:
    """Whether the validation that is starting runs after the epoch's last training batch."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def monitors(trainer: Any, names: Collection[str]) -> list[Any]:
    """Callbacks that monitor one of ``names`` (``EarlyStopping``, ``ModelCheckpoint`` …)."""
    return [cb for cb in trainer.callbacks if getattr(cb, "monitor", None) in names]


def probe_monitor_names(trainer: Any) -> set[str]:
    """Every ``probe/*`` name a callback or a ``ReduceLROnPlateau`` scheduler monitors."""
    named = [getattr(cb, "monitor", None) for cb in trainer.callbacks]
    named += [config.monitor for config in plateau_schedulers(trainer)]
    return {str(name) for name in named if str(name or "").startswith(PROBE_PREFIX)}


def plateau_schedulers(trainer: Any) -> list[Any]:
    """The trainer's ``ReduceLROnPlateau``-style scheduler configs (those that read ``monitor``)."""
    return [config for config in getattr(trainer, "lr_scheduler_configs", None) or [] if config.reduce_on_plateau]


def foreign_logs(trainer: Any, names: Collection[str], own_hooks: Collection[str]) -> list[tuple[str, str]]:
    """``(name, hook)`` of each of ``names`` that the running loop holds as logged from another hook.

    ``self.log`` keys a value by the hook that logs it (``training_step``, ``on_validation_epoch_end``
    …); ``own_hooks`` are those the caller logged from itself.
    """
    results = getattr(trainer, "_results", None) or {}
    found = []
    for metric in results.values():
        meta = getattr(metric, "meta", None)
        if meta is not None and meta.name in names and meta.fx not in own_hooks:
            found.append((meta.name, meta.fx))
    return found


def averages_weights(trainer: Any) -> bool:
    """Whether a ``StochasticWeightAveraging`` callback may swap averaged weights in after the last epoch."""
    return any(base.__name__ == "StochasticWeightAveraging" for cb in trainer.callbacks for base in type(cb).__mro__)


def tensorboard_writer(logger: Any) -> Any:
    """The ``SummaryWriter`` of a Lightning ``TensorBoardLogger`` (either package), else ``None``."""
    for package in PACKAGES:
        loggers = sys.modules.get(f"{package}.loggers")
        cls = getattr(loggers, "TensorBoardLogger", None)
        if cls is not None and isinstance(logger, cls):
            return logger.experiment
    return None
