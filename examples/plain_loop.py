"""Watch the measures evolve in TensorBoard from a plain PyTorch training loop.

A small GenProb network (``probe.zoo.GenProbNet``) trains on the scikit-learn digits
images; after every epoch one call, ``hook.epoch_end(epoch)``, measures the weights and
writes them next to the loss and accuracies (same ``SummaryWriter``).

Run::

    .venv/bin/python examples/plain_loop.py                      # 5 epochs, logs in runs/plain_loop
    .venv/bin/python examples/plain_loop.py --epochs 20 --log-dir /tmp/probe_runs --heatmap
    tensorboard --logdir runs/plain_loop
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from integrations.loop import ProbeHook
from integrations.tensorboard import LogOptions
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
    parser.add_argument("--log-dir", type=Path, default=Path("runs/plain_loop"), help="TensorBoard directory")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--heatmap", action="store_true", help="also write a layer x quantity image per epoch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train, val, _ = digits_datasets(seed=args.seed)
    model = GenProbNet("10001", base=16, step=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(train, batch_size=64, shuffle=True)

    with SummaryWriter(args.log_dir) as writer:
        hook = ProbeHook(model, writer=writer, options=LogOptions(heatmap=args.heatmap))
        for epoch in range(args.epochs):
            model.train()
            total, count = 0.0, 0
            for images, labels in loader:
                loss = nn.functional.cross_entropy(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(labels), count + len(labels)
            val_acc = accuracy(model, val)
            writer.add_scalar("train/loss", total / count, epoch)
            writer.add_scalar("val/acc", val_acc, epoch)
            report = hook.epoch_end(epoch)  # measure, write probe/* and per-layer charts at step=epoch
            print(f"epoch {epoch}: loss {total / count:.3f}  val acc {val_acc:.3f}  "
                  f"E_L2_BE {report.network['E_L2_BE']:.4f}  SQ_p_BE {report.network['SQ_p_BE']:.4f}")
        hook.close()

    print(f"TensorBoard logs in {args.log_dir.resolve()}")
    print(f"view them with: tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()
