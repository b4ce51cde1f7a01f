"""The measuring settings, validated once: every front end builds one ``MeasureOptions``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from probe.layers import PRESETS, LayerSelector
from probe.spectrum import METHODS, Method

NONFINITE = ("raise", "nan")


@dataclass(frozen=True)
class MeasureOptions:
    """How :func:`probe.measure` measures; checked at construction, so a front end fails when built.

    Parameters
    ----------
    layers:
        ``"auto"``, ``"genprob"`` (SPEC §6) or a callable ``(name, tensor) -> bool``.
    method:
        Singular-value route: ``"auto"``, ``"gram64"`` or ``"svd"``.
    evbmf_xatol:
        EVBMF's tolerance on σ²: ``None`` (relative to the spectrum, scale-invariant) or a
        positive, finite absolute tolerance (``probe.evbmf.REFERENCE_XATOL`` reproduces the reference).
    nonfinite:
        ``"raise"`` (a layer with NaN/Inf weights raises ``ValueError`` naming it) or
        ``"nan"`` (its quantities, and so the network measures, are NaN).
    device:
        Where to compute (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …), or ``None`` for each
        weight's own device.

    >>> MeasureOptions(method="svd").method
    'svd'
    >>> MeasureOptions(method="lapack")
    Traceback (most recent call last):
    ...
    ValueError: method must be one of ('auto', 'gram64', 'svd'), got 'lapack'
    """

    layers: LayerSelector = "auto"
    method: Method = "auto"
    evbmf_xatol: float | None = None
    nonfinite: Literal["raise", "nan"] = "raise"
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.layers, str):
            if self.layers not in PRESETS:
                raise ValueError(f"layers must be one of {PRESETS} or a callable (name, tensor) -> bool, got {self.layers!r}")
        elif not callable(self.layers):
            raise TypeError(f"layers must be a preset name {PRESETS} or a callable, got {type(self.layers).__name__}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        xatol = self.evbmf_xatol
        if xatol is not None and (isinstance(xatol, bool) or not isinstance(xatol, (int, float)) or not 0 < xatol < math.inf):
            infinite = " (an infinite tolerance would stop EVBMF's search at once)" if xatol == math.inf else ""
            raise ValueError(f"evbmf_xatol must be a positive number or None, got {xatol!r}{infinite}")
        if self.nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {self.nonfinite!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {self.device!r}") from error

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of :func:`probe.measure`."""
        return asdict(self)
