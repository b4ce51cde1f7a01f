"""What the live front ends check on the weights: lazy modules not yet materialised, and
non-finite weights measured as NaN (``nonfinite="nan"``), which they warn about."""

from __future__ import annotations

import itertools
import warnings

from torch import nn
from torch.nn.parameter import is_lazy

import probe

_SHOWN = 5


def has_lazy(module: nn.Module) -> bool:
    """Whether ``module`` holds uninitialised (lazy) parameters or buffers: layers are selected after a forward pass."""
    return any(is_lazy(t) for t in itertools.chain(module.parameters(), module.buffers()))


def nonfinite_layers(report: probe.Report) -> list[str]:
    """Layers measured as NaN because their weights hold NaN or Inf (their ``route`` is empty)."""
    return [layer.name for layer in report.layers if any(not u.route for u in layer.unfoldings.values())]


def warn_nonfinite(report: probe.Report, where: str, *, stacklevel: int = 2) -> None:
    """Warn (``RuntimeWarning``, prefixed by ``where``) when ``report`` holds non-finite layers."""
    names = nonfinite_layers(report)
    if not names:
        return
    shown = ", ".join(map(repr, names[:_SHOWN])) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
    which = f"layer {shown} has" if len(names) == 1 else f"layers {shown} have"
    whose = "its" if len(names) == 1 else "their"
    warnings.warn(f"{where}: {which} non-finite weights (NaN or Inf); {whose} quantities and the network measures are NaN",
                  RuntimeWarning, stacklevel=stacklevel + 1)
