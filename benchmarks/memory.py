"""Extra peak memory of ``probe.measure`` on one large layer, against the layer's float32 bytes.

Each case runs in a fresh subprocess (one thread): it builds the weight, measures a tiny
layer on every route first (imports and their compilation, MKL and BLAS buffers), resets the kernel's peak resident set size
(``/proc/self/clear_refs``; a forked child otherwise starts with its parent's peak), reads
the resident size, measures the layer, and reads the peak (``VmHWM``). The difference is
the extra peak memory the measurement needed on top of the weight itself; the bound is 2× the layer's float32 bytes
(plus a small constant: LAPACK workspaces, Python objects).

Kinds: ``random`` (Gaussian entries: the ``gram32``/``gram64`` routes), ``power`` (the
shorter side's directions scaled ``i^-1``: condition ~1e5–1e7, a few singular values below
what the float64 Gram resolves: ``gram64+min``), ``ill`` (the shorter side scaled
log-spaced over 1e9: condition ~1e9–1e12, ``gram64+min`` on wide matrices, ``svd`` on square ones).

Usage: ``python benchmarks/memory.py [--shapes 2048x2048,1024x4096] [--kinds random,ill]
[--method auto]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SHAPES = "2048x2048,1024x4096,4096x1024,2048x8192,4096x4096"
KINDS = ("random", "power", "ill")


def weight(rows: int, cols: int, kind: str):  # -> torch.Tensor (torch imported in the child only)
    """A float32 ``rows × cols`` weight of the given kind (seeded)."""
    import torch

    g = torch.Generator().manual_seed(0)
    w = torch.randn(rows, cols, generator=g)
    k = min(rows, cols)
    scale = {"random": None, "power": torch.arange(1, k + 1.0) ** -1, "ill": torch.logspace(0, -9, k)}[kind]
    if scale is not None:  # the shorter side's directions
        w *= scale[:, None] if rows <= cols else scale
    return w


def reset_peak() -> int:
    """Reset this process's peak resident size to the current one, and return that (bytes)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status("VmRSS")


def peak() -> int:
    """This process's peak resident size since :func:`reset_peak` (bytes)."""
    return _status("VmHWM")


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        match = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")
    return int(match[1]) * 1024


def child(rows: int, cols: int, kind: str, method: str) -> dict[str, object]:
    """Run in the subprocess: the extra peak RSS of measuring one layer, in bytes."""
    import torch

    import probe

    torch.set_num_threads(1)
    w = weight(rows, cols, kind)
    # warm-up on every route at the MKL sizes: modules imported (and compiled, in a fresh clone) and the
    # libraries' one-time buffers allocated; the warm-up's own arrays are unmapped when freed
    for warm in (torch.randn(64, 256), weight(1024, 1024, "random"), weight(1024, 1152, "ill"), weight(1024, 1024, "power")):
        probe.measure({"warm.weight": warm}, layers="auto", method=method)
    before = reset_peak()
    start = time.perf_counter()
    report = probe.measure({"layer.weight": w}, layers="auto", method=method)
    seconds = time.perf_counter() - start
    after = peak()
    route = report.layers[0].unfoldings["out"].route
    return {"extra": after - before, "tensor": rows * cols * 4, "route": route, "seconds": seconds}


def run_case(rows: int, cols: int, kind: str, method: str = "auto") -> dict[str, object]:
    """One case in a fresh interpreter (its peak RSS is its own); the child's result."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    code = f"import json, benchmarks.memory as m; print(json.dumps(m.child({rows}, {cols}, {kind!r}, {method!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated ROWSxCOLS")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from {KINDS}")
    parser.add_argument("--method", default="auto", choices=("auto", "gram64", "svd"))
    args = parser.parse_args(argv)
    print(f"extra peak RSS of probe.measure on one float32 layer, method={args.method}, 1 thread, fresh process per row")
    print(f"{'shape':>12} {'kind':>7} {'route':>10} {'tensor':>10} {'extra':>10} {'extra/tensor':>13} {'time':>8}")
    for shape in args.shapes.split(","):
        rows, cols = (int(x) for x in shape.split("x"))
        for kind in args.kinds.split(","):
            r = run_case(rows, cols, kind, args.method)
            tensor, extra = int(r["tensor"]), int(r["extra"])  # type: ignore[call-overload]
            print(f"{shape:>12} {kind:>7} {r['route']:>10} {tensor / 2**20:8.0f}MB {extra / 2**20:8.0f}MB "
                  f"{extra / tensor:12.2f}x {float(r['seconds']):7.2f}s", flush=True)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
