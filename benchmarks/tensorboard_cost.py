"""What one ``ReportWriter.write`` call costs on the training thread, by ``LogOptions``.

For a GenProb digits network (26 probed layers) and a 50-layer MLP, after ``--epochs``
logged epochs (the heatmaps grow with the history), times ``ReportWriter.write`` to a real
``SummaryWriter`` with: only the network scalars, the default (scalars + 4 heatmaps), all
6 heatmaps, and the per-layer scalars with histograms; ``probe.measure`` for scale.

    .venv/bin/python benchmarks/tensorboard_cost.py --epochs 20 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import probe
from integrations.tensorboard import LAYER_QUANTITIES, LogOptions, ReportWriter
from probe.zoo import GenProbNet

OPTIONS = {
    "network scalars only": LogOptions(heatmaps=()),
    "default (+2 heatmaps: SQ, ER)": LogOptions(),
    "6 heatmaps": LogOptions(heatmaps=LAYER_QUANTITIES),
    "per-layer scalars + histograms": LogOptions(heatmaps=(), layer_quantities=LAYER_QUANTITIES, histograms=True),
}


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"GenProbNet digits (26 layers)": GenProbNet("10001", base=16, step=8),
            "MLP 64x64 (50 layers)": nn.Sequential(*(nn.Linear(64, 64) for _ in range(50)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs logged before timing (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<30} {'LogOptions':<32} {'ms per call':>12}")
    for model_name, model in models().items():
        report = probe.measure(model)
        start = time.perf_counter()
        for _ in range(args.repeats):
            probe.measure(model)
        print(f"{model_name:<30} {'(probe.measure, for scale)':<32} {1000 * (time.perf_counter() - start) / args.repeats:>12.1f}")
        for option_name, options in OPTIONS.items():
            with tempfile.TemporaryDirectory() as log_dir, SummaryWriter(log_dir) as writer:
                ours = ReportWriter(writer, options=options)
                for epoch in range(args.epochs):
                    ours.write(report, epoch, epoch=epoch)
                times = []
                for repeat in range(args.repeats):
                    start = time.perf_counter()
                    ours.write(report, args.epochs + repeat, epoch=args.epochs + repeat)
                    times.append(time.perf_counter() - start)
            print(f"{model_name:<30} {option_name:<32} {1000 * statistics.median(times):>12.1f}")


if __name__ == "__main__":
    main()
