"""Stage 1a: which tensors of a model or state dict are probed (layer presets), under stable names.

One rule for every way in (SPEC §8): a module is read through its ``state_dict()``, so a
module, its state dict and any checkpoint of it select the same tensors under the same names.

``"auto"``: every floating-point tensor of 2 to 5 dimensions whose last name component is
``weight`` or ends in ``_weight`` (conv, linear, embedding, ``nn.MultiheadAttention``'s
``in_proj_weight``, fused projections; trainable or frozen alike), except normalisation
weights of more than one dimension (``nn.LayerNorm([8, 16, 16])``, ``nn.RMSNorm([16, 16])``):
those whose owner's name contains ``norm``, or with a bias of their own shape (an elementwise
affine, where a conv's or linear's bias has one dimension). ``"genprob"`` (SPEC §6):
every 4-D tensor whose key contains ``onv`` or ``down``. A callable ``(name, tensor) -> bool``
picks from the state dict's tensors.

Names are normalised first: the components that wrappers insert (``torch.compile``'s
``_orig_mod``, FSDP's ``_fsdp_wrapped_module``, activation checkpointing's
``_checkpoint_wrapped_module``, Fabric's ``_forward_module``) are dropped, and so is the
``module.`` prefix of DDP / DataParallel when every key carries it.

Parametrized layers (``weight_norm``, ``spectral_norm``) are read as their effective weight,
rebuilt from the state dict (:mod:`probe.parametrized`); a parametrization that cannot be
rebuilt skips its layer with a warning naming it. A tensor held under several names (tied
weights: one storage, same offset, shape, strides and dtype) is selected once, under the name
that sorts first, which is the one ``safetensors.torch.save_model`` keeps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from probe.parametrized import fold

LayerFilter = Callable[[str, torch.Tensor], bool]
LayerSelector = str | LayerFilter
PRESETS = ("auto", "genprob")

WRAPPER_COMPONENTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_forward_module"})
"""Name components inserted by wrappers (compile, FSDP, activation checkpointing, Fabric); dropped."""


def select_layers(source: nn.Module | Mapping[str, object], layers: LayerSelector = "auto") -> list[tuple[str, torch.Tensor]]:
    """Return ``(name, weight)`` pairs to probe, in state-dict order, under normalised names.

    Raises ``ValueError`` for an unknown preset and when nothing is selected.
    """
    check_layers(layers)
    tensors, skipped = _state(source, normalise=layers is not every_tensor)
    keep = {"auto": _auto_key, "genprob": _genprob_key}.get(layers, layers)  # type: ignore[arg-type]
    norms = _normalisation_weights(tensors) if layers == "auto" else set()
    selected = _untied([(name, tensor) for name, tensor in tensors.items() if name not in norms and keep(name, tensor)])
    unbuilt = [name for name, original in skipped.items() if keep(name, original)]
    if unbuilt:  # stacklevel=1: one location, so shown once per process however often a layer is measured
        warnings.warn(f"skipping {len(unbuilt)} parametrized layer(s) whose weight cannot be rebuilt from the state dict "
                      f"(only weight_norm and spectral_norm can): {', '.join(unbuilt)}", UserWarning, stacklevel=1)
    if not selected:
        what = f"preset {layers!r}" if isinstance(layers, str) else "the layer filter"
        raise ValueError(
            f"no layer selected: {what} matched no tensor among {len(tensors)}"
            f"{f' ({len(unbuilt)} parametrized layers skipped)' if unbuilt else ''} "
            f"({_EXPECTED[layers] if isinstance(layers, str) else 'the filter accepted none'})"
        )
    return selected


def check_layers(layers: object, *, argument: str = "layers") -> LayerSelector:
    """``layers`` if it is a preset name or a callable ``(name, tensor) -> bool``; else ``ValueError``/``TypeError``.

    >>> check_layers("convs")
    Traceback (most recent call last):
    ...
    ValueError: layers must be one of ('auto', 'genprob') or a callable (name, tensor) -> bool, got 'convs'
    """
    if isinstance(layers, str):
        if layers not in PRESETS:
            raise ValueError(f"{argument} must be one of {PRESETS} or a callable (name, tensor) -> bool, got {layers!r}")
    elif not callable(layers):
        raise TypeError(f"{argument} must be one of {PRESETS} or a callable (name, tensor) -> bool, "
                        f"got {type(layers).__name__}")
    return layers


def state_tensors(source: nn.Module | Mapping[str, object], *, normalise: bool = True) -> dict[str, torch.Tensor]:
    """The detached tensors of a module's ``state_dict()`` or of a state dict, by normalised name,
    parametrized weights rebuilt (``normalise=False``: every tensor as given)."""
    return _state(source, normalise=normalise)[0]


def _state(source: nn.Module | Mapping[str, object], *, normalise: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``state_tensors`` and the parametrized layers that could not be rebuilt (``probe.parametrized.fold``)."""
    items: Iterable[tuple[str, object]]
    if isinstance(source, nn.Module):
        items = source.state_dict().items()
    elif isinstance(source, Mapping):
        items = source.items()
    else:
        raise TypeError(f"expected an nn.Module or a state dict (a mapping of names to tensors), got {type(source).__name__}")
    tensors = {str(k): v.detach() for k, v in items if isinstance(v, torch.Tensor)}
    if not normalise:
        return tensors, {}
    strip_module = bool(tensors) and all(name.startswith("module.") for name in tensors)
    normalised: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        clean = normalise_name(name[len("module."):] if strip_module else name)
        if clean in normalised:
            raise ValueError(f"tensors {clean!r} and {name!r} have the same name once wrapper prefixes are removed")
        normalised[clean] = tensor
    return fold(normalised)


