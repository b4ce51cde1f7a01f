"""Stage 1a: which tensors of a model or state dict are probed (layer presets).

``"auto"``: the weights of every ``Conv1d/2d/3d`` and ``Linear`` module of an
``nn.Module``; for a state dict, every floating-point tensor whose key ends in ``weight``
and has 2 to 5 dimensions. ``"genprob"`` (SPEC §6): every 4-D tensor whose key contains
``onv`` or ``down``, in state-dict order. A callable ``(name, tensor) -> bool`` picks
from the state dict's tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Union

import torch
from torch import nn

LayerFilter = Callable[[str, torch.Tensor], bool]
LayerSelector = Union[str, LayerFilter]
PRESETS = ("auto", "genprob")

_PROBED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def select_layers(source: nn.Module | Mapping[str, object], layers: LayerSelector = "auto") -> list[tuple[str, torch.Tensor]]:
    """Return ``(name, weight)`` pairs to probe, in model / state-dict order.

    Raises ``ValueError`` for an unknown preset and when nothing is selected.
    """
    if isinstance(layers, str) and layers not in PRESETS:
        raise ValueError(f"unknown layer preset {layers!r}; use one of {PRESETS} or a callable (name, tensor) -> bool")
    if not isinstance(layers, str) and not callable(layers):
        raise TypeError(f"layers must be a preset name {PRESETS} or a callable, got {type(layers).__name__}")

    if isinstance(source, nn.Module) and layers == "auto":
        selected = [
            (f"{name}.weight" if name else "weight", module.weight.detach())
            for name, module in source.named_modules()
            if isinstance(module, _PROBED_MODULES) and isinstance(module.weight, torch.Tensor)
        ]
    else:
        tensors = _state_tensors(source)
        keep = {"auto": _auto_key, "genprob": _genprob_key}.get(layers, layers)  # type: ignore[arg-type]
        selected = [(name, tensor) for name, tensor in tensors.items() if keep(name, tensor)]

    if not selected:
        what = f"preset {layers!r}" if isinstance(layers, str) else "the layer filter"
        raise ValueError(
            f"no layer selected: {what} matched no tensor among {len(_state_tensors(source))} "
            "(expected conv or linear weights; pass layers=callable to choose them)"
        )
    return selected


def _state_tensors(source: nn.Module | Mapping[str, object]) -> dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        return {str(k): v.detach() for k, v in source.items() if isinstance(v, torch.Tensor)}
    raise TypeError(f"expected an nn.Module or a state dict (a mapping of names to tensors), got {type(source).__name__}")


def _auto_key(name: str, tensor: torch.Tensor) -> bool:
    return name.endswith("weight") and tensor.is_floating_point() and 2 <= tensor.ndim <= 5


def _genprob_key(name: str, tensor: torch.Tensor) -> bool:
    return tensor.ndim == 4 and ("onv" in name or "down" in name)
