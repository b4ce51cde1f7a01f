"""How to measure, validated once: every front end takes one ``MeasureOptions`` and passes it on.

Which tensors to measure is the other setting, ``layers=`` (:mod:`probe.layers`); the two
travel separately and unchanged from every front end to :func:`probe.measure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypedDict

import torch

from probe.spectrum import METHODS, Method

NONFINITE = ("raise", "nan")


@dataclass(frozen=True)
class MeasureOptions:
    """How :func:`probe.measure` measures; checked at construction, so a front end fails when built.

    Parameters
    ----------
    method:
        Singular-value route: ``"auto"``, ``"gram64"`` or ``"svd"``.
    evbmf_xatol:
        EVBMF's σ²: ``None`` (the global minimum of its objective, exact to rounding and
        scale-invariant) or a positive, finite absolute tolerance for the reference's local
        search (``probe.evbmf.REFERENCE_XATOL`` reproduces the reference).
    nonfinite:
        ``"raise"`` (a layer with NaN/Inf weights raises ``ValueError`` naming it) or
        ``"nan"`` (its quantities, and so the network measures, are NaN).
    device:
        Where to compute (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …), or ``None`` for each
        weight's own device.

    Examples
    --------
    >>> MeasureOptions(method="svd").method
    'svd'
    >>> MeasureOptions(method="lapack")
    Traceback (most recent call last):
    ...
    ValueError: method must be one of ('auto', 'gram64', 'svd'), got 'lapack'
    """

    method: Method = "auto"
    evbmf_xatol: float | None = None
    nonfinite: Literal["raise", "nan"] = "raise"
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        xatol = self.evbmf_xatol
        if xatol is not None and (isinstance(xatol, bool) or not isinstance(xatol, (int, float)) or not 0 < xatol < math.inf):
            infinite = " (an infinite tolerance would stop EVBMF's search at once)" if xatol == math.inf else ""
            raise ValueError(f"evbmf_xatol must be a positive finite number or None, got {xatol!r}{infinite}")
        if self.nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {self.nonfinite!r}")
        if self.device is not None:
            try:
                kind = torch.device(self.device).type
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {self.device!r}") from error
            if kind == "meta":
                raise ValueError("device must hold values to measure; 'meta' holds none (use 'cpu' or 'cuda')")


class OptionShortcuts(TypedDict, total=False):
    """The fields of :class:`MeasureOptions` as keyword arguments (``probe.measure(model, method="svd")``)."""

    method: Method
    evbmf_xatol: float | None
    nonfinite: Literal["raise", "nan"]
    device: torch.device | str | None


LIVE = MeasureOptions(nonfinite="nan")
"""The live front ends' default: diverged weights give NaN measures; training is never stopped by the probe."""


def check_options(options: object, *, argument: str = "options") -> MeasureOptions:
    """``options`` if it is a :class:`MeasureOptions`, else a ``TypeError`` saying what to pass."""
    if not isinstance(options, MeasureOptions):
        hint = (f"; {type(options).__name__} is a logging setting: pass it as log_options="
                if type(options).__name__ == "LogOptions" else "")
        raise TypeError(f"{argument} must be a probe.MeasureOptions (how to measure), got {type(options).__name__}{hint}")
    return options


def resolve(options: MeasureOptions | None, shortcuts: dict[str, Any], *, default: MeasureOptions = MeasureOptions(),
            argument: str = "options") -> MeasureOptions:
    """``options`` (or ``default``) with the keyword ``shortcuts`` applied: the one place options are built.

    >>> resolve(None, {"method": "svd"}).method
    'svd'
    >>> resolve(MeasureOptions(nonfinite="nan"), {"method": "svd"}).nonfinite
    'nan'
    """
    options = default if options is None else check_options(options, argument=argument)
    unknown = sorted(set(shortcuts) - {f.name for f in fields(MeasureOptions)})
    if unknown:
        raise TypeError(f"unknown measuring option(s) {unknown}; MeasureOptions has {[f.name for f in fields(MeasureOptions)]}")
    return replace(options, **shortcuts) if shortcuts else options