def _untied(selected: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """``selected`` with each tensor held under several names once: under the name that sorts first, at its place."""
    first: dict[tuple, str] = {}
    for name, tensor in selected:
        key = _storage_key(tensor)
        if key is not None and (key not in first or name < first[key]):
            first[key] = name
    return [(name, tensor) for name, tensor in selected if (key := _storage_key(tensor)) is None or first[key] == name]


def _storage_key(tensor: torch.Tensor) -> tuple | None:
    """What makes two tensors one: storage, offset, shape, strides, dtype (``None``: no storage to compare)."""
    if tensor.layout != torch.strided or tensor.is_meta or type(tensor) not in (torch.Tensor, nn.Parameter):
        return None
    pointer = tensor.untyped_storage().data_ptr()
    if pointer == 0:
        return None
    return tensor.device, pointer, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype


def every_tensor(name: str, tensor: torch.Tensor) -> bool:
    """Layer filter that keeps every tensor under the name given (for tensors already selected and named)."""
    return True


def normalise_name(name: str) -> str:
    """``name`` without the components wrappers insert (``_orig_mod``, ``_fsdp_wrapped_module`` …)."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_COMPONENTS)


_EXPECTED = {
    "auto": "expected floating-point 2-5-D tensors named '*weight': conv, linear, embedding; "
            "others need a callable layers= filter (Python)",
    "genprob": "expected 4-D conv weights with 'onv' or 'down' in their names, as in GenProb's networks; "
               "the 'auto' preset picks conv, linear and embedding weights",
}
"""Per preset, what it picks: said when it picks nothing."""


def _normalisation_weights(tensors: Mapping[str, torch.Tensor]) -> set[str]:
    """The ``X.weight`` of more than one dimension that normalise: ``X``'s last component holds
    ``norm`` (``LayerNorm``, ``rms_norm``, ``norm1``), or ``X.bias`` has the weight's shape."""
    found = set()
    for name, tensor in tensors.items():
        owner, _, last = name.rpartition(".")
        if last != "weight" or tensor.ndim < 2:
            continue
        bias = tensors.get(f"{owner}.bias" if owner else "bias")
        if "norm" in owner.rpartition(".")[2].lower() or (bias is not None and bias.shape == tensor.shape):
            found.add(name)
    return found


def _auto_key(name: str, tensor: torch.Tensor) -> bool:
    last = name.rsplit(".", 1)[-1]
    return (last == "weight" or last.endswith("_weight")) and tensor.is_floating_point() and 2 <= tensor.ndim <= 5


def _genprob_key(name: str, tensor: torch.Tensor) -> bool:
    return tensor.ndim == 4 and ("onv" in name or "down" in name)
