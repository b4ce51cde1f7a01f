"""Record a family of a fourth architecture class: small recurrent classifiers on a generated sequence task.

Not a CNN, an MLP or a transformer: a token embedding (width = hidden size), an ``nn.GRU`` or
``nn.LSTM`` (by run: 1–2 layers, hidden 32–128), its last hidden state into a linear
classifier. The task, generated in code with a fixed seed: sequences of 16 tokens drawn
uniformly from a vocabulary of 6; the label is how many more 1-tokens than 2-tokens the
sequence holds, clipped to -2..2 (five classes, the largest 28 %). It needs counting over the
whole sequence, which a recurrent cell does well: most runs learn it (to ~100 %), others
(small learning rates, plain SGD) learn it slowly or stay near 40 %. 2,000 train / 500
validation / 2,000 test sequences. Each run draws, from its own seed, a cell (GRU and LSTM,
four runs each in turn), an optimizer (SGD with momentum, Adam, AdamW, RMSprop in turn), a
log-uniform learning rate and weight decay, hidden size, depth and a batch size (16–128), and
trains with a cosine schedule and gradients clipped to norm 1. After every epoch (and at
initialisation, epoch 0) it records the accuracies, losses and the eight headline measures of
every weight ``layers="auto"`` selects: the embedding and the head only — ``"auto"`` keeps
names that are or end in ``weight``, and the recurrent weights (``rnn.weight_ih_l0``,
``rnn.weight_hh_l0`` …) do not (SPEC §8; a ``layers=callable`` would choose them). The columns
are ``family_transformer.py``'s with ``cell, hidden, depth, batch_size`` instead of
``d_model, depth, heads, batch_size``, so ``pruning.py`` replays it as it does the others.
Rows are appended as each run finishes, so an interrupted recording resumes where it stopped;
when every run is done the file is rewritten in seed order.

    nice -n 10 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/family_recurrent.py --workers 1 --out /work/heldout6/family_recurrent.csv
        # the held-out table (64 runs × 20 epochs; 15.6 min on 2 CPUs shared with other jobs)
    .venv/bin/python benchmarks/family_recurrent.py --quick     # smoke test: 3 runs, 3 epochs (~20 s)
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

DEFAULT_OUT = Path(__file__).parent / "data" / "family_recurrent.csv"
CELLS = ("GRU", "LSTM")
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop")
LR_RANGE = {"SGD": (3e-3, 0.3), "Adam": (1e-4, 1e-2), "AdamW": (1e-4, 1e-2), "RMSprop": (3e-5, 3e-3)}
PERFORMANCE = ("train_acc", "train_loss", "val_acc", "val_loss", "test_acc", "test_loss")
POWER_LAW = ("alpha_mean_BE", "alphahat_mean_BE")
"""WeightWatcher's school, recorded beside the headline measures (SPEC §10)."""
FIELDS = ["run_id", "cell", "optimizer", "lr", "weight_decay", "hidden", "depth", "batch_size", "seed", "epoch",
          *PERFORMANCE, *probe.HEADLINE_NAMES, *POWER_LAW]
VOCABULARY, LENGTH, CLASSES = 6, 16, 5
SPLITS = {"train": slice(0, 2000), "val": slice(2000, 2500), "test": slice(2500, 4500)}


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call): token sequences and how many
    more 1-tokens than 2-tokens they hold (clipped to -2..2, shifted to classes 0..4)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY, size=(SPLITS["test"].stop, LENGTH))
    y = np.clip((x == 1).sum(1) - (x == 2).sum(1), -2, 2) + 2
    tensors = torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)
    return {name: (tensors[0][cut], tensors[1][cut]) for name, cut in SPLITS.items()}


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    optimizer = OPTIMIZERS[seed % len(OPTIMIZERS)]
    low, high = LR_RANGE[optimizer]
    return {
        "cell": CELLS[seed // len(OPTIMIZERS) % len(CELLS)],
        "optimizer": optimizer,
        "lr": float(math.exp(rng.uniform(math.log(low), math.log(high)))),
        "weight_decay": float(0.0 if rng.random() < 0.3 else math.exp(rng.uniform(math.log(1e-5), math.log(1e-2)))),
        "hidden": int(rng.choice([32, 64, 128])),
        "depth": int(rng.integers(1, 3)),
        "batch_size": int(rng.choice([16, 32, 64, 128])),
        "seed": seed,
    }


class RecurrentClassifier(nn.Module):
    """Token embedding, a ``depth``-layer GRU or LSTM, its last hidden state, a linear head."""

    def __init__(self, cell: str, hidden: int, depth: int) -> None:
        super().__init__()
        self.token = nn.Embedding(VOCABULARY, hidden)
        self.rnn = getattr(nn, cell)(hidden, hidden, depth, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.token(tokens))[0][:, -1])


def _optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "SGD":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9, weight_decay=cfg["weight_decay"])
    return getattr(torch.optim, cfg["optimizer"])(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def run_id(cfg: dict) -> str:
    return (f"{cfg['cell']}_{cfg['optimizer']}_h{cfg['hidden']}x{cfg['depth']}_lr{cfg['lr']:.2g}"
            f"_wd{cfg['weight_decay']:.1g}_b{cfg['batch_size']}_s{cfg['seed']}")


def train_one(seed: int, *, epochs: int) -> list[dict]:
    """Train run ``seed``; one row per epoch ``0..epochs``."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = config(seed)
    name = run_id(cfg)
    splits = task()
    x_train, y_train = splits["train"]
    net = RecurrentClassifier(cfg["cell"], cfg["hidden"], cfg["depth"])
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
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
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


def _run(job: tuple[int, int]) -> tuple[list[dict], float]:
    seed, epochs = job
    start = time.perf_counter()
    rows = train_one(seed, epochs=epochs)
    return rows, time.perf_counter() - start


def _done(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open(newline="") as handle:
        return {row["run_id"] for row in csv.DictReader(handle)}


def _sort_file(path: Path, order: list[str]) -> None:
    rank = {name: index for index, name in enumerate(order)}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    rows.sort(key=lambda row: (rank.get(row["run_id"], len(rank)), int(row["epoch"])))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to append to (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=64, help="runs (seeds 0..N-1; default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="default: %(default)s")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, one thread each (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 runs, 3 epochs, temporary output")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.epochs, args.out = 3, 3, Path(tempfile.mkdtemp()) / "family_recurrent.csv"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    order = [run_id(config(seed)) for seed in range(args.runs)]
    done = _done(args.out)
    todo = [seed for seed, name in enumerate(order) if name not in done]
    print(f"{args.runs} runs, {len(done)} already in {args.out}, {len(todo)} to train", flush=True)
    jobs = [(seed, args.epochs) for seed in todo]
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
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
        print(f"[{count}/{len(todo)}] {rows[-1]['run_id']}: val_acc@1 {rows[1]['val_acc']:.3f}, "
              f"test_acc {rows[-1]['test_acc']:.3f} ({seconds:.0f} s; elapsed {(time.perf_counter() - start) / 60:.1f} min)",
              flush=True)
    if _done(args.out) >= set(order):
        _sort_file(args.out, order)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
