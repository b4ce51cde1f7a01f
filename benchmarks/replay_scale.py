"""`probe merge` and `probe report` at GenProb's full-grid size: time and peak memory.

GenProb's grid is 7 optimizers × 5 learning rates × 3 weight decays × 32 channel codes ×
70 epochs = 235,200 checkpoints of 21 probed layers: 19.8 million ``layers.csv`` rows. This
writes that many synthetic records (random values, the runner's record format; no training,
no measuring) into ``--shards`` replay directories, then times, each in a fresh process:

- ``probe merge SHARDS --out ALL --parquet``: join the shards and write the tables (CSV and Parquet);
- ``probe report ALL``: correlations of headline measures (columns of ``checkpoints.csv``)
  and of aggregates recomputed from the layer table, once from Parquet and once from CSV.

Peak memory is each process's maximum resident set size. Prints a markdown table.

    python benchmarks/replay_scale.py                          # the full grid (needs ~12 GB of disk)
    python benchmarks/replay_scale.py --fraction 0.01 --fraction 0.1   # smaller grids, for the trend
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probe.replay import iter_replay
from probe.replay.genprob import genprob_filename
from probe.replay.store import RECORDS, checkpoint_key
from probe.replay.tables import NETWORK_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ("SGD", "AdaM", "AdaBound", "AdaGrad", "RMSProp", "SAM", "AdamW")
LEARNING_RATES = ("lr0.1", "lr0.05", "lr0.01", "lr0.005", "lr0.001")
WEIGHT_DECAYS = ("wd0", "wd0.0001", "wd0.0005")
EPOCHS = 70
LAYERS = 21
HEADLINE = "E_L2_BE,SQ_p_BE,S_p_BE,F_p_BE,E_L2_AE,SQ_p_AE,S_p_AE,F_p_AE"
AGGREGATES = "ER_mean_t4_BE,SQ_wp_t0_AE"


def grid(fraction: float) -> list[tuple[str, str, str, str, int]]:
    """The full grid's (optimizer, lr, wd, code, epoch), or the first ``fraction`` of its runs (all epochs)."""
    codes = [f"{i:05d}" for i in range(32)]
    runs = [(o, lr, wd, c) for o in OPTIMIZERS for lr in LEARNING_RATES for wd in WEIGHT_DECAYS for c in codes]
    runs = runs[: max(1, round(len(runs) * fraction))]
    return [(*run, epoch) for run in runs for epoch in range(EPOCHS)]


def write_records(shards: list[Path], cells: list[tuple], seed: int = 0) -> None:
    """One record per cell, in the runner's format (``records/KEY~ID.json``), dealt round-robin to ``shards``.

    Layer rows are random; to write 235,000 records quickly, each record takes its layer
    rows from a pool of 64 random sets (already in JSON).
    """
    rng = random.Random(seed)
    for shard in shards:
        list(iter_replay([], shard))  # creates the directory and its replay.json
    names = [f"cell{i}.{k}.weight" for i in range(LAYERS // 2 + 1) for k in (0, 3)][:LAYERS]
    pool = [
        json.dumps([
            {"layer_index": i, "ndim": 4, "layer": layer, "unfolding": u, "variant": v, "rows": 64, "cols": 576,
             "weight": 64, "kept": rng.randrange(1, 64), **{q: rng.random() for q in ("S", "C", "ER", "spec", "fro", "SQ")}}
            for i, layer in enumerate(names) for u in ("in", "out") for v in ("BE", "AE")
        ])
        for _ in range(64)
    ]
    for index, (optimizer, lr, wd, code, epoch) in enumerate(cells):
        name = genprob_filename(optimizer=optimizer, channel_code=code, hparams=(lr, wd), dataset="CIFAR10", epoch=epoch)
        path, acc = f"/synthetic/{name}", rng.random()
        record = {
            "key": checkpoint_key(path),
            "file": {"size": 1, "mtime_ns": 1},
            "checkpoint": {"path": path, "format": "genprob", "run": name.rsplit("_epoch_", 1)[0], "model_id": code,
                           "optimizer": optimizer, "dataset": "CIFAR10", "hparams": f"{lr} {wd}", "epoch": epoch,
                           "preset": "genprob", "n_layers": LAYERS},
            "performance": {"test_acc": acc, "test_loss": 1 - acc, "train_acc": acc + 0.05, "train_loss": 0.9 - acc, "gap": -0.05},
            "network": {n: rng.random() for n in NETWORK_COLUMNS},
        }
        text = json.dumps(record)[:-1] + f', "layers": {pool[rng.randrange(len(pool))]}}}'
        target = shards[index % len(shards)] / RECORDS / f"{record['key']}~000000000000.json"  # KEY~ID
        target.write_text(text)


def run(*args: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one ``probe`` command in a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "probe.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"probe {' '.join(args)} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, action="append", help="share of the full grid's runs (repeatable; default 1)")
    parser.add_argument("--shards", type=int, default=4, help="replay directories to merge (default 4)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.shards} shards merged; "
              f"report measures: the 8 headline + {AGGREGATES} (from the layer table)\n")
        print("| checkpoints | layer rows | records GB | step | wall s | peak MiB |")
        print("|---:|---:|---:|---|---:|---:|")
        for fraction in args.fraction or [1.0]:
            folder = Path(tmp) / f"f{fraction}"
            shards = [folder / f"shard{k}" for k in range(args.shards)]
            cells = grid(fraction)
            write_records(shards, cells)
            size = sum(f.stat().st_size for s in shards for f in (s / RECORDS).iterdir()) / 1e9
            rows = len(cells) * LAYERS * 4
            measured = [
                ("merge (CSV + Parquet)", run("merge", *map(str, shards), "--out", str(folder / "all"), "--parquet")),
                ("report, layers from Parquet", run("report", str(folder / "all"), "--measures", f"{HEADLINE},{AGGREGATES}", "--no-plots")),
            ]
            for table in ("checkpoints.parquet", "layers.parquet"):
                (folder / "all" / table).unlink()
            measured.append(("report, layers from CSV", run("report", str(folder / "all"), "--measures", f"{HEADLINE},{AGGREGATES}", "--no-plots")))
            for step, (seconds, peak) in measured:
                print(f"| {len(cells):,} | {rows:,} | {size:.1f} | {step} | {seconds:.0f} | {peak:.0f} |", flush=True)
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
