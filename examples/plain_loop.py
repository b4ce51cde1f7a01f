"""Watch the measures evolve in TensorBoard from a plain PyTorch training loop.

A small GenProb network (``probe.zoo.GenProbNet``) trains on the scikit-learn digits
images; after every epoch one call, ``hook.epoch_end(epoch, step=steps - 1)``, measures
the weights and writes them next to the loss and accuracy (same ``SummaryWriter``, same
step: the index of the epoch's last optimizer step, where Lightning logs its epoch
metrics, so plain and Lightning runs line up in one logdir).

Run::

    .venv/bin/python examples/plain_loop.py                      # 5 epochs, logs in runs/plain_loop
    .venv/bin/python examples/plain_loop.py --epochs 20 --log-dir /tmp/probe_runs --layer-scalars
    .venv/bin/tensorboard --logdir runs/plain_loop
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from integrations.loop import ProbeHook
from integrations.tensorboard import LAYER_QUANTITIES, LogOptions
from probe.zoo import GenProbNet, digits_datasets


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    """Top-1 accuracy of ``model`` on a whole dataset (fraction)."""
    model.eval()
    with torch.no_grad():
        images, labels = data.tensors
        return (model(images).argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--log-dir", type=Path, default=Path("runs/plain_loop"),
                        help="TensorBoard directory; each run writes its own subdirectory (a timestamp) in it")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--layer-scalars", action="store_true", help="also write per-layer scalars and spectra histograms (many tags)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train, val, _ = digits_datasets(seed=args.seed)
    model = GenProbNet("10001", base=16, step=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(train, batch_size=64, shuffle=True)

    run_dir = args.log_dir / time.strftime("%Y%m%d-%H%M%S")  # a rerun is a new run, not more points on this one
    with SummaryWriter(run_dir) as writer:
        options = LogOptions(layer_quantities=LAYER_QUANTITIES if args.layer_scalars else (), histograms=args.layer_scalars)
        hook = ProbeHook(model, writer=writer, log_options=options)
        steps = 0  # optimizer steps taken
        for epoch in range(args.epochs):
            model.train()
            total, count = 0.0, 0
            for images, labels in loader:
                loss = nn.functional.cross_entropy(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
                total, count = total + loss.item() * len(labels), count + len(labels)
            val_acc = accuracy(model, val)
            writer.add_scalar("train/loss", total / count, steps - 1)  # epoch metrics at the epoch's last step
            writer.add_scalar("val/acc", val_acc, steps - 1)
            report = hook.epoch_end(epoch, step=steps - 1)  # measure, write probe/* and the heatmaps there
            print(f"epoch {epoch}: loss {total / count:.3f}  val acc {val_acc:.3f}  "
                  f"E_L2_BE {report.network['E_L2_BE']:.4f}  SQ_p_BE {report.network['SQ_p_BE']:.4f}")
        hook.close()

    print(f"TensorBoard logs in {run_dir.resolve()}")
    print(f"view them with: {Path(sys.executable).parent / 'tensorboard'} --logdir {args.log_dir.resolve()}")


if __name__ == "__main__":
    main()
