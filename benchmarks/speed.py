"""Speed of ``probe.measure`` (BE+AE) against a plain ``svdvals`` loop, on ResNet-18 shapes.

Prints one table; every row is timed in the same run (this machine is noisy, so compare
ratios, not seconds across runs). Two weight sets:

* ``init``: a freshly initialised ResNet-18 (CIFAR variant: 20 convs + fc).
* ``trained-like``: the same shapes with power-law spectra (condition numbers 10–1000),
  as trained layers have; these take the float64 route of ``probe.spectrum``.

Columns: ``svdvals loop`` = ``torch.linalg.svdvals`` over every unfolding in the weights'
dtype (float32); ``gram64 floor`` = float64 Gram + ``eigvalsh`` per unfolding, nothing
else; ``probe.measure`` = the whole engine (spectra, EVBMF, quantities, aggregates).

A second table gives the accuracy the speed costs: the largest relative deviation of any
per-unfolding quantity (BE and AE) of ``probe.measure`` from the same pipeline fed float64
``svdvals`` (SPEC §2 allows 1e-5).

Usage: ``python benchmarks/speed.py [--repeats 5] [--threads N]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

import probe
from probe.layers import select_layers
from probe.unfold import unfold


def resnet18_weights() -> dict[str, torch.Tensor]:
    """Conv and fc weights of a CIFAR ResNet-18 (default PyTorch initialisation)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, bias=False)]
    c_in = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            layers += [nn.Conv2d(c_in, width, 3, bias=False), nn.Conv2d(width, width, 3, bias=False)]
            if block == 0 and (stride != 1 or c_in != width):
                layers.append(nn.Conv2d(c_in, width, 1, bias=False))
            c_in = width
    layers.append(nn.Linear(512, 10))
    return {f"layer{i}.weight": m.weight.detach() for i, m in enumerate(layers)}


def trained_like(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same shapes; each out-unfolding gets singular values decaying as a power law."""
    generator = torch.Generator().manual_seed(1)
    out = {}
    for name, w in weights.items():
        matrix = w.reshape(w.shape[0], -1).double()
        u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        k = min(matrix.shape)
        exponent = 0.5 + 1.0 * torch.rand((), generator=generator, dtype=torch.float64)
        s = torch.arange(1, k + 1, dtype=torch.float64) ** -exponent
        out[name] = ((u * s) @ vh).reshape(w.shape).float()
    return out


def unfoldings(weights: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    mats = {}
    for name, w in select_layers(weights, "auto"):
        for m in unfold(w, name).values():
            mats[id(m)] = m.contiguous()
    return list(mats.values())


def svdvals_loop(mats: list[torch.Tensor]) -> None:
    for m in mats:
        torch.linalg.svdvals(m)


def gram64_floor(mats: list[torch.Tensor]) -> None:
    for m in mats:
        a = m.double()
        torch.linalg.eigvalsh(a @ a.mT)


def max_deviation(weights: dict[str, torch.Tensor]) -> float:
    """Largest relative deviation of any quantity of the default route from float64 svdvals."""
    fast, exact = probe.measure(weights), probe.measure(weights, method="svd")
    worst = 0.0
    for a, b in zip(fast.records(), exact.records()):
        for q in ("S", "C", "ER", "spec", "fro", "SQ"):
            if b[q] != 0 and math.isfinite(b[q]):
                worst = max(worst, abs(a[q] - b[q]) / abs(b[q]))
    return worst


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per cell (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    header = f"{'weights':<13} {'svdvals loop':>13} {'gram64 floor':>13} {'probe.measure':>14} {'floor/loop':>11} {'measure/loop':>13}"
    print(header)
    print("-" * len(header))
    base = resnet18_weights()
    sets = (("init", base), ("trained-like", trained_like(base)))
    for label, weights in sets:
        mats = unfoldings(weights)
        loop = timed(lambda: svdvals_loop(mats), args.repeats)
        floor = timed(lambda: gram64_floor(mats), args.repeats)
        engine = timed(lambda: probe.measure(weights), args.repeats)
        print(f"{label:<13} {loop * 1e3:>10.0f} ms {floor * 1e3:>10.0f} ms {engine * 1e3:>11.0f} ms "
              f"{floor / loop:>10.3f}x {engine / loop:>12.3f}x")
    print()
    print(f"{'weights':<13} {'max rel. deviation from float64 svdvals (any quantity, BE+AE)':>60}")
    for label, weights in sets:
        print(f"{label:<13} {max_deviation(weights):>60.1e}")


if __name__ == "__main__":
    main()
