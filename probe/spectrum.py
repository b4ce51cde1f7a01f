"""Stage 2: matrices -> singular values (SPEC §2), on the matrices' own device.

Only singular values are computed, never U or V. A matrix whose entries are far from 1
is first scaled by a power of two so that its largest entry lies in [0.5, 1) (exact, and
undone exactly on the values), so no route overflows or underflows at any scale the dtype
holds. Three routes, cheapest first:

``gram32``
    eigenvalues of the ``L × L`` Gram matrix ``A Aᵀ`` (``L ≤ M``; only its lower triangle
    is formed), the product in float32, the eigenvalues in float64. Kept where
    ``λ_min / λ_max`` shows the float32 rounding cannot move any singular value by more
    than about 1e-6 relative (well-conditioned matrices, e.g. freshly initialised layers
    with ``L/M ≲ 1/3``).
``gram64``
    the same in float64. Kept where the same bound holds in float64 (condition ≲ 1e5).
``svd``
    float64 ``svdvals``; of the triangular factor ``R`` of ``Aᵀ = QR`` for wide matrices
    (``M ≥ 1.5 L``), which costs about as much as ``gram64`` instead of ~10× more.

With ``method="auto"`` the first route is predicted before anything is computed: from a
*hint* (the route the same matrix took at a previous measurement, e.g. last epoch), else
from the shape (``L/M`` above ~1/3: even random matrices are too ill-conditioned for
float32) and a cheap stable-rank estimate (trained layers: under ``L/4``). A route that
turns out not to hold hands the matrix to the next one, so a hint or a prediction only
ever costs time, never accuracy.
``method="gram64"`` starts at ``gram64`` and ``method="svd"`` uses ``svd`` alone. Every
route gives each SPEC §4 quantity within 1e-5 relative of float64 ``svdvals``
(``tests/test_spectrum.py`` checks this at each route's boundary and at scales 1e±30).
Matrices of equal shape are batched per route. Half-precision weights are upcast per
matrix, never summed in 16 bits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

log = logging.getLogger(__name__)

Method = Literal["auto", "gram64", "svd"]
METHODS = ("auto", "gram64", "svd")
Route = Literal["gram32", "gram64", "svd"]
ROUTES: tuple[Route, ...] = ("gram32", "gram64", "svd")

# Rounding a Gram product A Aᵀ at precision u moves its eigenvalues by
# about u·λ_max, so the smallest singular value's relative error is about
# u / (2·λ_min/λ_max). A Gram route is kept where that estimate is ≤ 1e-6 (quantities then
# agree to ~2e-6); measured errors sit well below it (tests/test_spectrum.py, and the
# accuracy table of benchmarks/speed.py).
_MAX_RELATIVE_ERROR = 1e-6
_DTYPE = {"gram32": torch.float32, "gram64": torch.float64}
_MIN_RATIO = {route: torch.finfo(dtype).eps / (2 * _MAX_RELATIVE_ERROR) for route, dtype in _DTYPE.items()}
# Marchenko–Pastur: a random L × M matrix has condition (1 + √α)/(1 − √α), α = L/M; above
# α ≈ 1/3 that exceeds the float32 bound (condition ≈ 4), so gram32 is not even tried.
_MAX_GRAM32_ASPECT = 1 / 3
# |entries| within 2**±safe: no A Aᵀ entry overflows (≤ M·2**(2·safe)), and underflowed
# products stay far below the rounding of λ_max ≥ max|a|² (float32 also for gram32 of float64).
_SAFE_EXPONENT = {torch.float32: 32, torch.float64: 32}
# Below this fraction of L, a stable rank predicts gram32's rejection (see _gram32_unlikely).
_MIN_STABLE_RANK = 0.25
# Wide matrices go through QR first on the svd route (LAPACK's svdvals does not, here).
_QR_ASPECT = 1.5


class Spectrum(NamedTuple):
    """Singular values (descending, float64, host) and the route that computed them."""

    values: np.ndarray
    route: Route


def singular_values(
    matrices: Sequence[torch.Tensor],
    *,
    method: Method = "auto",
    hints: Sequence[Route | None] | None = None,
) -> list[Spectrum]:
    """Singular values of each matrix (rows ≤ cols) and the route taken, in input order.

    ``hints`` (``method="auto"`` only): one route or ``None`` per matrix, typically the
    ``route`` this function returned for the same matrix last time; the matrix starts
    there instead of at the predicted route. Matrices of equal shape and device are
    processed together; only the singular values are copied to the host.
    """
    if method not in METHODS:
        raise ValueError(f"unknown spectrum method {method!r}; choose one of {METHODS}")
    if hints is not None and len(hints) != len(matrices):
        raise ValueError(f"got {len(hints)} hints for {len(matrices)} matrices")
    for index, hint in enumerate(hints or ()):
        if hint is not None and hint not in ROUTES:
            raise ValueError(f"hint {index} is {hint!r}; expected one of {ROUTES} or None")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, matrix in enumerate(matrices):
        if matrix.shape[-2] > matrix.shape[-1]:
            raise ValueError(f"matrix {index} has shape {tuple(matrix.shape)}; orient it first (rows <= cols)")
        groups[(tuple(matrix.shape), matrix.device)].append(index)

    result: list[Spectrum | None] = [None] * len(matrices)
    for indices in groups.values():
        batch = [matrices[i] for i in indices]
        group_hints: list[Route | None] = [hints[i] for i in indices] if hints is not None else [None] * len(indices)
        for i, spectrum in zip(indices, _group_spectra(batch, method, group_hints)):
            result[i] = spectrum
    return result  # type: ignore[return-value]


def _group_spectra(batch: list[torch.Tensor], method: Method, hints: list[Route | None]) -> list[Spectrum]:
    """Spectra of matrices of one shape on one device."""
    rows, cols = batch[0].shape
    exponents, scaled = _normalise(batch)
    queues: dict[Route, list[int]] = {route: [] for route in ROUTES}
    for i, hint in enumerate(hints):
        if method != "auto":
            first: Route = "svd" if method == "svd" else "gram64"
        elif hint is not None:
            first = hint
        elif rows > 1 and (rows > _MAX_GRAM32_ASPECT * cols or _gram32_unlikely(scaled[i])):
            first = "gram64"
        else:
            first = "gram32"
        queues[first].append(i)

    values: list[np.ndarray | None] = [None] * len(batch)
    taken: list[Route | None] = [None] * len(batch)
    for route in ("gram32", "gram64"):
        pending = queues[route]
        if not pending:
            continue
        eig = _gram_eigenvalues([scaled[i] for i in pending], _DTYPE[route])
        top = eig[:, -1]
        ratio = np.divide(eig[:, 0], top, out=np.ones(len(eig)), where=top > 0)
        accept = (ratio >= _MIN_RATIO[route]) | (top == 0)
        for row, i in enumerate(pending):
            if accept[row]:
                values[i], taken[i] = np.sqrt(np.maximum(eig[row, ::-1], 0.0)), route
            else:
                queues["gram64" if route == "gram32" else "svd"].append(i)
        log.debug("%s: %d of %d by %s", (rows, cols), int(accept.sum()), len(pending), route)
    for i in queues["svd"]:
        values[i], taken[i] = _svd_values(scaled[i]), "svd"
    if queues["svd"]:
        log.debug("%s: %d by svd", (rows, cols), len(queues["svd"]))
    return [Spectrum(np.ldexp(v, e), route) for v, e, route in zip(values, exponents, taken)]  # type: ignore[arg-type]


def _normalise(batch: list[torch.Tensor]) -> tuple[list[int], list[torch.Tensor]]:
    """Scale each matrix by ``2**-e`` so its largest |entry| is in [0.5, 1) (exact), where
    its Gram matrix could otherwise overflow or lose ``λ_max``'s precision to underflow.

    Returns the exponents ``e`` (0 where no scaling is needed) and the matrices, in float32
    (float64 for float64 input; half precision is upcast).
    """
    work = [m if m.dtype in (torch.float32, torch.float64) else m.to(torch.float32) for m in batch]
    peaks = torch.stack([m.abs().amax().to(torch.float64) for m in work]).cpu().numpy()
    safe = _SAFE_EXPONENT[work[0].dtype]
    exponents = [int(e) if p > 0 and abs(e) > safe else 0 for p, e in zip(peaks, np.frexp(peaks)[1])]
    return exponents, [_ldexp(m, -e) for m, e in zip(work, exponents)]


def _ldexp(matrix: torch.Tensor, e: int) -> torch.Tensor:
    """``matrix · 2**e`` in two exact steps, so neither factor overflows the dtype."""
    if e == 0:
        return matrix
    half = e // 2
    return matrix * 2.0**half * 2.0 ** (e - half)


def _gram32_unlikely(matrix: torch.Tensor, iterations: int = 1) -> bool:
    """True when a cheap stable-rank estimate says gram32 would almost surely be rejected.

    A few power iterations give ``λ ≤ λ_max``, so ``‖A‖²_F / λ`` over-estimates the stable
    rank. Below ``L/4`` the matrix is far from random-like: a Marchenko–Pastur matrix with
    condition ≤ 4 has stable rank ≥ 0.4·L, while trained layers sit near ``L/10`` or below.
    A wrong guess costs time only (gram64 is as exact). Costs a few matrix-vector products.
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
    return estimate > 0 and frobenius2 / estimate < a.shape[0] * _MIN_STABLE_RANK


def _gram_eigenvalues(batch: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
    """Ascending eigenvalues (float64, host) of ``A Aᵀ`` formed in ``dtype``, solved in
    float64 (a float32 solver is 50–100× less accurate on ``λ_min``: up to 5e-6 on C)."""
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


def _svd_values(a: torch.Tensor) -> np.ndarray:
    """Float64 ``svdvals`` of ``A``, or of ``R`` from ``Aᵀ = QR`` when ``A`` is wide."""
    a = a.to(torch.float64)
    if a.shape[1] >= _QR_ASPECT * a.shape[0]:
        a = torch.linalg.qr(a.mT, mode="r").R
    return torch.linalg.svdvals(a).cpu().numpy()
