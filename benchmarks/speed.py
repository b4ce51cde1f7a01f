"""Speed of ``probe.measure`` (BE+AE) against plain ``svdvals`` loops, across architectures.

Prints two tables; every cell of a row is timed in the same run, interleaved (each repeat
runs every column once, in turn) and the best of ``--repeats`` is kept: this machine is
shared and noisy, so compare ratios within a row, not seconds across runs.

Weights (conv and linear weights only, as ``layers="auto"`` picks them):

* ``resnet18``: CIFAR ResNet-18 (20 convs + fc); ``resnet50``: ImageNet ResNet-50 (53 convs,
  most of them 1×1, + fc); ``bert-base``: ``--blocks`` encoder blocks of BERT-base (Q, K, V,
  O 768×768, FFN 768×3072 and 3072×768); ``gpt2-medium``: ``--blocks`` blocks of
  GPT-2-medium (1024×3072 attention, 1024×1024 projection, 1024×4096 and 4096×1024 MLP).
  Transformer blocks all have the same shapes, so the ratios do not depend on the depth.
  ``llama-7b`` (not in the default run): ``--blocks`` LLaMA-7B blocks (4 × 4096² attention,
  3 × 4096×11008 MLP); a whole 7B model is 32 blocks (times the block row, plus embeddings).
* ``init``: PyTorch's default initialisation. ``trained``: the same shapes with power-law
  spectra (``s_i = i^-p``, ``p`` in [0.5, 1.5], condition numbers up to ~3e4), as trained
  layers have.

Columns: ``svd32 loop`` / ``svd64 loop`` = ``torch.linalg.svdvals`` over every distinct
unfolding in float32 (the weights' dtype) / float64; ``np svd32`` = numpy's float32
``svd(compute_uv=False)`` loop (OpenBLAS in numpy's wheels, the library the engine's CPU
kernels use: the same-BLAS baseline; torch's MKL is slow on AMD CPUs); ``gram64`` = ``probe.measure(...,
method="gram64")``; ``auto`` = ``probe.measure`` (the default); ``ww`` = WeightWatcher's
``analyze()`` (only when ``weightwatcher`` is installed; it is not a dependency). Both
``probe.measure`` columns include everything: spectra, EVBMF, quantities, aggregates.

The second table gives the accuracy: the largest relative deviation of any per-unfolding
quantity (S, C, ER, spec, fro, SQ; BE and AE) of ``probe.measure`` from the same quantities
computed from float64 ``svdvals`` (SPEC §2 allows 1e-5), with the routes taken.
``--cliff ROWS`` adds a third: an ill-conditioned (1e7) against a well-conditioned (10)
layer of one large shape, with ``auto`` alone and with the route hint a live caller passes,
and the floor: the engine's kernels alone for each route on that shape.

``--kernels`` times the CPU kernels themselves in torch (MKL) and numpy (OpenBLAS), one
thread: why :mod:`probe.linalg` uses numpy on the CPU. ``--profile`` splits one thread's
``probe.measure`` per model into its parts (scaling, stable-rank estimate, Gram products,
eigensolver, the ``gram64+min`` refinement of the smallest values, svd, EVBMF + quantities,
the rest): where the time goes. Its ``estimate`` is
``auto``'s route prediction as ``auto`` runs it (the stable-rank estimates): on trained
weights, all that ``auto`` does beyond ``gram64``.

Usage: ``python benchmarks/speed.py [--models resnet18,bert-base] [--threads 1,2]
[--repeats 3] [--blocks 4] [--clock wall|cpu] [--cliff 1024] [--kernels] [--profile]
[--device cuda] [--columns auto,svd32\\ loop] [--large 4096x4096,4096x11008]
[--large-kinds random,power,ill,steep] [--quick]``
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import probe
from probe.evbmf import evbmf
from probe.layers import select_layers
from probe.linalg import kernels_for, single_threaded_blas
from probe.quantities import quantities
from probe.spectrum import _first_routes, _largest_first
from probe.unfold import unfold

MODELS = ("resnet18", "resnet50", "bert-base", "gpt2-medium")
COLUMNS = ("svd32 loop", "svd64 loop", "np svd32", "gram64", "auto")
LARGE_MODELS = ("llama-7b",)
"""Not in the default run (minutes per row at one thread): ``--models llama-7b``."""


def resnet18(width: int = 64) -> list[tuple[int, ...]]:
    """Conv and fc weight shapes of a CIFAR ResNet-18."""
    shapes = [(width, 3, 3, 3)]
    c_in = width
    for factor, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
        w = width * factor
        for block in range(2):
            shapes += [(w, c_in, 3, 3), (w, w, 3, 3)]
            if block == 0 and (stride != 1 or c_in != w):
                shapes.append((w, c_in, 1, 1))
            c_in = w
    return shapes + [(10, c_in)]


def resnet50(width: int = 64) -> list[tuple[int, ...]]:
    """Conv and fc weight shapes of an ImageNet ResNet-50 (bottleneck blocks 3, 4, 6, 3)."""
    shapes = [(width, 3, 7, 7)]
    c_in = width
    for factor, blocks in ((1, 3), (2, 4), (4, 6), (8, 3)):
        w = width * factor
        for block in range(blocks):
            shapes += [(w, c_in, 1, 1), (w, w, 3, 3), (4 * w, w, 1, 1)]
            if block == 0:
                shapes.append((4 * w, c_in, 1, 1))
            c_in = 4 * w
    return shapes + [(1000, c_in)]


def transformer(d: int, qkv_fused: bool, blocks: int) -> list[tuple[int, ...]]:
    """Linear weight shapes of ``blocks`` transformer blocks (BERT: separate Q, K, V; GPT-2: fused)."""
    attention = [(3 * d, d)] if qkv_fused else [(d, d)] * 3
    return (attention + [(d, d), (4 * d, d), (d, 4 * d)]) * blocks


def llama_block(d: int, hidden: int) -> list[tuple[int, ...]]:
    """One LLaMA-7B block's linear weights: Q, K, V, O (d × d), gate and up (hidden × d), down
    (d × hidden). A 7B model has 32 such blocks plus two 32000 × 4096 embeddings."""
    return [(d, d)] * 4 + [(hidden, d), (hidden, d), (d, hidden)]


def shapes_of(model: str, blocks: int, quick: bool) -> list[tuple[int, ...]]:
    """``quick``: every width divided by 8, one transformer block (a smoke test)."""
    div = 8 if quick else 1
    blocks = 1 if quick else blocks
    return {
        "resnet18": lambda: resnet18(64 // div),
        "resnet50": lambda: resnet50(64 // div),
        "bert-base": lambda: transformer(768 // div, False, blocks),
        "gpt2-medium": lambda: transformer(1024 // div, True, blocks),
        "llama-7b": lambda: llama_block(4096 // div, 11008 // div) * blocks,
    }[model]()


def init_weights(shapes: list[tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """PyTorch's default (Kaiming-uniform) initialisation of each conv/linear weight."""
    torch.manual_seed(seed)
    weights = {}
    for i, shape in enumerate(shapes):
        w = torch.empty(shape)
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        weights[f"layer{i}.weight"] = w
    return weights


