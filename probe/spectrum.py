"""Stage 2: matrices -> singular values (SPEC §2).

Only singular values are computed, never U or V. A matrix whose entries are far from 1
is first scaled by a power of two so that its largest entry lies in [0.5, 1) (exact, and
undone exactly on the values), so no route overflows or underflows at any scale the dtype
holds. Four routes, cheapest first:

``gram32``
    eigenvalues of the ``L × L`` Gram matrix ``A Aᵀ`` (``L ≤ M``), the product in
    float32, the eigenvalues in float64. Kept where ``λ_min / λ_max`` shows the float32
    rounding cannot move any singular value by more than about 1e-6 relative
    (well-conditioned matrices, e.g. freshly initialised layers with ``L/M ≲ 1/3``).
``gram64``
    the same in float64. Kept where the same bound holds in float64 (condition ≲ 1e5).
``gram64+min``
    where only the smallest eigenvalues miss that bound (condition up to 1e10): the Gram's
    values for the rest, and the unresolved smallest singular values (all of them up to 30,
    else the 6 smallest) by inverse subspace iteration on a float64 factor of ``A`` (LU
    where square, the triangular factor of QR of ``Aᵀ`` where wide), accurate to float64's
    ``ε·‖A‖`` like ``svdvals``, so ``C`` too. Unresolved values left unrefined keep the
    Gram's value only where no quantity could move by more than 2.5e-6 through them
    (:func:`_refined`). Costs the ``gram64`` route plus 0.4–1× of it (LU or QR, ~15–30 steps).
``svd``
    float64 ``svdvals``; of the triangular factor ``R`` of ``Aᵀ = QR`` for wide matrices
    (``M ≥ 1.5 L``), which costs about as much as ``gram64`` instead of ~10× more. Where
    ``gram64+min`` does not hold (no convergence, an exactly zero pivot, condition above
    1e10, too many unresolved values), from the factor it already computed where wide; and
    without computing a factor where the Gram's values show that the iteration cannot
    converge (a dense tail of small values: :func:`probe.linalg.may_converge`) or that the
    values it would leave unrefined move a quantity too far anyway (an ill-conditioned tail:
    ``C_AE``, EVBMF's smallest kept value near its threshold, is the one that moves).

With ``method="auto"`` the first route is predicted before anything is computed: from a
*hint* (the route the same matrix took at a previous measurement, e.g. last epoch), else
from the shape (``L/M`` above ~1/3: even random matrices are too ill-conditioned for
float32) and a cheap stable-rank estimate (under ``0.45·L``: condition above ~5, e.g.
trained layers; once the four largest estimated matrices all look so, the others skip the
estimate). A route that turns out not to hold hands the matrix to the next one, so a hint
or a prediction only ever costs time, never accuracy.
``method="gram64"`` starts at ``gram64`` (and may end at ``gram64+min`` or ``svd``) and
``method="svd"`` uses ``svd`` alone; a ``gram64+min`` hint starts at ``gram64``. Every
route gives each SPEC §4 quantity within 1e-5 relative of float64 ``svdvals``
(``tests/test_spectrum.py`` checks this at each route's boundary and at scales 1e±30).
Half-precision weights are upcast per matrix, never summed in 16 bits.

The kernels (:mod:`probe.linalg`) run on numpy's LAPACK on the CPU and in torch on other
devices. On the CPU the matrices are spread over ``torch.get_num_threads()`` threads,
largest first, each computed on one BLAS thread.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from probe._lapack import mkl_threads
from probe.evbmf import evbmf
from probe.linalg import Kernels, kernels_for, may_converge, refinable, single_threaded_blas
from probe.quantities import quantities

log = logging.getLogger(__name__)

Method = Literal["auto", "gram64", "svd"]
METHODS = ("auto", "gram64", "svd")
Route = Literal["gram32", "gram64", "gram64+min", "svd"]
ROUTES: tuple[Route, ...] = ("gram32", "gram64", "gram64+min", "svd")

# Rounding a Gram product A Aᵀ at precision u moves its eigenvalues by
# about u·λ_max, so the smallest singular value's relative error is about
# u / (2·λ_min/λ_max). A Gram route is kept where that estimate is ≤ 1e-6 (quantities then
# agree to ~2e-6); measured errors sit well below it (tests/test_spectrum.py, and the
# accuracy table of benchmarks/speed.py).
_MAX_RELATIVE_ERROR = 1e-6
_EPS = {"gram32": float(np.finfo(np.float32).eps), "gram64": float(np.finfo(np.float64).eps)}
_MIN_RATIO = {route: eps / (2 * _MAX_RELATIVE_ERROR) for route, eps in _EPS.items()}
# Marchenko–Pastur: a random L × M matrix has condition (1 + √α)/(1 − √α), α = L/M; above
# α ≈ 1/3 that exceeds the float32 bound (condition ≈ 4), so gram32 is not even tried.
_MAX_GRAM32_ASPECT = 1 / 3
# The estimate (1.5 power steps) over-estimates; measured (benchmarks' shapes, L/M ≤ 1/4):
# PyTorch-initialised layers 0.57–0.86·L (condition ≤ 3.7), log-spaced spectra 0.52–0.60·L
# at condition 3, 0.45–0.50 at 4 (gram32's limit), 0.40–0.45 at 5, 0.30–0.32 at 10, trained
# layers ≈ 0.2 and below. Below this fraction gram32 is predicted to fail: start at gram64.
_MIN_STABLE_RANK = 0.45
# Up to this fraction (condition ≈ 4) gram32 is tried with a Cholesky test first, which
# rejects it before the eigensolver runs when λ_min < 0.9 × the bound (a wrong guess then
# costs the float32 product, not also a solve).
_SURE_STABLE_RANK = 0.5
_EARLY_REJECT = 0.9
# gram64+min: the Gram's eigenvalues λ_i are taken to be within √L·ε·λ_max of σ_i² (measured:
# up to 34·ε·λ_max at L = 2048), and its unresolved values that are not refined must move no
# quantity by more than this (relative, all errors aligned) between the ends of their
# intervals: a quarter of SPEC's 1e-5.
_MAX_SPREAD = 2.5e-6
# Below this σ_min/σ_1 (condition above 1e10) float64 arithmetic itself fixes σ_min only to
# ~ε·σ_1 absolute, ≥ 2e-6 relative, in any method (LU and LAPACK's svd differ by up to
# 0.35·ε·σ_1, 1.4e-4 relative at condition 1.8e12): there C can match float64 svdvals to
# 1e-5 only by being it, so such matrices go to ``svd``.
_MIN_REFINED = 1e-10
# The hold check before the iteration (two EVBMF solves) saves a wide matrix the iteration and a
# square one its LU too; below this order a square's LU and the iteration's first steps (which
# stop where σ_min < 1e-10·σ_1) cost less than the check (measured: 128–300 rows 7–35 % slower
# with it, 500–2048 rows 3–8 % faster).
_MIN_PREDICTED_ROWS = 400
# This many estimated matrices (the largest) all predicted gram64 mark a trained model: skip the rest's estimates.
_SAMPLE = 4


class Spectrum(NamedTuple):
    """Singular values (descending, float64, host) ``scaled · 2**exponent`` and the route that
    computed them. ``scaled`` is what the route computed on the matrix scaled into range: it
    always holds the values, which can lie beyond float64 (weights near the dtype's largest
    finite values), where ``values`` is ``inf``."""

    scaled: np.ndarray
    route: Route
    exponent: int = 0

    @property
    def values(self) -> np.ndarray:
        """The singular values themselves (``inf`` where beyond float64)."""
        with np.errstate(over="ignore"):
            return np.ldexp(self.scaled, self.exponent)


def singular_values(
    matrices: Sequence[torch.Tensor],
    *,
    method: Method = "auto",
    hints: Sequence[Route | None] | None = None,
) -> list[Spectrum]:
    """Singular values of each matrix (rows ≤ cols) and the route taken, in input order.

    ``hints`` (``method="auto"`` only): one route or ``None`` per matrix, typically the
    ``route`` this function returned for the same matrix last time; the matrix starts
    there instead of at the predicted route. Only the singular values are copied to the host.
    """
    if method not in METHODS:
        raise ValueError(f"unknown spectrum method {method!r}; choose one of {METHODS}")
    if hints is not None and len(hints) != len(matrices):
        raise ValueError(f"got {len(hints)} hints for {len(matrices)} matrices")
    for index, hint in enumerate(hints or ()):
        if hint is not None and hint not in ROUTES:
            raise ValueError(f"hint {index} is {hint!r}; expected one of {ROUTES} or None")
    for index, matrix in enumerate(matrices):
        if matrix.shape[-2] > matrix.shape[-1]:
            raise ValueError(f"matrix {index} has shape {tuple(matrix.shape)}; orient it first (rows <= cols)")
    hints = list(hints) if hints is not None else [None] * len(matrices)
    largest_first = _largest_first(matrices)
    on_cpu = [i for i in largest_first if matrices[i].device.type == "cpu"]
    workers = min(torch.get_num_threads(), len(on_cpu))
    # MKL (large Grams, svdvals) gets each worker's share of the threads: its default would
    # start torch.get_num_threads() threads inside every worker.
    share = max(1, torch.get_num_threads() // max(workers, 1))
    # One OpenBLAS thread from the estimates on: a multi-threaded BLAS call leaves OpenBLAS's
    # threads spinning for a while, taking a core from the workers below.
    with single_threaded_blas():
        plan = _first_routes(matrices, largest_first, method, hints)

        def one(i: int) -> Spectrum:
            with mkl_threads(share):
                return _solve(matrices[i], *plan[i])

        result = {i: one(i) for i in largest_first if matrices[i].device.type != "cpu"}
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="probe-spectrum") as pool:
                result.update(zip(on_cpu, pool.map(one, on_cpu)))
        else:
            result.update((i, one(i)) for i in on_cpu)
    spectra = [result[i] for i in range(len(matrices))]
    if log.isEnabledFor(logging.DEBUG):
        log.debug("spectra of %d matrices on %d thread(s): %s", len(spectra), max(workers, 1),
                  dict(Counter(s.route for s in spectra)))
    return spectra


def _largest_first(matrices: Sequence[torch.Tensor]) -> list[int]:
    """Indices by decreasing cost (``L² M``): the pool's order, and the sampling rule's."""
    return sorted(range(len(matrices)), key=lambda i: -matrices[i].shape[0] ** 2 * matrices[i].shape[1])


def _first_routes(matrices: Sequence[torch.Tensor], order: list[int], method: Method,
                  hints: list[Route | None]) -> dict[int, tuple[Route, bool]]:
    """Per matrix, the route to try first and whether a ``gram32`` guess is doubtful (then a
    Cholesky test may reject it before its eigensolver runs).

    Largest first: when the stable ranks of the first few estimated matrices all predict
    ``gram64`` (trained layers), the rest go there without an estimate, so a trained model
    without hints costs what ``method="gram64"`` costs.
    """
    plan: dict[int, tuple[Route, bool]] = {}
    estimates: list[bool] = []  # per estimated matrix: gram32 unlikely
    for i in order:
        rows, cols = matrices[i].shape
        hint = hints[i]
        if method != "auto":
            plan[i] = ("svd" if method == "svd" else "gram64", False)
        elif hint is not None:
            plan[i] = (hint, False)
        elif rows == 1:
            plan[i] = ("gram32", False)
        elif rows > _MAX_GRAM32_ASPECT * cols or (len(estimates) >= _SAMPLE and all(estimates)):
            plan[i] = ("gram64", False)
        else:
            kernels = kernels_for(matrices[i].device)
            stable_rank = kernels.stable_rank(kernels.prepare(matrices[i])[0]) / rows
            estimates.append(stable_rank < _MIN_STABLE_RANK)
            plan[i] = ("gram64", False) if estimates[-1] else ("gram32", stable_rank < _SURE_STABLE_RANK)
    return plan


def _solve(matrix: torch.Tensor, route: Route, doubtful: bool) -> Spectrum:
    """One matrix from ``route`` on, handed on until one holds (upcast and scaled here: one
    matrix's copy per thread at a time)."""
    kernels = kernels_for(matrix.device)
    a, e = kernels.prepare(matrix)
    if route == "gram64+min":  # where it starts: the refinement needs the Gram's eigenvalues
        route = "gram64"
    while route != "svd":
        floor = _EARLY_REJECT * _MIN_RATIO[route] if doubtful and route == "gram32" else 0.0
        eig = kernels.gram_eigenvalues(a, double=route == "gram64", floor=floor)
        if eig is not None and (eig[-1] == 0 or eig[0] >= _MIN_RATIO[route] * eig[-1]):
            return Spectrum(np.sqrt(np.maximum(eig[::-1], 0.0)), route, e)
        if eig is not None and route == "gram64":
            values, refined = _refined(kernels, a, eig, matrix.shape[1])
            return Spectrum(values, "gram64+min" if refined else "svd", e)
        route = "gram64" if route == "gram32" else "svd"
    return Spectrum(kernels.svd_values(a), "svd", e)


def _refined(kernels: Kernels[Any], a: Any, eig: np.ndarray, cols: int) -> tuple[np.ndarray, bool]:
    """Singular values (descending) from the float64 Gram's ascending eigenvalues ``eig``
    where they hold, the smallest refined (:meth:`Kernels.smallest_or_all`), and ``True``; or
    float64 ``svdvals`` (of the same factor where wide) and ``False`` where that cannot hold,
    also where the condition exceeds 1e10 (``_MIN_REFINED``), and without a factor where the
    Gram's values rule out the iteration's convergence (:func:`probe.linalg.may_converge`) or
    where the values it would leave unrefined fail :func:`_unrefined_hold` already with the
    refined ones at the Gram's values (a prediction: it can only cost time, never accuracy).

    The ``count`` unresolved eigenvalues (``λ < bound``) are replaced, smallest first, by the
    refined values; any left between (more than the block refines) keep the Gram's value,
    raised to the largest refined one, if moving them all to either end of their intervals
    ``√max(λ ∓ √L·ε·λ_max, 0)`` moves no SPEC §4 quantity, BE or AE (:func:`_spread`), by more
    than ``_MAX_SPREAD`` (``Σσ`` and ``ER`` increase with each such value, ``σ ≤ 1e-5·σ_1``
    for ``L`` below ~1e5, so their truth lies between; AE's values are checked at both ends).
    """
    count = int(np.searchsorted(eig, _MIN_RATIO["gram64"] * eig[-1]))
    if not may_converge(eig, count, _gram_spread(eig)):
        return kernels.svd_values(a), False
    values = np.sqrt(np.maximum(eig, 0.0))
    rows = len(eig)
    if (cols > rows or rows >= _MIN_PREDICTED_ROWS) and not _unrefined_hold(values, eig, refinable(rows, count), count, cols):
        # the values the iteration would leave unrefined move a quantity too far even with the
        # refined ones as the Gram gives them (an ill-conditioned tail): no factor for it
        return kernels.svd_values(a), False

    def accept(small: np.ndarray) -> bool:
        values[: len(small)] = small
        return _unrefined_hold(values, eig, len(small), count, cols)

    small, refined = kernels.smallest_or_all(a, count, floor=_MIN_REFINED * values[-1], accept=accept)
    if not refined:
        return small, False
    values[len(small):count] = values[len(small):count].clip(small[-1])
    return np.sort(values)[::-1], True


def _unrefined_hold(values: np.ndarray, eig: np.ndarray, refined: int, count: int, cols: int) -> bool:
    """Whether the unresolved values ``refined:count`` of ``values`` (ascending; the first
    ``refined`` refined), each anywhere in ``√max(λ ∓ √L·ε·λ_max, 0)`` raised to the largest
    refined value, leave every quantity within ``_MAX_SPREAD``."""
    if refined >= count:
        return True
    delta = _gram_spread(eig)
    ends = (np.sqrt(np.maximum(eig[refined:count] + d, 0.0)).clip(values[refined - 1]) for d in (-delta, delta))
    low, high = (np.sort(np.concatenate([values[:refined], end, values[count:]]))[::-1] for end in ends)
    return _spread(low, high, cols) <= _MAX_SPREAD


def _gram_spread(eig: np.ndarray) -> float:
    """How far the float64 Gram's eigenvalues ``eig`` (ascending) are taken to lie from the
    ``σ_i²``: ``√L·ε·λ_max``."""
    return float(np.sqrt(len(eig)) * _EPS["gram64"] * eig[-1])


def _spread(low: np.ndarray, high: np.ndarray, cols: int) -> float:
    """The largest relative difference of any SPEC §4 quantity, BE or AE, between two spectra
    (descending) of an ``L × cols`` matrix (``inf`` where only one is NaN or zero)."""
    rows = len(low)
    a, b = ({**quantities(v, rows), **{f"{k}_AE": x for k, x in quantities(evbmf(v, rows, cols).d, rows).items()}}
            for v in (low, high))

    def relative(x: float, y: float) -> float:
        if x == y or (np.isnan(x) and np.isnan(y)):
            return 0.0
        return abs(x - y) / abs(x) if x and np.isfinite(x) else np.inf

    return max(relative(a[k], b[k]) for k in a)
