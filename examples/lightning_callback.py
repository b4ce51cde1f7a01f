"""Add one callback to a Lightning Trainer and watch the measures in TensorBoard.

A small GenProb network (``probe.zoo.GenProbNet``) trains on the scikit-learn digits
images. ``ProbeCallback`` measures the weights at the end of every epoch and logs them to
the Trainer's TensorBoard logger next to the loss; the measures are also ordinary
Lightning metrics: here ``ModelCheckpoint`` keeps the checkpoint with the highest
``probe/E_L2_BE`` (no validation set needed for that choice; not with ``--background``,
where the monitored values lag by an epoch).

Run::

    .venv/bin/python examples/lightning_callback.py                     # 5 epochs, logs in runs/lightning
    .venv/bin/python examples/lightning_callback.py --epochs 20 --background process --log-dir /tmp/probe_runs
    tensorboard --logdir runs/lightning

Uses ``lightning.pytorch`` when installed, else ``pytorch_lightning`` (``--package`` picks one).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from integrations.lightning import ProbeCallback
from integrations.tensorboard import LAYER_QUANTITIES, LogOptions
from probe.zoo import GenProbNet, digits_datasets


def lightning_package(name: str | None):
    """The Lightning package to use: ``name``, else ``lightning.pytorch`` if installed, else ``pytorch_lightning``."""
    for candidate in [name] if name else ["lightning.pytorch", "pytorch_lightning"]:
        try:
            return importlib.import_module(candidate)
        except ImportError:
            continue
    raise SystemExit("this example needs Lightning: pip install pytorch-lightning (or lightning)")


def classifier(pl, lr: float):
    """A LightningModule around GenProbNet (class built for the chosen package)."""

    class DigitsClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = GenProbNet("10001", base=16, step=4)

        def training_step(self, batch, batch_idx):
            images, labels = batch
            loss = nn.functional.cross_entropy(self.model(images), labels)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            images, labels = batch
            logits = self.model(images)
            self.log("val/loss", nn.functional.cross_entropy(logits, labels))
            self.log("val/acc", (logits.argmax(1) == labels).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    return DigitsClassifier()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--log-dir", type=Path, default=Path("runs/lightning"), help="TensorBoard directory")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--background", choices=["thread", "process"], default=None,
                        help="measure off the training thread (default: in the epoch-end hook)")
    parser.add_argument("--layer-scalars", action="store_true", help="also write per-layer scalars and spectra histograms (many tags)")
    parser.add_argument("--package", choices=["lightning.pytorch", "pytorch_lightning"], default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl = lightning_package(args.package)
    callbacks = importlib.import_module(f"{pl.__name__}.callbacks")
    loggers = importlib.import_module(f"{pl.__name__}.loggers")
    pl.seed_everything(args.seed, verbose=False)
    train, val, _ = digits_datasets(seed=args.seed)

    logger = loggers.TensorBoardLogger(args.log_dir, name="digits")
    best = callbacks.ModelCheckpoint(monitor="probe/E_L2_BE", mode="max", filename="best-E_L2_BE-{epoch}")
    probe_callback = ProbeCallback(background=args.background or False, log_options=LogOptions(
        layer_quantities=LAYER_QUANTITIES if args.layer_scalars else (), histograms=args.layer_scalars))
    # background mode: callback_metrics lag by an epoch, so select checkpoints only in synchronous mode
    monitors = [] if args.background else [best]
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=logger, callbacks=[probe_callback, *monitors],
                         log_every_n_steps=5, enable_model_summary=False)
    trainer.fit(classifier(pl, args.lr), DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))

    report = probe_callback.last_report
    print(f"\nmeasures of epoch {probe_callback.last_epoch}:")
    for name, value in report.network.items():
        print(f"  probe/{name:<8} {value: .5f}")
    if monitors:
        print(f"checkpoint with the highest probe/E_L2_BE: {best.best_model_path}")
    print(f"TensorBoard logs in {Path(logger.log_dir).resolve()}")
    print(f"view them with: tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()
