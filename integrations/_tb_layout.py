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
    """What a network measure is, e.g. ``E_L2_BE`` → ``E_L2_BE: effective rank, L2 aggregate (t6), BE (raw weights)``."""
    parts = parse_measure_name(name)
    return f"{name}: {_MEASURE_TITLES[parts.measure]}, {parts.aggregation} aggregate ({parts.transform}), {VARIANT_TITLES[parts.variant]}"


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
