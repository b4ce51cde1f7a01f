"""What the families trained on generated tasks (``family_mlp.py``, ``family_transformer.py``,
``family_recurrent.py``, ``family_mixer.py``, ``family_conv1d.py``, ``family_gnn.py``) share: the hyperparameters
every run draws, the training loop that records each epoch's accuracies, losses and measures,
and the resumable recording command (rows appended as each run finishes; the file rewritten in
seed order once every run is done, also by ``family.py``)."""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

import probe

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop")
LR_RANGE = {"SGD": (3e-3, 0.3), "Adam": (1e-4, 1e-2), "AdamW": (1e-4, 1e-2), "RMSprop": (3e-5, 3e-3)}
PERFORMANCE = ("train_acc", "train_loss", "val_acc", "val_loss", "test_acc", "test_loss")
POWER_LAW = ("alpha_mean_BE", "alphahat_mean_BE")
"""WeightWatcher's school, recorded beside the headline measures (SPEC §10)."""
SPLITS = {"train": slice(0, 2000), "val": slice(2000, 2500), "test": slice(2500, 4500)}
"""The sequence tasks' train / validation / test rows."""
BATCH_SIZES = (16, 32, 64, 128)


class Family(NamedTuple):
    """One family: its columns, draws, model and task."""

    name: str
    """The CSV's stem, ``benchmarks/data/<name>.csv``."""
    hyperparameters: tuple[str, ...]
    """The columns between ``run_id`` and ``seed``."""
    config: Callable[[int], dict]
    run_id: Callable[[dict], str]
    model: Callable[[dict], nn.Module]
    task: Callable[[], dict[str, tuple[torch.Tensor, torch.Tensor]]]
    runs: int
    """Runs recorded by default."""
    clip_grad_norm: float | None = 1.0
    """Gradients clipped to this norm (``None``: not clipped)."""
    schedule: str = "cosine"
    """The learning-rate schedule, stepped per batch: ``"cosine"`` (cosine annealing to zero over
    the training steps) or ``"step"`` (×0.1 at 50 % and again at 75 % of the training steps)."""

    @property
    def fields(self) -> list[str]:
        return ["run_id", *self.hyperparameters, "seed", "epoch", *PERFORMANCE, *probe.HEADLINE_NAMES, *POWER_LAW]


def split(x: torch.Tensor, y: torch.Tensor, cuts: dict[str, slice] = SPLITS) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and labels cut into the named splits."""
    return {name: (x[cut], y[cut]) for name, cut in cuts.items()}


def optimizer_draws(seed: int, rng: np.random.Generator) -> dict:
    """The optimizer (by seed, in turn), its log-uniform learning rate and weight decay (zero for
    about 30 % of the runs): every family's first draws from ``rng``."""
    optimizer = OPTIMIZERS[seed % len(OPTIMIZERS)]
    low, high = LR_RANGE[optimizer]
    return {
        "optimizer": optimizer,
        "lr": float(math.exp(rng.uniform(math.log(low), math.log(high)))),
        "weight_decay": float(0.0 if rng.random() < 0.3 else math.exp(rng.uniform(math.log(1e-5), math.log(1e-2)))),
    }