def trained_like(weights: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Same shapes; each weight's ``out`` unfolding gets power-law singular values ``i^-p``
    (random orthonormal factors, float32 QR), scaled to the original Frobenius norm."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in weights.items():
        rows, cols = w.shape[0], w[0].numel()
        k = min(rows, cols)
        u = torch.linalg.qr(torch.randn(rows, k, generator=g)).Q
        v = torch.linalg.qr(torch.randn(cols, k, generator=g)).Q
        p = 0.5 + float(torch.rand((), generator=g))
        s = torch.arange(1, k + 1, dtype=torch.float32) ** -p
        matrix = (u * s) @ v.T
        out[name] = (matrix * (w.norm() / matrix.norm())).reshape(w.shape)
    return out


def unfoldings(weights: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every distinct oriented unfolding (as ``probe.measure`` computes them)."""
    mats: dict[int, torch.Tensor] = {}
    for name, w in select_layers(weights, "auto"):
        for m in unfold(w, name).values():
            mats[id(m)] = m
    return [m.contiguous() for m in mats.values()]


def reference_records(weights: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """Per unfolding, BE and AE quantities from float64 ``torch.linalg.svdvals``."""
    records = []
    for name, w in select_layers(weights, "auto"):
        for matrix in unfold(w, name).values():
            s = torch.linalg.svdvals(matrix.double()).cpu().numpy()
            rows, cols = matrix.shape
            records.append({**{f"{q}_BE": v for q, v in quantities(s, rows).items()},
                            **{f"{q}_AE": v for q, v in quantities(evbmf(s, rows, cols).d, rows).items()}})
    return records


def deviation(report: probe.Report, reference: list[dict[str, float]]) -> float:
    """Largest relative deviation of any quantity of ``report`` from ``reference``."""
    got = [{f"{q}_{v}": x for v in ("BE", "AE") for q, x in getattr(u, v).items()}
           for layer in report.layers for u in layer.unfoldings.values()]
    worst = 0.0
    for a, b in zip(got, reference, strict=True):
        for key, want in b.items():
            if want != 0 and math.isfinite(want):
                worst = max(worst, abs(a[key] - want) / abs(want))
            elif a[key] != want:
                return math.inf
    return worst


def weightwatcher_analyze() -> Callable[[dict[str, torch.Tensor]], object] | None:
    """WeightWatcher's ``analyze()`` on a model holding the weights, if it is installed."""
    try:
        import weightwatcher  # type: ignore[import-not-found]
    except ImportError:
        return None

    def analyze(weights: dict[str, torch.Tensor]) -> object:
        model = torch.nn.ModuleList()
        for w in weights.values():
            layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False) if w.ndim == 2 else \
                torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), bias=False)
            layer.weight.data = w
            model.append(layer)
        return weightwatcher.WeightWatcher(model=model).analyze()

    return analyze


