"""Replay throughput: checkpoints per second for full-size GenProb checkpoints, 1 and 2 workers.

Makes ``--checkpoints`` GenProb-format files of the full-size architecture (SPEC §6: cells
of ``40 + 8·digit`` channels, 10 classes, 21 probed layers; random channel codes, randomly
initialised weights), then times ``probe replay`` (the library's ``iter_replay`` plus the
consolidation into tables) into a fresh output directory for each worker count. Prints a
markdown table; ``steady`` excludes the start-up (worker spawn, imports) by timing from the
first finished checkpoint to the last.

    python benchmarks/replay.py                 # 48 checkpoints, workers 1 and 2
    python benchmarks/replay.py --checkpoints 96 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import torch

import probe
from probe.replay import consolidate, find_checkpoints, genprob_filename, iter_replay, load_checkpoint, save_genprob_checkpoint
from probe.zoo import GenProbNet


def make_checkpoints(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    """``count`` full-size GenProb files (random codes and weights, made-up performance)."""
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        code = "".join(str(rng.randrange(10)) for _ in range(5))
        torch.manual_seed(index)
        state = GenProbNet(code, num_classes=10).state_dict()
        name = genprob_filename(optimizer="SGD", channel_code=code, hparams=(f"seed{index}",), dataset="CIFAR10", epoch=index % 70)
        performance = {"test_acc": 0.5, "test_loss": 1.0, "train_acc": 0.6, "train_loss": 0.9}
        paths.append(save_genprob_checkpoint(folder / name, state, performance))
    return paths


def time_replay(paths: list[Path], out: Path, workers: int) -> tuple[float, float]:
    """Wall seconds of a full replay (measure + consolidate), and the steady-state seconds."""
    start = time.perf_counter()
    finished = []
    for outcome in iter_replay(paths, out, workers=workers):
        if outcome.status != "measured":
            raise RuntimeError(f"{outcome.path}: {outcome.status} {outcome.error}")
        finished.append(time.perf_counter())
    consolidate(out)
    total = time.perf_counter() - start
    return total, finished[-1] - finished[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=48, help="number of checkpoints (default 48)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the in-process run (workers=1; default 1, as each worker uses)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        paths = find_checkpoints([make_checkpoints(Path(tmp) / "ckpts", args.checkpoints)[0].parent])
        size = sum(p.stat().st_size for p in paths) / len(paths) / 2**20
        one = load_checkpoint(paths[0])
        layers = len(probe.measure(one.state_dict, layers="genprob").layers)
        load_s = _mean_seconds(lambda: load_checkpoint(paths[1]), 5)
        measure_s = _mean_seconds(lambda: probe.measure(one.state_dict, layers="genprob"), 5)
        print(f"{len(paths)} GenProb checkpoints, full size ({size:.1f} MiB each, {layers} probed layers); "
              f"load {load_s * 1e3:.0f} ms + measure {measure_s * 1e3:.0f} ms per checkpoint in one process "
              f"({args.threads} torch thread{'s' if args.threads > 1 else ''}); {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}\n")
        print("| workers | wall s | checkpoints/s | steady checkpoints/s |")
        print("|---:|---:|---:|---:|")
        for workers in (int(w) for w in args.workers.split(",")):
            total, steady = time_replay(paths, Path(tmp) / f"out{workers}", workers)
            print(f"| {workers} | {total:.1f} | {len(paths) / total:.2f} | {(len(paths) - 1) / steady:.2f} |")


def _mean_seconds(call, repeats: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


if __name__ == "__main__":
    main()
