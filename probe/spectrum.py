"""Stage 2: matrices -> singular values (SPEC §2), on the matrices' own device.

Only singular values are computed, never U or V. The fast route is the eigenvalues of
the ``L × L`` Gram matrix ``A Aᵀ`` (``L ≤ M``; only its lower triangle is formed), with
eigenvalue problems of equal shape batched. Its precision is chosen per matrix from the
conditioning the Gram route itself reveals:

1. Gram in float32, eigenvalues in float64. Kept only where ``λ_min / λ_max`` shows the
   rounding of the float32 product cannot move any singular value by more than about
   1e-6 relative (well-conditioned matrices, e.g. freshly initialised layers). Not tried
   where a cheap stable-rank bound already rules it out.
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
# ~2e-6); measured errors sit ~10× below the bound (tests/test_spectrum.py, and the
# accuracy table of benchmarks/speed.py).
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
    tiers = {"auto": [torch.float32, torch.float64], "gram64": [torch.float64], "svd": []}[method]
    queues: dict[torch.dtype | None, list[int]] = {dtype: [] for dtype in (*tiers, None)}  # None: svdvals
    for i, matrix in enumerate(batch):
        first = tiers[0] if tiers else None
        if first == torch.float32 and _surely_too_ill_conditioned(matrix):
            first = torch.float64
        queues[first].append(i)

    values: list[np.ndarray | None] = [None] * len(batch)
    for tier, dtype in enumerate(tiers):
        pending = queues[dtype]
        if not pending:
            continue
        eig = _gram_eigenvalues([batch[i] for i in pending], dtype)
        top = eig[:, -1]
        ratio = np.divide(eig[:, 0], top, out=np.ones(len(eig)), where=top > 0)
        accept = (ratio >= _MIN_RATIO[dtype]) | (top == 0) | (method == "gram64")
        fallback = tiers[tier + 1] if tier + 1 < len(tiers) else None
        for row, i in enumerate(pending):
            if accept[row]:
                values[i] = np.sqrt(np.maximum(eig[row, ::-1], 0.0))
            else:
                queues[fallback].append(i)
        log.debug("%s: %d of %d by %s Gram", tuple(batch[0].shape), int(accept.sum()), len(pending), dtype)
    if queues[None]:
        log.debug("%s: %d by float64 svdvals", tuple(batch[0].shape), len(queues[None]))
    for i in queues[None]:
        values[i] = torch.linalg.svdvals(batch[i].to(torch.float64)).cpu().numpy()
    return values  # type: ignore[return-value]


def _surely_too_ill_conditioned(matrix: torch.Tensor, iterations: int = 4) -> bool:
    """True when the float32 tier would certainly be rejected, so it is not tried.

    A few power iterations give ``λ ≤ λ_max``; if even ``‖A‖²_F / λ`` (≥ the stable rank)
    is below ``L · min_ratio``, the mean eigenvalue, hence ``λ_min``, is under
    ``min_ratio · λ_max``. Costs a few matrix-vector products.
    """
    a = matrix.to(torch.float32)
    x = a.sum(dim=1)
    if not bool(x.any()):
        x = torch.ones_like(x)
    for _ in range(iterations):
        x = a @ (a.mT @ x)
        x = x / x.norm().clamp_min(torch.finfo(torch.float32).tiny)
    estimate = float((a.mT @ x).square().sum())
    frobenius2 = float(a.square().sum())
    return estimate > 0 and frobenius2 / estimate < a.shape[0] * _MIN_RATIO[torch.float32]


def _gram_eigenvalues(batch: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
    """Ascending eigenvalues (float64, host) of ``A Aᵀ`` formed in ``dtype`` for each A."""
    grams = torch.stack([_lower_gram(matrix.to(dtype)) for matrix in batch])
    return torch.linalg.eigvalsh(grams.to(torch.float64), UPLO="L").cpu().numpy()


def _lower_gram(a: torch.Tensor) -> torch.Tensor:
    """``A Aᵀ`` with only its lower triangle formed (all ``eigvalsh`` reads), by row blocks:
    about 40% fewer flops than the full product for ``L ≥ 256``."""
    rows = a.shape[0]
    blocks = min(4, rows // 64)
    if blocks <= 1:
        return a @ a.mT
    gram = a.new_zeros(rows, rows)
    step = -(-rows // blocks)
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        gram[start:stop, :stop] = a[start:stop] @ a[:stop].mT
    return gram
