"""How long ``background="process"`` holds the training thread at fit start.

``ProbeCallback(background="process")`` builds its :class:`integrations._background.Measurer`
in ``on_fit_start``. The spawned process imports torch and the probe before it can measure;
the callback used to wait for that on the training thread. Now the constructor returns at
once and measurements run in the worker thread until the process answers. Side by side, per
repeat: ``returns`` (what the training thread waits now), ``ready`` (how long the process
took to answer: what it waited before), and ``first`` (the first measurement, of a few
256×256 layers, submitted right away: served by the thread meanwhile).

Run::

    .venv/bin/python benchmarks/process_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from integrations._background import Measurer
from probe.options import LIVE


def one() -> tuple[float, float, float]:
    start = time.perf_counter()
    measurer = Measurer("process", LIVE)
    returns = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    copies = {f"layer{i}.weight": torch.randn(256, 256, generator=generator) for i in range(4)}
    measurer.submit(copies).result()
    first = time.perf_counter() - start - returns
    measurer.wait_ready(300)
    ready = time.perf_counter() - start
    measurer.shutdown()
    return returns, ready, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [one() for _ in range(args.repeats)]
    print("| repeat | returns (s, training thread waits now) | ready (s, it waited before) | first measurement (s) |")
    print("|---|---|---|---|")
    for index, (returns, ready, first) in enumerate(rows):
        print(f"| {index} | {returns:.3f} | {ready:.2f} | {first:.2f} |")
    medians = [statistics.median(column) for column in zip(*rows)]
    print(f"| median | {medians[0]:.3f} | {medians[1]:.2f} | {medians[2]:.2f} |")


if __name__ == "__main__":
    main()
