"""How much the reference's absolute EVBMF tolerance (``xatol=1e-5`` on σ²) moves AE values.

``probe.measure`` searches σ² to a relative precision by default (scale-invariant); the
reference stopped its search at an absolute 1e-5, which is coarse once σ² itself is small,
i.e. at realistic weight scales. For each weight set, every layer is rescaled to the given
weight standard deviation and measured both ways; the table gives the largest relative
difference of any per-unfolding AE quantity (S, C, ER, spec, fro, SQ), how many
unfoldings keep a different number of EVBMF components, and the largest relative
difference of the four headline AE measures. ``as is``: the weights unscaled.

Weight sets: the trained GenProb checkpoint of ``tests/data`` (21 layers, digits) and a
ResNet-18 with power-law ("trained-like") spectra, from ``benchmarks/speed.py``.

Usage: ``python benchmarks/evbmf_tolerance.py``
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

import probe
from probe.evbmf import REFERENCE_XATOL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from speed import init_weights, resnet18, trained_like

GENPROB = ROOT / "tests/data/genprob/SGD_NIN10001_lr0.08_wd0.0005_mom0.9_bs64_step10_DIGITS10_epoch_4.pth.tar"
STDS = (None, 0.1, 0.01, 0.003, 0.001)  # None: the weights as they are


def weight_sets() -> dict[str, tuple[dict[str, torch.Tensor], str]]:
    genprob = torch.load(GENPROB, map_location="cpu", weights_only=True)["state_dict_network"]
    return {"genprob (digits)": (genprob, "genprob"), "resnet18 trained-like": (trained_like(init_weights(resnet18())), "auto")}


def compare(weights: dict[str, torch.Tensor], layers: str) -> tuple[float, int, int, float]:
    relative = probe.measure(weights, layers=layers)
    reference = probe.measure(weights, layers=layers, evbmf_xatol=REFERENCE_XATOL)
    worst, differ, total = 0.0, 0, 0
    for a, b in zip(relative.layers, reference.layers):
        for u in a.unfoldings:
            ua, ub = a.unfoldings[u], b.unfoldings[u]
            total += 1
            if len(ua.d) != len(ub.d):
                differ += 1
                continue
            for name, value in ua.AE.items():
                if value != 0 and math.isfinite(value):
                    worst = max(worst, abs(ub.AE[name] - value) / abs(value))
    headline = max(abs(reference.network[n] - v) / abs(v) for n, v in relative.network.items()
                   if n.endswith("_AE") and math.isfinite(v) and v != 0)
    return worst, differ, total, headline


def main() -> None:
    print(f"{'weights':<22} {'std':>6} {'max rel. diff AE (same rank)':>29} {'rank differs':>13} {'headline AE':>12}")
    for label, (state, layers) in weight_sets().items():
        selected = dict(probe.layers.select_layers(state, layers))
        for std in STDS:
            scaled = {**state, **{k: v * (std / float(v.std())) for k, v in selected.items() if std}}
            worst, differ, total, headline = compare(scaled, layers)
            print(f"{label:<22} {std or 'as is':>6} {worst:>29.1e} {f'{differ}/{total}':>13} {headline:>12.1e}", flush=True)


if __name__ == "__main__":
    main()
