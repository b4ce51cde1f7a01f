"""Naming: TensorBoard tags, card titles and the custom-scalars layout of what is written."""

from __future__ import annotations

import re
from collections.abc import Iterable

from probe.aggregate import check_measure_names, parse_measure_name
from probe.unfold import UNFOLDINGS

NETWORK_PREFIX = "probe/"
UNDEFINED_TAG = "probe/undefined"
HEATMAP_PREFIX = "probe_heatmap/"

QUANTITY_TITLES = {
    "S": "normalised stable rank", "C": "condition number", "ER": "effective rank (spectral entropy)",
    "spec": "spectral norm", "fro": "Frobenius norm", "SQ": "stable quality",
}
_MEASURE_TITLES = {"SQ": "stable quality", "ER": "effective rank", "spec": "spectral norm", "fro": "Frobenius norm",
                   "alpha": "power-law exponent α (WeightWatcher)", "alphahat": "α̂ = α·log10 λ_max (WeightWatcher)"}
_TRANSFORM_WORDS = {"t0": "{a}", "t1": "N·{a}", "t2": "√({a})", "t3": "√(N·{a})", "t4": "ln({a})", "t5": "ln(N·{a})",
                    "t6": "ln √({a})", "t7": "ln √(N·{a})"}
_AGGREGATION_WORDS = {"mean": "mean", "L2": "RMS", "p": "geometric mean", "wmean": "channel-weighted mean",
                      "wp": "channel-weighted geometric mean"}
_MEANINGS = {
    "ER": ("how many directions each layer uses: the entropy of its normalised singular values, in (0, ln L]; "
           "E_L2 = ln √(RMS over the N unfoldings), below 0 when the typical entropy is under 1"),
    "SQ": ("stable quality atan2(S, 1 − 1/C) of each layer, in (0, π/2]: near π/2 for a few dominant directions "
           "(or one), lower for a flat, well-conditioned spectrum; SQ_p is the geometric mean over unfoldings"),
    "spec": ("the largest singular value of each layer (its gain); S_p = ln √(N · geometric mean): grows with the "
             "weights' scale"),
    "fro": ("the Frobenius norm of each layer; F_p = ln √(N · geometric mean): grows with the weights' scale"),
    "alpha": ("WeightWatcher's power-law exponent of each layer's eigenvalue tail (λ = s²), typically 2–6 for "
              "well-trained layers, smaller for heavier tails"),
    "alphahat": "α·log10 λ_max of each layer: the exponent weighted by the scale of the largest eigenvalue",
}
VARIANT_TITLES = {"BE": "BE (raw weights)", "AE": "AE (after EVBMF denoising)"}
UNFOLDING_TITLES = {"in": "in-channel unfolding", "out": "out-channel unfolding"}


def layer_tag(quantity: str, variant: str, unfolding: str, layer: str) -> str:
    """Tag of one per-layer scalar, e.g. ``probe_layer_SQ/conv1.weight/BE_in``.

    The quantity leads (TensorBoard groups by it) and variant and unfolding end the tag,
    so they stay visible when TensorBoard shortens a long tag in the middle.
    """
    return f"probe_layer_{quantity}/{layer}/{variant}_{unfolding}"


def spectrum_tag(layer: str, unfolding: str) -> str:
    """Tag of one singular-value histogram, e.g. ``probe_spectrum/conv1.weight/in``."""
    return f"probe_spectrum/{layer}/{unfolding}"


def heatmap_tag(quantity: str) -> str:
    """Tag of one layers × epochs image, e.g. ``probe_heatmap/SQ``."""
    return HEATMAP_PREFIX + quantity


def measure_title(name: str) -> str:
    """What a network measure is, in words, e.g. ``E_L2_BE`` → ``E_L2_BE: effective rank, ln √(RMS over unfoldings), raw weights``."""
    parts = parse_measure_name(name)
    formula = _TRANSFORM_WORDS[parts.transform].format(a=f"{_AGGREGATION_WORDS[parts.aggregation]} over unfoldings")
    variant = "raw weights" if parts.variant == "BE" else "after EVBMF denoising"
    return f"{name}: {_MEASURE_TITLES[parts.measure]}, {formula}, {variant}"


def measure_description(name: str) -> str:
    """The card description of a network measure: what it is, its range, and which way is better.

    >>> measure_description("F_p_BE").startswith("F_p_BE: Frobenius norm")
    True
    """
    parts = parse_measure_name(name)
    return (f"{measure_title(name)}. Per layer: {_MEANINGS[parts.measure]}. Which direction predicts a better "
            "final accuracy depends on the task: LearnedMeasurePruner learns it per study (docs: measures.md).")


def layout(measures: Iterable[str], layer_quantities: Iterable[str], variants: Iterable[str]) -> dict[str, dict[str, list]]:
    """The custom-scalars layout: one chart per network measure, then (with per-layer
    scalars) one multi-line chart per quantity × variant × unfolding, lines = layers.

    Returns
    -------
    dict
        ``{category: {chart title: ["Multiline", [tag regex, ...]]}}`` as
        ``SummaryWriter.add_custom_scalars`` expects.
    """
    result: dict[str, dict[str, list]] = {}
    names = check_measure_names(measures)
    if names:
        result["probe network"] = {measure_title(name): ["Multiline", [f"^{re.escape(NETWORK_PREFIX + name)}$"]] for name in names}
    for variant in variants:
        charts = {}
        for quantity in layer_quantities:
            for unfolding in UNFOLDINGS:
                regex = "^" + re.escape(f"probe_layer_{quantity}/") + ".*" + re.escape(f"/{variant}_{unfolding}") + "$"
                title = f"{quantity} ({QUANTITY_TITLES[quantity]}), {UNFOLDING_TITLES[unfolding]}, {VARIANT_TITLES[variant]}: one line per layer"
                charts[title] = ["Multiline", [regex]]
        if charts:
            result[f"probe layers {variant}"] = charts
    return result
