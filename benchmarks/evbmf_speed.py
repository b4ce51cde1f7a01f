"""Time of one EVBMF denoising (``probe.evbmf.evbmf``, the global minimum of Φ) per spectrum.

The spectra are float64 singular values of ``speed.py``'s single-matrix kinds (``random``,
``power``, ``ill``: scaled over 1e9, ``steep``) at several shapes; ``decades`` is the range
of ``s²`` the search spans. ``probe.measure`` runs EVBMF once per distinct unfolding, and
twice more where the ``gram64+min`` route checks its unrefined values
(``probe.spectrum._unrefined_hold``). Prints a table (best of ``--repeats``, microseconds,
one thread); for a before/after comparison run it against each tree (``PYTHONPATH=...``).

Usage: ``python benchmarks/evbmf_speed.py [--shapes 64x64,300x1000] [--kinds ill,power] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import LARGE_KINDS, large_matrix

from probe.evbmf import evbmf

SHAPES = "16x16,64x64,64x576,300x300,300x1000,512x4608,1000x1000,2048x2048"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated ROWSxCOLS")
    parser.add_argument("--kinds", default=",".join(LARGE_KINDS), help=f"comma-separated, from {LARGE_KINDS}")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (best kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"one evbmf() call per spectrum, 1 thread, best of {args.repeats} (µs)")
    print(f"{'shape':>10} {'kind':>7} {'decades':>8} {'kept':>5} {'µs':>9}")
    for shape in args.shapes.split(","):
        rows, cols = (int(x) for x in shape.split("x"))
        for kind in args.kinds.split(","):
            w = large_matrix(rows, cols, kind).double()
            w = w.T if rows > cols else w
            s = torch.linalg.svdvals(w).numpy()
            L, M = w.shape
            number = max(1, int(2e4 / (L + 100)))
            seconds = min(timeit.repeat(lambda: evbmf(s, L, M), number=number, repeat=args.repeats)) / number
            decades = float(np.log10(s[0] ** 2 / s[s > 0][-1] ** 2))
            print(f"{shape:>10} {kind:>7} {decades:>8.0f} {len(evbmf(s, L, M).d):>5} {seconds * 1e6:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
