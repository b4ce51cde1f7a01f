"""Effective weights of parametrized layers, rebuilt from a state dict (SPEC §8).

A layer under ``torch.nn.utils.parametrizations.weight_norm`` or ``spectral_norm`` keeps no
``weight`` in its state dict, only what its weight is computed from::

    weight_norm     X.parametrizations.weight.original0 (g), .original1 (v)
    spectral_norm   X.parametrizations.weight.original (W), .0._u, .0._v

and the deprecated hook forms keep ``X.weight_g``, ``X.weight_v`` (``torch.nn.utils.weight_norm``)
or ``X.weight_orig``, ``X.weight_u``, ``X.weight_v`` (``torch.nn.utils.spectral_norm``; such
tensors are taken as one only when their shapes fit). The
effective weight is rebuilt from these tensors alone, as torch computes it in eval mode,
``g · v / ‖v‖`` (norm over every dimension but g's) or ``W / (uᵀ W_mat v)``, so a module,
its state dict and every checkpoint of it give the same weight, and reading it never runs a
power iteration. It takes the name ``X.weight`` and the place of the group's first tensor.
Any other parametrization (``orthogonal``, a user's own, several chained) cannot be rebuilt
from a state dict: its group is reported so the caller can name the skipped layer.
"""

from __future__ import annotations

import re

import torch

_PARAMETRIZED = re.compile(r"(?P<owner>(?:.+\.)?)parametrizations\.(?P<name>[^.]+)\.(?P<member>.+)")


def fold(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Replace each parametrization group by its effective weight.

    Returns
    -------
    (tensors, skipped)
        ``tensors`` in the same order, each rebuildable group replaced by one tensor under
        its effective name; ``skipped`` maps the effective name of each group that cannot be
        rebuilt to its first original tensor (the group's tensors are left out of ``tensors``).
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    member_of: dict[str, str] = {}
    for key, tensor in tensors.items():
        found = _PARAMETRIZED.fullmatch(key)
        if found:
            effective = found["owner"] + found["name"]
            groups.setdefault(effective, {})[found["member"]] = tensor
            member_of[key] = effective
    for base in {key[: -len("_orig")] for key in tensors if key.endswith("_orig")}:
        _claim(tensors, base, {"orig": "original", "u": "0._u", "v": "0._v"}, groups, member_of)
    for base in {key[: -len("_g")] for key in tensors if key.endswith("_g")}:
        if base not in groups:
            _claim(tensors, base, {"g": "original0", "v": "original1"}, groups, member_of)

    folded: dict[str, torch.Tensor] = {}
    skipped: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        effective = member_of.get(key)
        if effective is None:
            folded.setdefault(key, tensor)
        elif effective not in folded and effective not in skipped:
            weight = _rebuild(groups[effective])
            if weight is None:
                members = groups[effective]
                skipped[effective] = next((members[m] for m in ("original", "original0") if m in members), tensor)
            elif effective not in tensors:  # a saved weight of that name wins
                folded[effective] = weight
    return folded, skipped


def _claim(tensors: dict[str, torch.Tensor], base: str, suffixes: dict[str, str],
           groups: dict[str, dict[str, torch.Tensor]], member_of: dict[str, str]) -> None:
    """Group the hook form's ``{base}_{suffix}`` tensors under ``base`` when all are present
    and rebuild (else they are ordinary tensors that happen to have such names)."""
    keys = {f"{base}_{suffix}": member for suffix, member in suffixes.items()}
    if all(key in tensors and key not in member_of for key in keys):
        members = {member: tensors[key] for key, member in keys.items()}
        if _rebuild(members) is not None:
            groups[base] = members
            member_of.update(dict.fromkeys(keys, base))


def _rebuild(members: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The effective weight of a weight_norm or spectral_norm group, else ``None``."""
    if set(members) == {"original0", "original1"}:
        return _weight_norm(members["original0"], members["original1"])
    if set(members) == {"original", "0._u", "0._v"}:
        return _spectral_norm(members["original"], members["0._u"], members["0._v"])
    return None


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype | None:
    if not all(t.is_floating_point() and t.layout == torch.strided and not t.is_meta for t in tensors):
        return None
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """``g · v / ‖v‖``, the norm over every dimension where ``g`` has size 1 (all of them for a scalar ``g``)."""
    dtype = _compute_dtype(g, v)
    if dtype is None or v.ndim == 0 or (g.ndim and (g.ndim != v.ndim or any(a not in (1, b) for a, b in zip(g.shape, v.shape)))):
        return None
    g, v = g.detach().to(dtype), v.detach().to(dtype)
    dims = [i for i in range(v.ndim) if g.ndim == 0 or g.shape[i] == 1]
    return v * (g / torch.linalg.vector_norm(v, dim=dims, keepdim=True))


def _spectral_norm(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """``W / σ``, ``σ = uᵀ W_mat v`` with the stored power-iteration vectors; ``W_mat`` has the
    dimension of length ``len(u)`` first. Where several dimensions have that length (a square
    linear, a ``ConvTranspose`` with equal channels, whose default is dim 1), the one torch
    used is the one whose ``W_mat v`` points along ``u``: each power-iteration step ends with
    ``u = W_mat v / ‖W_mat v‖``."""
    dtype = _compute_dtype(weight, u, v)
    if dtype is None or weight.ndim < 1 or u.ndim != 1 or v.ndim != 1 or u.numel() * v.numel() != weight.numel():
        return None
    dims = [i for i in range(weight.ndim) if weight.shape[i] == u.numel()]
    if not dims:
        return None
    weight, u, v = weight.detach().to(dtype), u.detach().to(dtype), v.detach().to(dtype)
    products = [weight.movedim(dim, 0).reshape(u.numel(), -1) @ v for dim in dims]
    product = min(products, key=lambda x: float(torch.linalg.vector_norm(x / torch.linalg.vector_norm(x) - u)))
    return weight / torch.vdot(u, product)
