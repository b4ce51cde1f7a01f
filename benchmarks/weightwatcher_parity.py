"""α and α̂ from ``probe`` against WeightWatcher 0.7.7 on the same layers, and the speed of both.

Models (all weights in ``nn.Module``s so that WeightWatcher reads them as it reads any model):

- ``mlp``: a 64-512-256-128-10 MLP trained for 300 Adam steps on scikit-learn's digits
  (bundled with scikit-learn, no download);
- ``matrices``: random matrices as ``nn.Linear`` weights: Gaussian, Student-t with 2.5 and
  4 degrees of freedom (heavy-tailed entries), a rank-structured ``i^-0.7`` spectrum, and
  a 16-output head (16 eigenvalues: WeightWatcher's small-sample rule);
- ``cnn``: two ``Conv2d`` layers, shown to say how far apart the two definitions are
  (WeightWatcher fits the combined spectrum of the ``k×k`` slices ``W[:, :, i, j]``, each
  scaled by ``√(1/2)``, its ``conv2d_norm``; ``probe`` each unfolding; SPEC §10). The row
  ``slices`` applies ``probe.powerlaw.fit_power_law`` to WeightWatcher's conv spectrum,
  rebuilt here: the fit agrees, the matrices differ.

Per layer: α and α̂ of both, their difference, and WeightWatcher's own standard error of α
(``sigma = (α − 1)/√n_tail``), the tolerance its fit claims. For a linear layer ``probe``'s
``in`` and ``out`` unfoldings are the same matrix; the table shows ``out``.

Speed, interleaved in one run (median of ``--repeats``, one thread each):
``probe.measure(model)`` followed by ``alpha_mean_BE`` and ``alphahat_mean_BE`` (so the
α fits run; the report also holds every BE/AE quantity) against
``weightwatcher.WeightWatcher(model=model).analyze()`` with its defaults; and the fit
alone, ``probe.powerlaw.fit_power_law`` against WeightWatcher's ``WWFit``, on the
eigenvalues of Student-t(3) matrices of 500, 2,000 and 4,000 rows; and what the fits add
to ``probe.measure`` (what a replay pays per checkpoint) on the GenProb checkpoint of
``tests/data`` and ResNet-18 trained-like shapes (``benchmarks/speed.py``).

Needs ``pip install weightwatcher==0.7.7`` (the ``weightwatcher`` extra; not a dependency).
Usage: ``python benchmarks/weightwatcher_parity.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from torch import nn

import probe
from probe.powerlaw import PowerLawFit, fit_power_law


def trained_mlp(seed: int = 0) -> nn.Module:
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        batch = torch.randint(0, len(x), (128,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return model


def random_matrices(seed: int = 0) -> nn.Module:
    rng = np.random.default_rng(seed)
    k = np.arange(1, 301)
    u, _ = np.linalg.qr(rng.standard_normal((600, 300)))
    v, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    matrices = {
        "gaussian 300x600": rng.standard_normal((300, 600)) / math.sqrt(600),
        "student-t(2.5) 400x800": rng.standard_t(2.5, (400, 800)) / math.sqrt(800),
        "student-t(4) 500x1000": rng.standard_t(4, (500, 1000)) / math.sqrt(1000),
        "power-law spectrum 600x300": (u * k**-0.7) @ v.T,
        "head 16x256": rng.standard_t(3, (16, 256)) / 16,
    }
    model = nn.Sequential()
    for name, w in matrices.items():
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight.data = torch.tensor(w, dtype=torch.float32)
        model.add_module(name.split()[0].replace("(", "").replace(")", "").replace(".", "_").replace("-", "_"), layer)
    return model


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3))


def weightwatcher_details(model: nn.Module):  # -> pandas.DataFrame
    import weightwatcher  # type: ignore[import-not-found]

    with contextlib.redirect_stdout(io.StringIO()):  # its small-sample fit prints
        return weightwatcher.WeightWatcher(model=model).analyze()


def weightwatcher_conv_spectrum(weight: torch.Tensor) -> np.ndarray:
    """WeightWatcher's ESD of a conv weight ``(out, in, kh, kw)``: every slice's ``s²``, times 1/2."""
    w = weight.detach().double().numpy()
    slices = [w[:, :, i, j] for i in range(w.shape[2]) for j in range(w.shape[3])]
    return np.concatenate([np.linalg.svd(m, compute_uv=False) ** 2 for m in slices]) / 2


def rows(label: str, model: nn.Module) -> list[tuple[str, ...]]:
    report = probe.measure(model)
    layers = {layer.name.removesuffix(".weight"): layer for layer in report.layers}
    weights = dict(model.named_parameters())
    out = []
    for _, row in weightwatcher_details(model).iterrows():
        name = str(row["longname"])
        layer = layers[name]
        fits: dict[str, PowerLawFit] = {}
        if len(layer.shape) == 4:
            fits = {f"{name} {u}": layer.unfoldings[u].power_law for u in ("in", "out")}
            fits[f"{name} slices"] = fit_power_law(weightwatcher_conv_spectrum(weights[f"{name}.weight"]))
        else:
            fits = {name: layer.unfoldings["out"].power_law}
        for shown, fit in fits.items():
            out.append(_row(label, shown, layer.shape, row, fit))
    return out


def _row(label: str, name: str, shape: Sequence[int], ww: object, fit: PowerLawFit) -> tuple[str, ...]:
    ww_alpha, ww_hat = float(ww["alpha"]), float(ww["alpha_weighted"])  # type: ignore[index]
    return (label, name, "x".join(map(str, shape)), str(int(ww["num_evals"])),  # type: ignore[index]
            f"{ww_alpha:.4f}", f"{fit.alpha:.4f}", f"{abs(fit.alpha - ww_alpha):.1e}",
            f"{float(ww['sigma']):.3f}", f"{ww_hat:.4f}", f"{fit.alphahat:.4f}",  # type: ignore[index]
            f"{abs(fit.alphahat - ww_hat):.1e}")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(models: dict[str, nn.Module], repeats: int) -> list[tuple[str, ...]]:
    def ours(model: nn.Module) -> None:
        report = probe.measure(model)
        report.value("alpha_mean_BE")
        report.value("alphahat_mean_BE")

    out = []
    for label, model in models.items():
        times: dict[str, list[float]] = {"probe": [], "ww": []}
        ours(model), weightwatcher_details(model)  # warm-up
        for _ in range(repeats):
            times["probe"].append(timed(lambda: ours(model)))
            times["ww"].append(timed(lambda: weightwatcher_details(model)))
        p, w = statistics.median(times["probe"]), statistics.median(times["ww"])
        out.append((label, f"{p * 1e3:.1f}", f"{w * 1e3:.1f}", f"{w / p:.1f}x"))
    return out


def fit_speed(repeats: int) -> list[tuple[str, ...]]:
    from weightwatcher.WW_powerlaw import WWFit  # type: ignore[import-not-found]

    rng = np.random.default_rng(0)
    out = []
    for n in (500, 2000, 4000):
        lam = np.linalg.svd(rng.standard_t(3, (n, 2 * n)), compute_uv=False) ** 2
        ours, theirs = [], []
        for _ in range(repeats):
            ours.append(timed(lambda: fit_power_law(lam)))
            theirs.append(timed(lambda: WWFit(lam)))
        p, w = statistics.median(ours), statistics.median(theirs)
        out.append((str(n), f"{p * 1e3:.1f}", f"{w * 1e3:.1f}", f"{w / p:.1f}x"))
    return out


def fit_overhead(repeats: int) -> list[tuple[str, ...]]:
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    from speed import init_weights, resnet18, trained_like

    from probe.replay.readers import load_checkpoint

    genprob = root / "tests/data/genprob/SGD_NIN10001_lr0.08_wd0.0005_mom0.9_bs64_step10_DIGITS10_epoch_4.pth.tar"
    sets = {"GenProb NiN (21 layers)": (load_checkpoint(genprob).state_dict, "genprob"),
            "ResNet-18 trained-like": (trained_like(init_weights(resnet18())), "auto")}
    out = []
    for label, (state, layers) in sets.items():
        measure, fits = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            report = probe.measure(state, layers=layers)
            measure.append(time.perf_counter() - start)
            fits.append(timed(report.records))  # the fits run here, on first use
        m, f = statistics.median(measure), statistics.median(fits)
        out.append((label, f"{m * 1e3:.0f}", f"{f * 1e3:.0f}", f"{f / m:.0%}"))
    return out


def table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in body)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    import weightwatcher  # type: ignore[import-not-found]

    models = {"mlp": trained_mlp(), "matrices": random_matrices(), "cnn": cnn()}
    print(f"weightwatcher {weightwatcher.__version__}, torch {torch.__version__}, 1 thread\n")
    body = [r for label, model in models.items() for r in rows(label, model)]
    print(table(("model", "layer", "shape", "evals", "α ww", "α probe", "|Δα|", "ww σ(α)", "α̂ ww", "α̂ probe", "|Δα̂|"), body))
    print()
    print(table(("model", "probe.measure + α, α̂ (ms)", "ww analyze() (ms)", "ww / probe"), speed(models, args.repeats)))
    print()
    print(table(("eigenvalues", "fit_power_law (ms)", "ww WWFit (ms)", "ww / probe"), fit_speed(args.repeats)))
    print()
    print(table(("weights", "probe.measure (ms)", "+ α fits of every unfolding (ms)", "added"), fit_overhead(args.repeats)))


if __name__ == "__main__":
    main()
