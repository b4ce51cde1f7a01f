"""Stage 4: singular values -> the per-unfolding quantities of SPEC §4 (pure functions).

Defined values where the reference failed: an exactly-zero singular value adds 0 to ``ER``;
``C = inf`` when the smallest value is 0; an all-zero (or empty) spectrum gives 0 for
every quantity, which the aggregation treats as *missing* (SPEC §5).
"""

from __future__ import annotations

import math

import numpy as np

QUANTITIES = ("S", "C", "ER", "spec", "fro")
"""The five per-unfolding columns of GenProb's CSV, in its order."""


def quantities(values: np.ndarray, rank: int, *, exponent: int = 0) -> dict[str, float]:
    """Compute ``S, C, ER, spec, fro, SQ`` from descending non-negative ``values``.

    Parameters
    ----------
    values:
        Singular values ``s`` (BE) or EVBMF-shrunk values ``d`` (AE), largest first.
    rank:
        ``L``, the full number of singular values of the matrix (``S`` divides by it,
        also for AE).
    exponent:
        ``values`` are in units of ``2**exponent`` (values beyond float64): ``S``, ``C``,
        ``ER``, ``SQ`` do not depend on it; ``spec`` and ``fro`` are ``inf`` where they
        lie beyond float64.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or v[0] == 0.0:
        return dict.fromkeys((*QUANTITIES, "SQ"), 0.0)
    top_exponent = int(np.frexp(v[0])[1])  # sums below run on v / 2**e (v_1 in [0.5, 1)): no overflow
    v, exponent = np.ldexp(v, -top_exponent), exponent + top_exponent
    total = float(v.sum())
    top, bottom = float(v[0]), float(v[-1])
    stable = total / (top * rank)
    condition = top / bottom if bottom > 0.0 else math.inf
    p = v[v > 0.0] / total
    entropy = float(-(p * np.log(p)).sum())
    return {
        "S": stable,
        "C": condition,
        "ER": entropy + 0.0,  # +0.0 turns -0.0 into 0.0
        "spec": _scaled(top, exponent),
        "fro": _scaled(_norm(v), exponent),
        "SQ": stable_quality(stable, condition),
    }


def _norm(v: np.ndarray) -> float:
    """``sqrt(Σ v²)`` of values scaled so that ``v_1`` lies in [0.5, 1) (no overflow or underflow)."""
    return float(np.sqrt(np.square(v).sum()))


def _scaled(value: float, exponent: int) -> float:
    """``value · 2**exponent``, ``inf`` beyond float64."""
    with np.errstate(over="ignore"):
        return float(np.ldexp(value, exponent))


def stable_quality(stable: float, condition: float) -> float:
    """``SQ = atan2(S, 1 - 1/C)``; 0 (missing) where ``S`` or ``C`` is missing (0)."""
    if stable == 0.0 or condition == 0.0:
        return 0.0
    return math.atan2(stable, 1.0 - 1.0 / condition)