def best_times(columns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None],
               clock: Callable[[], float]) -> dict[str, float]:
    """Best of ``repeats`` seconds per column, the columns interleaved (warm them up first)."""
    def once(fn: Callable[[], object]) -> float:
        sync()
        start = clock()
        fn()
        sync()
        return clock() - start

    times = {name: math.inf for name in columns}
    for _ in range(repeats):
        for name, fn in columns.items():
            times[name] = min(times[name], once(fn))
    return times


def conditioned(rows: int, cols: int, condition: float, seed: int = 0) -> torch.Tensor:
    """A float32 ``rows × cols`` matrix with log-spaced singular values from 1 to 1/condition."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64)).Q
    return ((u * torch.logspace(0, -math.log10(condition), rows, dtype=torch.float64)) @ v.T).float()


def cliff(rows: int, repeats: int, clock: Callable[[], float], sync: Callable[[], None], device: torch.device) -> None:
    """Cost of an ill-conditioned layer against well-conditioned ones of the same shape
    (VGG's first fc has 4096 × 25088; this is ``rows × 6.125·rows``), with and without a hint;
    conditions 3-10 (log-spaced values, random-looking) lie around gram32's limit (≈ 4),
    where ``auto``'s prediction from the stable-rank estimate has to be right."""
    cols = int(rows * 6.125)
    print(f"\nill- vs well-conditioned linear layer {rows} x {cols} (VGG fc6 aspect), {torch.get_num_threads()} thread(s)")
    print(f"{'condition':>10} {'svd32':>10} {'gram64':>10} {'auto':>10} {'auto, hint':>11}  {'route':<10} {'max rel. dev.':>13}")
    for condition in (3.0, 5.0, 10.0, 1e7):  # 3-10: random-looking, gram32's limit is ≈ 4
        weights = {"fc.weight": conditioned(rows, cols, condition).to(device)}
        first = probe.measure(weights)  # also a warm-up
        matrix = weights["fc.weight"]
        t = best_times({
            "svd32": lambda: torch.linalg.svdvals(matrix),
            "gram64": lambda: probe.measure(weights, method="gram64"),
            "auto": lambda: probe.measure(weights),
            "hint": lambda: probe.measure(weights, hints=first),
        }, repeats, sync, clock)
        dev = deviation(first, reference_records(weights))
        print(f"{condition:>10.0e} {t['svd32']:>9.2f}s {t['gram64']:>9.2f}s {t['auto']:>9.2f}s {t['hint']:>10.2f}s  "
              f"{first.layers[0].unfoldings['out'].route:<10} {dev:>13.1e}", flush=True)
    cliff_floor(matrix, repeats, sync, clock)


def cliff_floor(matrix: torch.Tensor, repeats: int, sync: Callable[[], None], clock: Callable[[], float]) -> None:
    """The engine's kernels alone on one matrix (one BLAS thread, as the engine runs one
    matrix): the least each route can cost, so the least the cliff can be."""
    kernels = kernels_for(matrix.device)
    a, _ = kernels.prepare(matrix)
    with single_threaded_blas():
        t = best_times({
            "gram32": lambda: kernels.gram_eigenvalues(a, double=False),
            "gram64": lambda: kernels.gram_eigenvalues(a, double=True),
            "svd": lambda: kernels.svd_values(a),
        }, repeats, sync, clock)
    print(f"kernel floor, one matrix: A Aᵀ float32 + eigvalsh {t['gram32']:.3f}s, A Aᵀ float64 + eigvalsh "
          f"{t['gram64']:.3f}s, QR + svdvals(R) float64 {t['svd']:.3f}s: the svd route alone costs "
          f"{t['svd'] / t['gram32']:.1f}x gram32 and {t['svd'] / t['gram64']:.1f}x gram64", flush=True)


LARGE_KINDS = ("random", "power", "ill", "steep")
# `--large sweep`: small to mid-size single matrices, squares, wide and tall (RESULTS, round thirteen)
SWEEP = ("64x64,128x128,192x192,300x300,500x500,700x700,800x800,1000x1000,1100x1100,"
         "100x1000,300x600,500x750,700x1000,1000x1400,1000x1600,1000x300,2000x3000")


def large_matrix(rows: int, cols: int, kind: str, seed: int = 0) -> torch.Tensor:
    """A float32 ``rows × cols`` Gaussian matrix; ``power``: its shorter side's directions scaled
    ``i^-1`` (a trained-like decay, condition ~``min(rows, cols)``), ``ill``: scaled over 1e9;
    ``steep``: singular values exactly ``i^-1.5`` with random orthonormal vectors (a steep
    trained-like spectrum: at 4096 rows its smallest values lie 0.04 % apart, a dense tail
    below what the float64 Gram resolves)."""
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    if kind == "steep":
        u = torch.linalg.qr(torch.randn(rows, k, generator=g)).Q
        v = torch.linalg.qr(torch.randn(cols, k, generator=g)).Q
        return (u * torch.arange(1, k + 1, dtype=torch.float32) ** -1.5) @ v.T
    a = torch.randn(rows, cols, generator=g)
    scale = {"random": torch.ones(k), "power": torch.arange(1, k + 1, dtype=torch.float32) ** -1.0,
             "ill": torch.logspace(0, -9, k)}[kind]
    return a * (scale[:, None] if rows <= cols else scale)


def large(shapes: list[tuple[int, ...]], kinds: list[str], repeats: int, clock: Callable[[], float],
          sync: Callable[[], None], device: torch.device) -> None:
    """One large matrix at a time: ``probe.measure`` against float32 ``svdvals`` of the same
    matrix (timed side by side), with the route taken and the accuracy against float64."""
    print(f"\nsingle large layers, {torch.get_num_threads()} thread(s), best of {repeats}")
    print(f"{'shape':>12} {'kind':>7} {'svd32':>9} {'auto':>9} {'auto/svd32':>11}  {'route':<10} {'max rel. dev.':>13}")
    for rows, cols in shapes:
        for kind in kinds:
            weights = {"w.weight": large_matrix(rows, cols, kind).to(device)}
            matrix = weights["w.weight"]
            t = best_times({"svd32": lambda: torch.linalg.svdvals(matrix), "auto": lambda: probe.measure(weights)},
                           repeats, sync, clock)
            report = probe.measure(weights)
            dev = deviation(report, reference_records(weights))
            print(f"{rows}x{cols:<6} {kind:>7} {duration(t['svd32']):>9} {duration(t['auto']):>9} {t['auto'] / t['svd32']:>10.2f}x  "
                  f"{report.layers[0].unfoldings['out'].route:<10} {dev:>13.1e}", flush=True)


def duration(seconds: float) -> str:
    """``12.34s``, or ``0.57ms`` under a second (small layers take well under one)."""
    return f"{seconds:.2f}s" if seconds >= 1 else f"{seconds * 1e3:.2f}ms"


KERNEL_SHAPES = ((256, 2304), (512, 4608), (768, 768), (768, 3072), (1024, 4096))


def kernels(repeats: int) -> None:
    """Gram product, symmetric eigensolver and svdvals, torch (MKL) against numpy (OpenBLAS), 1 thread."""
    print("\nCPU kernels, 1 thread, best of", repeats, "(ms): torch's MKL against numpy's OpenBLAS")
    print(f"{'shape':>12} {'kernel':<22} {'torch':>8} {'numpy':>8} {'numpy/torch':>12}")
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        for rows, cols in KERNEL_SHAPES:
            a32 = torch.randn(rows, cols)
            a64 = a32.double()
            gram = a64 @ a64.T
            n32, n64, ngram = a32.numpy(), a64.numpy(), gram.numpy()
            pairs = {
                "A Aᵀ float32": (lambda: a32 @ a32.T, lambda: n32 @ n32.T),
                "A Aᵀ float64": (lambda: a64 @ a64.T, lambda: n64 @ n64.T),
                "eigvalsh float64": (lambda: torch.linalg.eigvalsh(gram), lambda: np.linalg.eigvalsh(ngram)),
                "svdvals float32": (lambda: torch.linalg.svdvals(a32), lambda: np.linalg.svd(n32, compute_uv=False)),
            }
            for kernel, (in_torch, in_numpy) in pairs.items():
                t = best_times({"torch": in_torch, "numpy": in_numpy}, repeats, lambda: None, time.perf_counter)
                print(f"{f'{rows}x{cols}':>12} {kernel:<22} {t['torch'] * 1e3:>8.1f} {t['numpy'] * 1e3:>8.1f} "
                      f"{t['numpy'] / t['torch']:>11.2f}x", flush=True)


def profile(models: list[str], blocks: int, quick: bool, repeats: int) -> None:
    """Where one thread's ``probe.measure`` spends its time, per model (the routes ``auto`` takes)."""
    from probe.linalg import NUMPY

    parts = ("scale", "estimate", "A Aᵀ", "eigvalsh", "refine", "svd", "EVBMF+q", "rest")
    print("\nwhere the time goes: probe.measure, 1 thread, CPU, best of", repeats, "(ms)")
    print(f"{'model':<12} {'weights':<8} {'measure':>8} " + " ".join(f"{p:>9}" for p in parts))
    torch.set_num_threads(1)
    for model in models:
        base = init_weights(shapes_of(model, blocks, quick))
        for label, weights in (("init", base), ("trained", trained_like(base))):
            report = probe.measure(weights)
            units = {id(m): (m, u) for layer, (name, w) in zip(report.layers, select_layers(weights, "auto"))
                     for m, u in ((m, layer.unfoldings[k]) for k, m in unfold(w, name).items())}
            total = {p: 0.0 for p in parts}
            with single_threaded_blas():
                for matrix, unit in units.values():
                    a, _ = NUMPY.prepare(matrix)
                    rows, cols = matrix.shape
                    steps: dict[str, Callable[[], object]] = {"scale": lambda: NUMPY.prepare(matrix)}
                    if unit.route == "svd":
                        steps["svd"] = lambda: NUMPY.svd_values(a)
                    else:
                        b = a.astype(np.float32 if unit.route == "gram32" else np.float64)
                        gram = (b @ b.T).astype(np.float64)
                        steps["A Aᵀ"] = lambda: b @ b.T
                        steps["eigvalsh"] = lambda: np.linalg.eigvalsh(gram)
                    if unit.route == "gram64+min":
                        steps["refine"] = lambda: NUMPY.smallest_or_all(a if rows <= cols else a.T, min(rows, cols))
                    steps["EVBMF+q"] = lambda: (evbmf(unit.s, rows, cols), quantities(unit.s, rows))
                    for part, seconds in best_times(steps, repeats, lambda: None, time.perf_counter).items():
                        total[part] += seconds
                matrices = [m if m.shape[0] <= m.shape[1] else m.mT for m, _ in units.values()]
                order, hints = _largest_first(matrices), [None] * len(matrices)
                total["estimate"] = best_times({"plan": lambda: _first_routes(matrices, order, "auto", hints)},
                                               repeats, lambda: None, time.perf_counter)["plan"]
            measured = best_times({"measure": lambda: probe.measure(weights)}, repeats, lambda: None,
                                  time.perf_counter)["measure"]
            total["rest"] = measured - sum(total.values())
            print(f"{model:<12} {label:<8} {measured * 1e3:>8.0f} " + " ".join(f"{total[p] * 1e3:>9.0f}" for p in parts),
                  flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, from {MODELS + LARGE_MODELS} (empty: none, e.g. with --large)")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per cell (best kept; 0: accuracy only)")
    parser.add_argument("--blocks", type=int, default=4, help="transformer blocks measured (shapes repeat per block)")
    parser.add_argument("--device", default="cpu", help="where the weights live and are measured (e.g. cuda)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (steadier on a loaded machine; one thread only)")
    parser.add_argument("--cliff", type=int, default=0, metavar="ROWS",
                        help="also time an ill- vs a well-conditioned ROWS x 6.125·ROWS layer (e.g. 1024; VGG fc6 is 4096)")
    parser.add_argument("--kernels", action="store_true", help="also time the CPU kernels in torch (MKL) and numpy (OpenBLAS)")
    parser.add_argument("--profile", action="store_true", help="also split one thread's probe.measure into its parts")
    parser.add_argument("--columns", default=",".join((*COLUMNS, "ww")),
                        help=f"comma-separated timing columns, from {(*COLUMNS, 'ww')} (ww: when weightwatcher is installed)")
    parser.add_argument("--large", default="", metavar="SHAPES",
                        help="also time single large matrices ROWSxCOLS,... (random, power-law and ill-conditioned) "
                             "against svdvals, e.g. 4096x4096,4096x11008; 'sweep': the 17 shapes of RESULTS' sweep "
                             "(64² to 2000×3000, square, wide and tall; ~5 minutes with all four kinds)")
    parser.add_argument("--large-kinds", default="random,power,ill", metavar="KINDS",
                        help=f"the --large matrices' kinds, comma-separated, from {LARGE_KINDS} (steep: a dense tail)")
    parser.add_argument("--quick", action="store_true", help="widths / 8, one block, one repeat, one thread: a smoke test")
    args = parser.parse_args(argv)
    models = [model for model in args.models.split(",") if model]
    if unknown := set(models) - set(MODELS + LARGE_MODELS):
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {MODELS + LARGE_MODELS}")
    if unknown := set(args.large_kinds.split(",")) - set(LARGE_KINDS):
        parser.error(f"unknown --large-kinds {sorted(unknown)}; choose from {LARGE_KINDS}")
    threads = [1] if args.quick else [int(t) for t in args.threads.split(",")]
    repeats = 1 if args.quick else args.repeats
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ww = weightwatcher_analyze()
    if args.clock == "cpu" and threads != [1]:
        parser.error("--clock cpu sums every thread's time: use it with --threads 1")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    print(f"torch {torch.__version__}, device {device}, {args.clock} clock, best of {repeats} interleaved; "
          f"transformers: {1 if args.quick else args.blocks} block(s){'; --quick: widths / 8' if args.quick else ''}")
    names = [c for c in COLUMNS if c in args.columns.split(",")] + (["ww"] if ww and "ww" in args.columns.split(",") else [])
    header = (f"{'model':<12} {'weights':<8} {'thr':>3} " + " ".join(f"{n:>11}" for n in names)
              + f" {'auto/svd32':>11} {'auto/svd64':>11} {'auto/np32':>10} {'auto/gram64':>12}")
    if models:
        print(header)
        print("-" * len(header))
    accuracy = []
    for model in models:
        base = init_weights(shapes_of(model, args.blocks, args.quick))
        for label, weights in (("init", base), ("trained", trained_like(base))):
            weights = {k: v.to(device) for k, v in weights.items()}
            mats = unfoldings(weights)
            mats64 = [m.double() for m in mats]
            arrays = [m.numpy() for m in mats] if device.type == "cpu" else []
            columns: dict[str, Callable[[], object]] = {name: fn for name, fn in {
                "svd32 loop": lambda: [torch.linalg.svdvals(m) for m in mats],
                "np svd32": lambda: [np.linalg.svd(a, compute_uv=False) for a in arrays],
                "svd64 loop": lambda: [torch.linalg.svdvals(m) for m in mats64],
                "gram64": lambda: probe.measure(weights, method="gram64"),
                "auto": lambda: probe.measure(weights),
            }.items() if name in names}
            if ww and device.type == "cpu" and "ww" in names:
                columns["ww"] = lambda: ww(weights)
            report, report64 = probe.measure(weights), probe.measure(weights, method="gram64")  # also warm-ups
            reference = reference_records(weights)
            if "ww" in columns:
                columns["ww"]()
            if device.type != "cpu":
                del columns["np svd32"]
            for n in threads if repeats else ():
                torch.set_num_threads(n)
                with threadpool_limits(n, user_api="blas"):
                    t = best_times(columns, repeats, sync, clock)
                cells = " ".join(f"{t[c] * 1e3:>8.0f} ms" if c in t else f"{'-':>11}" for c in names)
                ratios = [f"{t['auto'] / t[c]:>{w - 1}.3f}x" if c in t and "auto" in t else f"{'-':>{w}}"
                          for c, w in (("svd32 loop", 11), ("svd64 loop", 11), ("np svd32", 10), ("gram64", 12))]
                print(f"{model:<12} {label:<8} {n:>3} {cells} {' '.join(ratios)}", flush=True)
            routes = Counter(u.route for layer in report.layers for u in layer.unfoldings.values())
            accuracy.append((model, label, deviation(report, reference), deviation(report64, reference),
                             ", ".join(f"{r} {c}" for r, c in sorted(routes.items()))))
    if models:
        print()
        print(f"{'model':<12} {'weights':<8} {'auto: max rel. dev.':>19} {'gram64: max rel. dev.':>22}  auto's routes (unfoldings)")
    for model, label, dev_auto, dev_gram, routes in accuracy:
        print(f"{model:<12} {label:<8} {dev_auto:>19.1e} {dev_gram:>22.1e}  {routes}")
    if args.cliff or args.quick:
        torch.set_num_threads(threads[0])
        cliff(args.cliff or 64, repeats, clock, sync, device)
    if args.profile or args.quick:
        profile(models, args.blocks, args.quick, max(repeats, 1))
    if args.kernels:
        kernels(max(repeats, 1))
    if args.large:
        torch.set_num_threads(threads[0])
        shapes = SWEEP if args.large == "sweep" else args.large
        large([tuple(int(x) for x in shape.split("x")) for shape in shapes.split(",")], args.large_kinds.split(","),
              max(repeats, 1), clock, sync, device)


if __name__ == "__main__":
    main()
