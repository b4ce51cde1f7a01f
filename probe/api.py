"""The front door: ``measure(model_or_state_dict) -> Report``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from torch import nn

from probe.evbmf import DEFAULT_XATOL, evbmf
from probe.layers import LayerSelector, select_layers
from probe.options import MeasureOptions
from probe.quantities import QUANTITIES, quantities
from probe.report import LayerResult, Report, Unfolding
from probe.spectrum import Method, singular_values
from probe.unfold import UNFOLDINGS, unfold

log = logging.getLogger(__name__)

def measure(
    model_or_state_dict: nn.Module | Mapping[str, object],
    *,
    layers: LayerSelector = "auto",
    method: Method = "auto",
    evbmf_xatol: float = DEFAULT_XATOL,
    nonfinite: Literal["raise", "nan"] = "raise",
    device: torch.device | str | None = None,
) -> Report:
    """Measure every probed layer of a model or state dict (SPEC §1–§5).

    Parameters
    ----------
    model_or_state_dict:
        An ``nn.Module`` or a mapping of names to tensors (non-tensor values are ignored).
    layers:
        ``"auto"`` (conv and linear weights), ``"genprob"`` (SPEC §6), or a callable
        ``(name, tensor) -> bool`` over the state dict's tensors.
    method:
        Singular-value route: ``"auto"`` (Gram fast path with precision chosen per
        matrix, svdvals fallback), ``"gram64"`` or ``"svd"`` (float64 ``svdvals``).
    evbmf_xatol:
        Absolute tolerance on σ² of EVBMF's bounded Brent search; the default
        reproduces the reference (and GenProb's numbers).
    nonfinite:
        A layer with NaN/Inf weights raises ``ValueError`` naming it (``"raise"``), or
        gets NaN quantities, which make every network measure NaN (``"nan"``).
    device:
        Compute there (e.g. ``"cuda"``) instead of on each weight's own device; each
        weight is copied there alone, never the whole model.

    The settings are checked by :class:`probe.options.MeasureOptions` (front ends build one
    and pass ``**options.kwargs()``).

    Returns
    -------
    Report
        Per-layer quantities (``in``/``out`` × BE/AE) and ``Report.network``.
    """
    MeasureOptions(layers=layers, method=method, evbmf_xatol=evbmf_xatol, nonfinite=nonfinite, device=device)
    selected = select_layers(model_or_state_dict, layers)

    weights = []
    for name, tensor in selected:
        _check(name, tensor)
        weights.append(tensor.detach() if device is None else tensor.detach().to(device))
    finite = _finite_flags(weights)
    for (name, _), ok in zip(selected, finite):
        if not ok and nonfinite == "raise":
            raise ValueError(f"layer {name!r} has non-finite weights (NaN or Inf); pass nonfinite='nan' to get NaN rows instead")

    matrices: dict[tuple[int, str], torch.Tensor] = {}
    for index, ((name, _), weight) in enumerate(zip(selected, weights)):
        if finite[index]:
            for u, matrix in unfold(weight, name).items():
                matrices[(index, u)] = matrix
    unique: dict[int, torch.Tensor] = {id(m): m for m in matrices.values()}  # linear: in is out
    spectra = dict(zip(unique, singular_values(list(unique.values()), method=method)))

    results = []
    for index, ((name, _), weight) in enumerate(zip(selected, weights)):
        unfoldings = {}
        for u in UNFOLDINGS:
            key = (index, u)
            if key in matrices:
                matrix = matrices[key]
                unfoldings[u] = _unfolding(spectra[id(matrix)], *matrix.shape, xatol=evbmf_xatol)
            else:
                unfoldings[u] = _nan_unfolding(weight, u, name)
        results.append(LayerResult(name, tuple(weight.shape), unfoldings))
    log.debug("measured %d layers", len(results))
    return Report(results)


def _check(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"layer {name!r}: expected a tensor, got {type(tensor).__name__}")
    if tensor.is_meta:
        raise ValueError(f"layer {name!r} is on the meta device and has no values; materialise the model first")
    if not tensor.is_floating_point():
        raise ValueError(f"layer {name!r} has dtype {tensor.dtype}; only floating-point weights can be measured")
    if tensor.numel() == 0:
        raise ValueError(f"layer {name!r} is empty (shape {tuple(tensor.shape)})")


def _finite_flags(weights: list[torch.Tensor]) -> list[bool]:
    """One host sync for all layers when they share a device, not one per layer."""
    flags = [torch.isfinite(w).all() for w in weights]
    if len({f.device for f in flags}) == 1:
        return [bool(f) for f in torch.stack(flags).tolist()]
    return [bool(f) for f in flags]


def _unfolding(s: np.ndarray, rows: int, cols: int, *, xatol: float) -> Unfolding:
    denoised = evbmf(s, rows, cols, xatol=xatol)
    return Unfolding(rows, cols, s, denoised.d, denoised.sigma2, quantities(s, rows), quantities(denoised.d, rows))


def _nan_unfolding(weight: torch.Tensor, u: str, name: str) -> Unfolding:
    rows, cols = unfold(torch.empty(weight.shape, device="meta"), name)[u].shape
    nan = dict.fromkeys((*QUANTITIES, "SQ"), math.nan)
    return Unfolding(rows, cols, np.full(rows, np.nan), np.full(0, np.nan), math.nan, nan, dict(nan))
