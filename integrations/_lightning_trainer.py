"""What the Lightning callbacks read from a Trainer, in one place (both Lightning packages).

Small pure helpers over attributes that ``pytorch_lightning`` and ``lightning.pytorch`` share;
this module imports neither, so either package may be the one installed.
"""

from __future__ import annotations

import importlib
import sys
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
