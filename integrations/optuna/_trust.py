"""Pure statistics of the measure pruners: rank correlation, its confidence bound, Holm's trust
test and the percentile rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (``scipy.stats.rankdata``'s default)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], len(values))
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def rank_correlation(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (Pearson's of the average ranks, as ``scipy.stats.spearmanr``)
    over the pairs where both values are finite.

    Returns NaN when fewer than two such pairs remain or either side is constant.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    return float(np.clip(ra @ rb / math.sqrt((ra @ ra) * (rb @ rb)), -1.0, 1.0))


def _fisher_z(rho: float, n: int) -> tuple[float, float]:
    """``atanh|rho|`` and its Bonett–Wright standard error ``sqrt((1 + rho²/2) / (n - 3))``."""
    return math.atanh(min(abs(rho), 1.0 - 1e-12)), math.sqrt((1.0 + rho * rho / 2.0) / (n - 3))


def correlation_lower_bound(rho: float, n: int, *, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound of ``|rho|``, a Spearman correlation over ``n`` pairs.

    Fisher ``z = atanh|rho|`` with the Bonett–Wright standard error; returns 0 when the bound
    is below 0, NaN for ``n < 4`` or a NaN ``rho``.
    """
    if n < 4 or math.isnan(rho):
        return math.nan
    z, se = _fisher_z(rho, n)
    return max(0.0, math.tanh(z - _NORMAL.inv_cdf(confidence) * se))


def trust_p_value(rho: float, n: int, threshold: float, *, either_sign: bool) -> float:
    """p-value of the null hypothesis ``|rho| <= threshold`` (``rho <= threshold`` when
    ``either_sign`` is false), from the Fisher-z normal approximation of
    :func:`correlation_lower_bound`. Choosing the sign from the data (``either_sign``)
    doubles it. 1 for ``n < 4``, a NaN ``rho`` or, without ``either_sign``, ``rho <= 0``.
    """
    if n < 4 or math.isnan(rho) or (not either_sign and rho <= 0):
        return 1.0
    z, se = _fisher_z(rho, n)
    p = 0.5 * math.erfc((z - math.atanh(threshold)) / se / math.sqrt(2.0))
    return min(1.0, 2.0 * p if either_sign else p)


def look_size(available: int, smallest: int) -> tuple[int, int]:
    """The sample of a look and its number ``j``: the largest ``g_j = ⌈smallest · 1.5^(j−1)⌉ ≤ available``
    (``j`` = 1, 2, …; ``(0, 0)`` when ``available < smallest``). Testing at grid sizes only, on
    a fixed sample per size, makes each size one look."""
    size, look = 0, 0
    while math.ceil(smallest * 1.5 ** look) <= available:
        size, look = math.ceil(smallest * 1.5 ** look), look + 1
    return size, look


def holm(p_values: Sequence[float], *, alpha: float) -> list[bool]:
    """Holm's step-down test: which hypotheses are rejected at family-wise error ``alpha``.

    The i-th smallest p-value (i = 0, 1, …) is rejected while it is ≤ ``alpha / (m - i)``.
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def percentile_threshold(others: Sequence[float], *, percentile: float, higher_is_better: bool) -> float:
    """The ``percentile``-th best of ``others`` (NaNs ignored): Optuna's ``PercentilePruner``
    convention, ``percentile=25`` keeps the top 25 %, 50 is the median."""
    q = 100.0 - percentile if higher_is_better else percentile
    return float(np.nanpercentile(np.asarray(others, dtype=float), q))


def is_poor(value: float, others: Sequence[float], *, percentile: float, higher_is_better: bool) -> bool:
    """Whether ``value`` falls short of the ``percentile``-th best of ``others`` (NaNs ignored)."""
    threshold = percentile_threshold(others, percentile=percentile, higher_is_better=higher_is_better)
    return value < threshold if higher_is_better else value > threshold
