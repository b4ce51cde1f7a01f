"""Per-epoch cost of live measuring: a Lightning fit without the callback, with it, and in background modes.

Workloads: the digits example (``GenProbNet("10001", base=16, step=4)`` on the
scikit-learn digits images, 1,000 training images in batches of 64) and a ResNet-18
CIFAR variant (20 convs + fc, channels 64..512, 11.2 M parameters) trained on a handful of
random ``3×32×32`` batches per "epoch"; ``resnet18-gpu-like`` stands in for training on a
GPU, where the training thread mostly waits: each step sleeps ``--wait`` seconds, then
trains on 2 images on the CPU. Every configuration logs to TensorBoard and measures every
epoch; ``--val-batches N`` adds a validation loop of N batches (the same data; default
none). Modes: ``none`` (no callback), ``sync`` (``ProbeCallback()``), ``thread`` and
``process`` (``ProbeCallback(background=...)``), and each of these ``+monitor``: with
``EarlyStopping("probe/E_L2_BE")``, for which the callback waits for the fresh measurement
before the monitor reads (background: it runs alongside the validation loop and is joined
at its end; without a validation loop, at the epoch end).

``s/epoch`` is the median, over ``--repeats`` fits run interleaved with the other modes,
of the steady epochs' durations (start to next start; epoch 0 is warm-up and the last
epoch ends the fit). ``fit end +s`` is how much longer the last epoch and the end of
``fit`` took than a steady epoch: background modes wait there for the last measurement.
``measure`` and ``blocking`` are medians of ``ProbeCallback.timings`` (epochs 1..):
the time ``probe.measure`` took and the time the training thread spent in the callback.

Run::

    .venv/bin/python benchmarks/overhead.py                     # all workloads, 5 epochs, 2 repeats
    .venv/bin/python benchmarks/overhead.py --threads 1         # a shared machine: avoid oversubscription
    .venv/bin/python benchmarks/overhead.py --models resnet18 --epochs 6 --batches 8
    .venv/bin/python benchmarks/overhead.py --models resnet18-gpu-like --val-batches 4 \
        --modes none,sync,thread,process,sync+monitor,thread+monitor,process+monitor   # the monitor contract's cost
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from integrations.lightning import ProbeCallback
from probe.layers import select_layers
from probe.zoo import GenProbNet, digits_datasets

MODES = ("none", "sync", "thread", "process")
MONITORED = tuple(f"{mode}+monitor" for mode in MODES[1:])


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32×32 inputs: 3×3 stem, four stages of two basic blocks (64..512), fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _workload(name: str, batches: int, batch_size: int, wait: float) -> tuple[nn.Module, DataLoader, float]:
    """The network, its loader, and the seconds each training step waits with the CPU idle."""
    torch.manual_seed(0)
    if name == "digits":
        train, _, _ = digits_datasets(seed=0)
        return GenProbNet("10001", base=16, step=4), DataLoader(train, batch_size=64, shuffle=True), 0.0
    if name in ("resnet18", "resnet18-gpu-like"):
        # gpu-like: the step waits (as a training thread waits for a GPU), then trains on 2 images
        gpu_like = name == "resnet18-gpu-like"
        size = 2 if gpu_like else batch_size
        data = TensorDataset(torch.randn(batches * size, 3, 32, 32), torch.randint(0, 10, (batches * size,)))
        return ResNet18(), DataLoader(data, batch_size=size), wait if gpu_like else 0.0
    raise ValueError(f"unknown model {name!r}; use digits, resnet18 or resnet18-gpu-like")


def _fit(pl, network: nn.Module, loader: DataLoader, wait: float, mode: str, epochs: int, log_dir: Path,
         val_batches: int = 0, accelerator: str = "cpu") -> tuple[list[float], float, ProbeCallback | None]:
    """Seconds of epochs 1..epochs-2 (start to next start), seconds from the last epoch's start to the
    return of ``fit``, and the callback."""
    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def training_step(self, batch, batch_idx):
            time.sleep(wait)
            images, labels = batch
            loss = nn.functional.cross_entropy(self.network(images), labels)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            time.sleep(wait)
            images, labels = batch
            self.log("val_loss", nn.functional.cross_entropy(self.network(images), labels))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    class EpochClock(pl.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            measurer = getattr(probe_callback, "_measurer", None)
            if trainer.current_epoch == 1 and measurer is not None:
                measurer.wait_ready()  # "process": its start-up overlaps warm-up; steady epochs measure there
            self.starts.append(time.perf_counter())

    clock = EpochClock()
    kind, _, monitor = mode.partition("+")
    probe_callback = None if kind == "none" else ProbeCallback(background=False if kind == "sync" else kind)
    callbacks = [clock] if probe_callback is None else [probe_callback, clock]
    if monitor:
        callbacks.append(pl.callbacks.EarlyStopping("probe/E_L2_BE", mode="max", patience=10 * epochs))
    trainer = pl.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=pl.loggers.TensorBoardLogger(log_dir, name=mode),
                         callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1, limit_val_batches=val_batches,
                         num_sanity_val_steps=0)
    trainer.fit(Module(), loader, loader if val_batches else None)
    end = time.perf_counter()
    return [b - a for a, b in zip(clock.starts[1:-1], clock.starts[2:])], end - clock.starts[-1], probe_callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18,resnet18-gpu-like",
                        help="comma-separated: digits, resnet18, resnet18-gpu-like")
    parser.add_argument("--wait", type=float, default=0.5,
                        help="resnet18-gpu-like: seconds each step waits with the CPU idle (default 0.5)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per fit, the first is warm-up (default 5)")
    parser.add_argument("--batches", type=int, default=4, help="resnet18: random batches per epoch (default 4)")
    parser.add_argument("--batch-size", type=int, default=32, help="resnet18: batch size (default 32)")
    parser.add_argument("--repeats", type=int, default=2, help="fits per model and mode, interleaved; medians (default 2)")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator of the fits (e.g. gpu; default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--val-batches", type=int, default=0, help="validation batches per epoch (default 0: no validation loop)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, 'none' first: {', '.join(MODES + MONITORED)} (default: {','.join(MODES)})")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if modes[0] != "none" or not set(modes) <= set(MODES + MONITORED):
        parser.error(f"--modes: 'none' first, then any of {MODES[1:] + MONITORED}; got {args.modes!r}")
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (epoch 0 is warm-up, the last one ends the fit)")
    if args.threads:
        torch.set_num_threads(args.threads)

    import lightning.pytorch as pl
    import lightning.pytorch.callbacks
    import lightning.pytorch.loggers  # noqa: F401

    warnings.filterwarnings("ignore", message=r".*(num_workers|log_every_n_steps|LeafSpec|val_dataloader).*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            epochs: dict[str, list[float]] = {mode: [] for mode in modes}
            tails: dict[str, list[float]] = {mode: [] for mode in modes}
            timings: dict[str, list] = {mode: [] for mode in modes}
            for _ in range(args.repeats):
                for mode in modes:  # interleaved, so a slow spell of a shared machine hits every mode
                    network, loader, wait = _workload(name, args.batches, args.batch_size, args.wait)
                    steady, tail, callback = _fit(pl, network, loader, wait, mode, args.epochs, Path(scratch) / name,
                                                  args.val_batches, args.accelerator)
                    epochs[mode] += steady
                    tails[mode].append(tail)
                    timings[mode] += callback.timings[1:] if callback else []
            baseline = statistics.median(epochs["none"])
            for mode in modes:
                seconds = statistics.median(epochs[mode])
                rows.append({
                    "model": name,
                    "layers": len(select_layers(network)),
                    "params": sum(p.numel() for p in network.parameters()),
                    "batches": len(loader),
                    "mode": mode,
                    "epoch": seconds,
                    "overhead": seconds / baseline - 1.0,
                    "end": statistics.median(tails[mode]) - seconds,
                    "measure": statistics.median(t.measure_s for t in timings[mode]) if timings[mode] else None,
                    "blocking": statistics.median(t.blocking_s for t in timings[mode]) if timings[mode] else None,
                })

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs "
          f"({platform.machine()}), {args.epochs} epochs per fit, {args.repeats} fits per mode, "
          f"{args.val_batches} validation batches per epoch\n")
    print("| workload | probed layers | parameters | batches/epoch | mode | s/epoch | vs none | fit end +s "
          "| measure s | blocking s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        measure = "" if r["measure"] is None else f"{r['measure']:.3f}"
        blocking = "" if r["blocking"] is None else f"{r['blocking']:.3f}"
        print(f"| {r['model']} | {r['layers']} | {r['params'] / 1e6:.2f} M | {r['batches']} | {r['mode']} | "
              f"{r['epoch']:.2f} | {r['overhead']:+.0%} | {r['end']:+.2f} | {measure} | {blocking} |")


if __name__ == "__main__":
    main()