def _optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "SGD":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, weight_decay=cfg["weight_decay"])
    return getattr(torch.optim, cfg["optimizer"])(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def _schedule(family: Family, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The family's learning-rate schedule over ``steps`` batches."""
    if family.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if family.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[steps // 2, (3 * steps) // 4], gamma=0.1)
    raise ValueError(f"unknown schedule {family.schedule!r} (cosine or step)")


def train_one(family: Family, seed: int, *, epochs: int) -> list[dict]:
    """Train run ``seed`` of ``family`` (the family's schedule, cosine unless it says step;
    gradients clipped as the family says);
    one row per epoch ``0..epochs`` (epoch 0: at initialisation)."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = family.config(seed)
    name = family.run_id(cfg)
    splits = family.task()
    x_train, y_train = splits["train"]
    net = family.model(cfg)
    optimizer = _optimizer(cfg, net.parameters())
    steps = epochs * math.ceil(len(y_train) / cfg["batch_size"])
    schedule = _schedule(family, optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in range(epochs + 1):
        if epoch:
            net.train()
            for batch in torch.randperm(len(y_train), generator=generator).split(cfg["batch_size"]):
                loss = nn.functional.cross_entropy(net(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                if family.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(net.parameters(), family.clip_grad_norm)
                optimizer.step()
                schedule.step()
        net.eval()
        performance = {}
        with torch.inference_mode():
            for split, (x, y) in splits.items():
                logits = net(x)
                performance[f"{split}_acc"] = (logits.argmax(1) == y).float().mean().item()
                performance[f"{split}_loss"] = nn.functional.cross_entropy(logits, y).item()
        # a diverged run is recorded (NaN measures), not fatal to the whole recording
        report = probe.measure(net, layers="auto", nonfinite="nan")
        power_law = {measure: report.value(measure) for measure in POWER_LAW}
        rows.append({"run_id": name, **cfg, "epoch": epoch, **performance, **report.network, **power_law})
    return rows


def _run(job: tuple[str, int, int]) -> tuple[list[dict], float]:
    """One run in a worker: (the family's module, seed, epochs) -> its rows and seconds."""
    module, seed, epochs = job
    start = time.perf_counter()
    rows = train_one(importlib.import_module(module).FAMILY, seed, epochs=epochs)
    return rows, time.perf_counter() - start


def done_runs(path: Path) -> set[str]:
    """The ``run_id`` values a family table already holds (none when it does not exist)."""
    if not path.exists():
        return set()
    with path.open(newline="") as handle:
        return {row["run_id"] for row in csv.DictReader(handle)}


def sort_by_run(path: Path, order: list[str]) -> None:
    """Rewrite the family table at ``path`` with its rows in run ``order``, then by epoch."""
    rank = {name: index for index, name in enumerate(order)}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    rows.sort(key=lambda row: (rank.get(row["run_id"], len(rank)), int(row["epoch"])))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main(module: str, description: str, argv: list[str] | None = None) -> None:
    """The recording command of the family defined (as ``FAMILY``) in ``module``."""
    family: Family = importlib.import_module(module).FAMILY
    parser = argparse.ArgumentParser(description=description)
    default_out = Path(__file__).parent / "data" / f"{family.name}.csv"
    parser.add_argument("--out", type=Path, default=default_out, help="CSV to append to (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=family.runs, help="runs (seeds 0..N-1; default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="default: %(default)s")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, one thread each (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 runs, 3 epochs, temporary output")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.epochs, args.out = 3, 3, Path(tempfile.mkdtemp()) / f"{family.name}.csv"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    order = [family.run_id(family.config(seed)) for seed in range(args.runs)]
    done = done_runs(args.out)
    todo = [seed for seed, name in enumerate(order) if name not in done]
    print(f"{args.runs} runs, {len(done)} already in {args.out}, {len(todo)} to train", flush=True)
    jobs = [(module, seed, args.epochs) for seed in todo]
    if args.workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(args.workers)
        results = pool.imap_unordered(_run, jobs)
    else:
        results = map(_run, jobs)
    start = time.perf_counter()
    for count, (rows, seconds) in enumerate(results, 1):
        new = not args.out.exists()
        with args.out.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=family.fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)
        print(f"[{count}/{len(todo)}] {rows[-1]['run_id']}: val_acc@1 {rows[1]['val_acc']:.3f}, "
              f"test_acc {rows[-1]['test_acc']:.3f} ({seconds:.0f} s; elapsed {(time.perf_counter() - start) / 60:.1f} min)",
              flush=True)
    if done_runs(args.out) >= set(order):
        sort_by_run(args.out, order)
    print(f"wrote {args.out}")
