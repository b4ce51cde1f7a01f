"""Stage 2: matrices -> singular values (SPEC §2), on the matrices' own device.

Only singular values are computed, never U or V. The fast route is the eigenvalues of
the ``L × L`` Gram matrix ``A Aᵀ`` (``L ≤ M``), with eigenvalue problems of equal shape
batched. Its precision is chosen per matrix from the conditioning the Gram route itself
reveals:

1. Gram in float32, eigenvalues in float64. Kept only where ``λ_min / λ_max`` shows the
   rounding of the float32 product cannot move any singular value by more than about
   1e-7 relative (well-conditioned matrices, e.g. freshly initialised layers).
2. Otherwise Gram in float64. Kept where the same bound holds in float64.
3. Otherwise (nearly rank-deficient matrices) ``torch.linalg.svdvals`` in float64.

Every route gives each SPEC §4 quantity within 1e-5 relative of float64 ``svdvals``
(``tests/test_spectrum.py`` checks this on matrices at each tier's boundary).
Half-precision weights are upcast per matrix, never summed in 16 bits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

log = logging.getLogger(__name__)

Method = Literal["auto", "gram64", "svd"]
METHODS = ("auto", "gram64", "svd")

# Rounding a Gram product A Aᵀ to precision u moves its eigenvalues by at most about
# u·λ_max, so the smallest singular value's relative error is at most about
# u / (2·λ_min/λ_max). A tier is kept where that bound is ≤ 1e-6 (quantities then agree to
# ~2e-6); measured errors sit ~10× below the bound (benchmarks/RESULTS.md, "accuracy").
_MAX_RELATIVE_ERROR = 1e-6
_MIN_RATIO = {
    dtype: torch.finfo(dtype).eps / (2 * _MAX_RELATIVE_ERROR) for dtype in (torch.float32, torch.float64)
}


def singular_values(matrices: Sequence[torch.Tensor], *, method: Method = "auto") -> list[np.ndarray]:
    """Singular values of each matrix (rows ≤ cols), descending, as float64 NumPy arrays.

    Matrices of equal shape, dtype and device are processed together; the computation
    runs on each matrix's device and only the singular values are copied to the host.
    """
    if method not in METHODS:
        raise ValueError(f"unknown spectrum method {method!r}; choose one of {METHODS}")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, matrix in enumerate(matrices):
        if matrix.shape[-2] > matrix.shape[-1]:
            raise ValueError(f"matrix {index} has shape {tuple(matrix.shape)}; orient it first (rows <= cols)")
        groups[(tuple(matrix.shape), matrix.device)].append(index)

    result: list[np.ndarray | None] = [None] * len(matrices)
    for indices in groups.values():
        batch = [matrices[i] for i in indices]
        for i, values in zip(indices, _group_values(batch, method)):
            result[i] = values
    return result  # type: ignore[return-value]


def _group_values(batch: list[torch.Tensor], method: Method) -> list[np.ndarray]:
    """Singular values for matrices of one shape on one device."""
    pending = list(range(len(batch)))
    values: list[np.ndarray | None] = [None] * len(batch)
    tiers = {"auto": (torch.float32, torch.float64), "gram64": (torch.float64,), "svd": ()}[method]
    for dtype in tiers:
        if not pending:
            break
        before = len(pending)
        eig = _gram_eigenvalues([batch[i] for i in pending], dtype)
        top = eig[:, -1:]
        ratio = np.divide(eig[:, 0], top[:, 0], out=np.ones(len(eig)), where=top[:, 0] > 0)
        accept = (ratio >= _MIN_RATIO[dtype]) | (top[:, 0] == 0) | (method == "gram64")
        for row, i in enumerate(pending):
            if accept[row]:
                values[i] = np.sqrt(np.maximum(eig[row, ::-1], 0.0))
        pending = [i for row, i in enumerate(pending) if not accept[row]]
        log.debug("%s: %d of %d by %s Gram", tuple(batch[0].shape), before - len(pending), before, dtype)
    if pending:
        log.debug("%s: %d by float64 svdvals", tuple(batch[0].shape), len(pending))
    for i in pending:
        s = torch.linalg.svdvals(batch[i].to(torch.float64))
        values[i] = s.cpu().numpy()
    return values  # type: ignore[return-value]


def _gram_eigenvalues(batch: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
    """Ascending eigenvalues (float64, host) of ``A Aᵀ`` formed in ``dtype`` for each A."""
    grams = []
    for matrix in batch:
        a = matrix.to(dtype)
        grams.append(a @ a.mT)
    eig = torch.linalg.eigvalsh(torch.stack(grams).to(torch.float64))
    return eig.cpu().numpy()
