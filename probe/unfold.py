"""Stage 1b: a weight tensor -> its ``in`` and ``out`` matrices (SPEC §1).

Matrices are returned *oriented*: rows ≤ columns (a tall matrix is transposed), so
``L = rows`` and ``M = cols``. A linear weight, and a conv whose kernel has one element
(1×1, 1×1×1), gives the same matrix object twice (its two unfoldings are transposes of
each other), so its spectrum is computed once.
"""

from __future__ import annotations

import math

import torch

UNFOLDINGS = ("in", "out")


def orient(matrix: torch.Tensor) -> torch.Tensor:
    """Transpose ``matrix`` if it has more rows than columns (a view, no copy)."""
    return matrix.mT if matrix.shape[-2] > matrix.shape[-1] else matrix


def unfold(weight: torch.Tensor, name: str = "weight") -> dict[str, torch.Tensor]:
    """Return ``{"in": A_in, "out": A_out}`` for a linear (2-D) or conv (3-D to 5-D) weight.

    conv ``(out, in, *k)``: ``in`` is ``in × (out·Πk)`` (axis 1 moved first), ``out`` is
    ``out × (in·Πk)``. Each matrix is oriented so rows ≤ columns.
    """
    if weight.ndim == 2:
        matrix = orient(weight)
        return {"in": matrix, "out": matrix}
    if weight.ndim in (3, 4, 5):
        out_ch, in_ch = weight.shape[0], weight.shape[1]
        out_matrix = weight.reshape(out_ch, -1)
        if math.prod(weight.shape[2:]) == 1:
            matrix = orient(out_matrix)
            return {"in": matrix, "out": matrix}
        in_matrix = weight.transpose(0, 1).reshape(in_ch, -1)
        return {"in": orient(in_matrix), "out": orient(out_matrix)}
    raise ValueError(
        f"layer {name!r}: cannot unfold a weight with shape {tuple(weight.shape)}; "
        "only linear (2-D) and conv (3-D, 4-D, 5-D) weights are probed"
    )
