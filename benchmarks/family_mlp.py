"""Record a family of another kind: MLPs on a classification task generated in code.

Not a CNN, not images: ``sklearn.datasets.make_classification`` (fixed seed: 40 features, 12
informative, 6 classes, 2 clusters per class, 5 % flipped labels; 600 train / 400 validation /
2,000 test rows, standardised on the training split). Each run draws, from its own seed, an
optimizer (SGD with momentum, Adam, AdamW, RMSprop), a log-uniform learning rate and weight
decay, a width (32–512), a depth (1–3 hidden layers, ReLU) and a batch size (16–256), and
trains with a cosine schedule. After every epoch (and at initialisation, epoch 0) it records
the accuracies, losses and the eight headline measures of every ``Linear`` weight
(``probe.measure``, ``layers="auto"``): the columns of ``family.py``'s tables, so
``pruning.py`` replays it as it does the others.

    .venv/bin/python benchmarks/family_mlp.py --workers 1        # the committed table (~10 min, one thread)
    .venv/bin/python benchmarks/family_mlp.py --quick             # smoke test: 3 runs, 3 epochs
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import probe

DEFAULT_OUT = Path(__file__).parent / "data" / "family_mlp.csv"
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop")
LR_RANGE = {"SGD": (3e-3, 0.3), "Adam": (1e-4, 1e-2), "AdamW": (1e-4, 1e-2), "RMSprop": (3e-5, 3e-3)}
PERFORMANCE = ("train_acc", "train_loss", "val_acc", "val_loss", "test_acc", "test_loss")
POWER_LAW = ("alpha_mean_BE", "alphahat_mean_BE")
"""WeightWatcher's school, recorded beside the headline measures (SPEC §10)."""
FIELDS = ["run_id", "optimizer", "lr", "weight_decay", "width", "depth", "batch_size", "seed", "epoch",
          *PERFORMANCE, *probe.HEADLINE_NAMES, *POWER_LAW]


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=40, n_informative=12, n_redundant=8, n_classes=6,
                               n_clusters_per_class=2, flip_y=0.05, class_sep=1.0, random_state=0)
    x = (x - x[:600].mean(0)) / x[:600].std(0)
    tensors = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    cuts = {"train": slice(0, 600), "val": slice(600, 1000), "test": slice(1000, 3000)}
    return {name: (tensors[0][cut], tensors[1][cut]) for name, cut in cuts.items()}


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    optimizer = OPTIMIZERS[seed % len(OPTIMIZERS)]
    low, high = LR_RANGE[optimizer]
    return {
        "optimizer": optimizer,
        "lr": float(math.exp(rng.uniform(math.log(low), math.log(high)))),
        "weight_decay": float(0.0 if rng.random() < 0.3 else math.exp(rng.uniform(math.log(1e-5), math.log(1e-2)))),
        "width": int(rng.choice([32, 64, 128, 256, 512])),
        "depth": int(rng.integers(1, 4)),
        "batch_size": int(rng.choice([16, 32, 64, 128, 256])),
        "seed": seed,
    }


def model(width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    inputs = 40
    for _ in range(depth):
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, 6))


def _optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "SGD":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, weight_decay=cfg["weight_decay"])
    return getattr(torch.optim, cfg["optimizer"])(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def train_one(seed: int, *, epochs: int) -> list[dict]:
    """Train run ``seed``; one row per epoch ``0..epochs``."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = config(seed)
    run_id = f"{cfg['optimizer']}_w{cfg['width']}x{cfg['depth']}_lr{cfg['lr']:.2g}_wd{cfg['weight_decay']:.1g}_b{cfg['batch_size']}_s{seed}"
    splits = task()
    x_train, y_train = splits["train"]
    net = model(cfg["width"], cfg["depth"])
    optimizer = _optimizer(cfg, net.parameters())
    steps = epochs * math.ceil(len(y_train) / cfg["batch_size"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in range(epochs + 1):
        if epoch:
            net.train()
            for batch in torch.randperm(len(y_train), generator=generator).split(cfg["batch_size"]):
                loss = nn.functional.cross_entropy(net(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        net.eval()
        performance = {}
        with torch.inference_mode():
            for name, (x, y) in splits.items():
                logits = net(x)
                performance[f"{name}_acc"] = (logits.argmax(1) == y).float().mean().item()
                performance[f"{name}_loss"] = nn.functional.cross_entropy(logits, y).item()
        report = probe.measure(net, layers="auto")
        power_law = {name: report.value(name) for name in POWER_LAW}
        rows.append({"run_id": run_id, **cfg, "epoch": epoch, **performance, **report.network, **power_law})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to write (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=40, help="runs (seeds 0..N-1; default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="default: %(default)s")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 runs, 3 epochs, temporary output")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.epochs, args.out = 3, 3, Path(tempfile.mkdtemp()) / "family_mlp.csv"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for seed in range(args.runs):
            rows = train_one(seed, epochs=args.epochs)
            writer.writerows(rows)
            handle.flush()
            print(f"[{seed + 1}/{args.runs}] {rows[-1]['run_id']}: test_acc {rows[-1]['test_acc']:.3f} "
                  f"(elapsed {(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
