"""Power-law tail of an eigenvalue spectrum: WeightWatcher's α and α̂ (SPEC §10).

Pure numpy. The fit is the one WeightWatcher 0.7.7 runs by default (its own ``WWFit``,
``pl_package="ww"``): eigenvalues ``λ > 1e-5`` sorted ascending; every value but the
largest is a candidate ``x_min``; for each, the continuous power-law MLE of the tail
``λ ≥ x_min`` and its Kolmogorov–Smirnov distance; the candidate with the smallest
distance wins. Under 20 eigenvalues it switches, as WeightWatcher does, to a
bias-corrected MLE (``n − 1`` for ``n``) over tails of at least 8 values; the choice is
still the smallest distance (WeightWatcher computes a penalised score ``D − 0.868/√n``
there, then overrides its choice by the smallest ``D``; this follows what it returns).

All candidates are evaluated at once, in blocks of rows of one ``candidates × values``
array (no Python loop over candidates).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

THRESHOLD = 1e-5
"""Eigenvalues at or below this are dropped before the fit (WeightWatcher's ``EVALS_THRESH``)."""
MIN_EIGENVALUES = 8
"""Fewer eigenvalues above ``THRESHOLD`` give NaN (WeightWatcher's ``min_evals`` skips such layers)."""
SMALL_N = 20
"""Below this many eigenvalues the small-sample fit is used (WeightWatcher's ``SMALL_N_CUTOFF``)."""
_SMALL_N_MIN_TAIL = 8
_BLOCK = 1 << 20  # array elements per block of candidates (8 MiB of float64)
_ROWS = 64  # at most this many candidates per block: blocks follow the triangle j ≥ i closely


class PowerLawFit(NamedTuple):
    """The fitted tail of one spectrum; every field NaN (``tail`` 0) where undefined.

    ``alpha``: the exponent of ``p(λ) ∝ λ^(−α)`` for ``λ ≥ xmin``; ``ks``: the
    Kolmogorov–Smirnov distance of the tail from the fit; ``tail``: how many eigenvalues
    are ``≥ xmin``; ``lambda_max``: the largest eigenvalue (defined whenever the spectrum
    is finite and non-empty).
    """

    alpha: float
    xmin: float
    ks: float
    tail: int
    lambda_max: float

    @property
    def alphahat(self) -> float:
        """``α̂ = α · log10 λ_max`` (WeightWatcher's ``alpha_weighted``)."""
        return self.alpha * math.log10(self.lambda_max) if self.lambda_max > 0 else math.nan


def fit_power_law(eigenvalues: np.ndarray) -> PowerLawFit:
    """Fit a power law to the tail of ``eigenvalues`` (any order; ``λ = s²`` of a matrix).

    Undefined (NaN ``alpha``): any non-finite or negative value, fewer than
    ``MIN_EIGENVALUES`` values above ``THRESHOLD``, or no spread in any candidate tail
    (all values equal).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if lam.size == 0 or not np.isfinite(lam).all() or (lam < 0).any():
        return PowerLawFit(math.nan, math.nan, math.nan, 0, math.nan)
    top = float(lam.max())
    x = np.sort(lam[lam > THRESHOLD])
    if x.size < MIN_EIGENVALUES:
        return PowerLawFit(math.nan, math.nan, math.nan, 0, top)
    alphas, ks = _candidates(x)
    if not np.isfinite(ks).any():
        return PowerLawFit(math.nan, math.nan, math.nan, 0, top)
    best = int(np.argmin(ks))  # first minimum, as numpy's argmin in WeightWatcher
    return PowerLawFit(float(alphas[best]), float(x[best]), float(ks[best]), int(x.size - best), top)


def _candidates(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate ``x_min = x[i]`` (``i < n − 1``): α and the KS distance (``inf`` where invalid)."""
    n_all = x.size
    small = n_all < SMALL_N
    log_x = np.log(x) - math.log(x[-1])  # ≤ 0, and exactly 0 on a tail of equal values (no spread)
    index = np.arange(n_all - 1)
    n = (n_all - index).astype(np.float64)  # tail sizes
    suffix = np.cumsum(log_x[::-1])[::-1][:-1]  # Σ_{j≥i} log x_j
    spread = suffix - n * log_x[:-1]  # Σ_{j≥i} log(x_j / x_i) ≥ 0
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1.0 + ((n - 1.0) if small else n) / spread
    valid = (spread > 1e-12) if small else (spread > 0)
    if small:
        valid &= n >= _SMALL_N_MIN_TAIL
    ks = np.full(n_all - 1, np.inf)
    rows = max(1, min(_ROWS, _BLOCK // n_all))
    for start in range(0, n_all - 1, rows):
        block = index[start:start + rows]
        ks[block] = _ks(log_x, block, alphas[block], n[block])
    ks[~valid] = np.inf
    return alphas, ks


def _ks(log_x: np.ndarray, block: np.ndarray, alphas: np.ndarray, n: np.ndarray) -> np.ndarray:
    """KS distances ``max_j |1 − (x_j/x_i)^(1−α_i) − (j−i)/n_i|`` over ``j ≥ i``, for ``i`` in ``block``.

    The empirical CDF is WeightWatcher's ``(j − i)/n`` (the step's lower edge).
    """
    first, rows = int(block[0]), block.size
    tail = log_x[first:]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gap = np.subtract(tail[None, :], log_x[block][:, None])  # log(x_j / x_i)
        gap *= (alphas - 1.0)[:, None]
        np.expm1(np.negative(gap, out=gap), out=gap)  # (x_j/x_i)^(1−α) − 1 = −F_model
        empirical = (np.arange(tail.size, dtype=np.float64)[None, :] - np.arange(rows)[:, None]) / n[:, None]
        gap += empirical  # |F_model − (j − i)/n| = |gap|
        np.abs(gap, out=gap)
    gap[:, :rows][np.tril(np.ones((rows, rows), dtype=bool), -1)] = 0.0  # j < i: not in candidate i's tail
    return gap.max(axis=1)
