"""The front door: ``measure(model_or_state_dict) -> Report``."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from typing import cast

import numpy as np
import torch
from torch import nn
from typing_extensions import Unpack

from probe.evbmf import evbmf
from probe.layers import LayerSelector, every_tensor, select_layers
from probe.options import MeasureOptions, OptionShortcuts, resolve
from probe.quantities import QUANTITIES, quantities
from probe.report import LayerResult, Report, Unfolding
from probe.spectrum import Method, Route, Spectrum, singular_values
from probe.unfold import UNFOLDINGS, unfold

log = logging.getLogger(__name__)


def measure(
    model_or_state_dict: nn.Module | Mapping[str, object],
    *,
    layers: LayerSelector = "auto",
    options: MeasureOptions | None = None,
    hints: Report | None = None,
    **shortcuts: Unpack[OptionShortcuts],
) -> Report:
    """Measure every probed layer of a model or state dict (SPEC §1–§5).

    Parameters
    ----------
    model_or_state_dict:
        An ``nn.Module`` or a mapping of names to tensors (non-tensor values are ignored).
        Any floating-point dtype: 8-bit ones (``float8_e4m3fn``, ``float8_e5m2`` …) are
        upcast to float32 (exactly) one layer at a time.
    layers:
        Which tensors: ``"auto"`` (every 2–5-D ``*weight``: conv, linear, embedding,
        attention projections; SPEC §8), ``"genprob"`` (SPEC §6), or a callable
        ``(name, tensor) -> bool`` over the state dict's tensors.
    options:
        How to measure (:class:`probe.MeasureOptions`: singular-value ``method``, EVBMF's
        ``evbmf_xatol``, the ``nonfinite`` policy, ``device``); default ``MeasureOptions()``.
    hints:
        A previous ``Report`` of the same model (e.g. last epoch's): each unfolding
        starts at the spectrum route it took then (``Unfolding.route``), skipping routes
        that failed. Saves time on ill-conditioned layers; never changes the values'
        accuracy.
    **shortcuts:
        ``MeasureOptions`` fields as keywords, applied on top of ``options``:
        ``measure(model, method="svd")`` is ``measure(model, options=MeasureOptions(method="svd"))``.

    Returns
    -------
    Report
        Per-layer quantities (``in``/``out`` × BE/AE) and ``Report.network``.

    Notes
    -----
    Sharded weights (FSDP2 / DTensor parameters) are gathered one layer at a time and that
    layer measured alone, so the extra memory is about one full layer; the gather is a
    collective: call ``measure`` on every rank of the mesh (each gets the same report).
    """
    options = resolve(options, dict(shortcuts))
    if hints is not None and not isinstance(hints, Report):
        raise TypeError(f"hints must be a Report from an earlier probe.measure of the same model, got {type(hints).__name__}")
    method, nonfinite, device, evbmf_xatol = options.method, options.nonfinite, options.device, options.evbmf_xatol
    selected = select_layers(model_or_state_dict, layers)
    if any(is_sharded(tensor) for _, tensor in selected):
        return _measure_sharded(selected, options)

    weights = []
    for name, tensor in selected:
        _check(name, tensor)
        weights.append(_upcast(tensor.detach() if device is None else tensor.detach().to(device)))
    finite = _finite_flags(weights)
    for (name, _), ok in zip(selected, finite):
        if not ok and nonfinite == "raise":
            raise ValueError(f"layer {name!r} has non-finite weights (NaN or Inf); pass nonfinite='nan' to get NaN rows instead")

    matrices: dict[tuple[int, str], torch.Tensor] = {}
    for index, ((name, _), weight) in enumerate(zip(selected, weights)):
        if finite[index]:
            for u, matrix in unfold(weight, name).items():
                matrices[(index, u)] = matrix
    spectra = _spectra(matrices, [name for name, _ in selected], method, hints)

    results = []
    measured: dict[int, Unfolding] = {}  # a linear's (or 1×1 conv's) in and out: one matrix, one result
    for index, ((name, _), weight) in enumerate(zip(selected, weights)):
        unfoldings = {}
        for u in UNFOLDINGS:
            key = (index, u)
            if key in matrices:
                matrix = matrices[key]
                if id(matrix) not in measured:
                    measured[id(matrix)] = _unfolding(spectra[id(matrix)], *matrix.shape, xatol=evbmf_xatol)
                unfoldings[u] = measured[id(matrix)]
            else:
                unfoldings[u] = _nan_unfolding(weight, u, name)
        results.append(LayerResult(name, tuple(weight.shape), unfoldings))
    log.debug("measured %d layers", len(results))
    return Report(results)


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (FSDP2, tensor parallelism), whose values live on several ranks."""
    module = sys.modules.get("torch.distributed.tensor")  # not imported: no DTensor can exist
    return module is not None and isinstance(tensor, module.DTensor)


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a DTensor (a collective: every rank of its mesh must call it), else ``tensor``."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor  # type: ignore[attr-defined]


def _measure_sharded(selected: list[tuple[str, torch.Tensor]], options: MeasureOptions) -> Report:
    """Gather one layer at a time (every rank takes part) and measure it alone."""
    results = []
    for name, tensor in selected:
        full = gather(tensor.detach())
        results.extend(measure({name: full}, layers=every_tensor, options=options).layers)
        del full
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
    if tensor.layout != torch.strided:
        raise ValueError(f"layer {name!r} is a sparse tensor ({tensor.layout}); pass tensor.to_dense() "
                         "(probe replay densifies sparse tensors of checkpoints up to 1 GiB)")


def _upcast(weight: torch.Tensor) -> torch.Tensor:
    """8-bit floating-point weights (``float8_e4m3fn`` …) as float32, which holds each of their
    values exactly; most torch operations are not implemented for them. Wider dtypes as they are."""
    return weight.float() if weight.dtype.itemsize == 1 else weight


def _finite_flags(weights: list[torch.Tensor]) -> list[bool]:
    """One host sync for all layers when they share a device, not one per layer. (NaN and
    ±Inf reach the minimum or the maximum: one pass, ~20× cheaper than ``isfinite(w).all()``.)"""
    flags = [torch.isfinite(torch.stack(torch.aminmax(w))).all() for w in weights]
    if len({f.device for f in flags}) == 1:
        return [bool(f) for f in torch.stack(flags).tolist()]
    return [bool(f) for f in flags]


def _spectra(matrices: dict[tuple[int, str], torch.Tensor], names: list[str], method: Method,
             hints: Report | None) -> dict[int, Spectrum]:
    """One spectrum per distinct matrix (linear and 1×1 conv: ``in`` is ``out``), by ``id``."""
    unique: dict[int, torch.Tensor] = {}
    routes: list[Route | None] = []
    previous = {(layer.name, u): unfolding.route
                for layer in (hints.layers if hints else ()) for u, unfolding in layer.unfoldings.items()}
    for (index, u), matrix in matrices.items():
        if id(matrix) not in unique:
            unique[id(matrix)] = matrix
            routes.append(cast("Route | None", previous.get((names[index], u)) or None))
    return dict(zip(unique, singular_values(list(unique.values()), method=method, hints=routes)))


def _unfolding(spectrum: Spectrum, rows: int, cols: int, *, xatol: float | None) -> Unfolding:
    """Quantities from the scaled spectrum (SPEC §9: weights near the dtype's largest values
    have singular values beyond float64; only ``spec``, ``fro`` and ``s``, ``d`` are then ``inf``)."""
    scaled, e = spectrum.scaled, spectrum.exponent
    denoised = evbmf(scaled, rows, cols, xatol=xatol, exponent=e)
    with np.errstate(over="ignore"):
        d = np.ldexp(denoised.d, e)
    return Unfolding(rows, cols, spectrum.values, d, denoised.sigma2, quantities(scaled, rows, exponent=e),
                     quantities(denoised.d, rows, exponent=e), route=spectrum.route)


def _nan_unfolding(weight: torch.Tensor, u: str, name: str) -> Unfolding:
    rows, cols = unfold(torch.empty(weight.shape, device="meta"), name)[u].shape
    nan = dict.fromkeys((*QUANTITIES, "SQ"), math.nan)
    return Unfolding(rows, cols, np.full(rows, np.nan), np.full(0, np.nan), math.nan, nan, dict(nan))
