"""Stage 3b: singular values -> EVBMF-denoised singular values (SPEC §3).

Analytic empirical variational Bayes matrix factorisation (Nakajima et al., 2013) on the
singular values alone: estimate the noise variance σ², keep the components above the
threshold and shrink them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar

REFERENCE_XATOL = 1e-5
"""SciPy's default absolute tolerance on σ² for the bounded Brent search: the reference's
(pass it as ``xatol`` to reproduce GenProb's numbers exactly)."""

_TAU_FACTOR = 2.5129


@dataclass(frozen=True)
class EVBMFResult:
    """Denoised values ``d`` (descending, ``len(d)`` = kept rank) and the noise variance."""

    d: np.ndarray
    sigma2: float


def evbmf(s: np.ndarray, rows: int, cols: int, *, xatol: float | None = None, exponent: int = 0) -> EVBMFResult:
    """Denoise the singular values ``s`` (descending) of an oriented ``rows × cols`` matrix.

    ``rows ≤ cols`` is required (``L = rows``, ``M = cols``). ``xatol``: ``None`` (default)
    is scale-invariant: a coarse bounded Brent search (tolerance ``1e-4`` of the lower
    bound), then the exact minimum next to its result: the root of ``dΦ/dσ²`` or a jump of
    Φ (Φ is so flat, or jumps, at its minimum that a search on Φ alone leaves σ² uncertain
    by ~1e-5). A float is
    an absolute tolerance on σ², as in the reference (:data:`REFERENCE_XATOL` reproduces
    it). Exactly-zero singular values add an infinite constant to the objective for every
    σ², so they are left out of the search (the limit); an all-zero spectrum keeps no
    component.

    The search runs on ``s / 2**e`` (``s_1`` scaled into [0.5, 1), an exact rescaling
    undone on ``d`` and σ²), so no scale the float64 values hold overflows or underflows,
    and an explicit ``xatol`` gives bit-for-bit the unscaled search's result. ``exponent``:
    ``s`` is given in units of ``2**exponent`` (values beyond float64, see
    ``probe.spectrum.Spectrum``); ``d`` is returned in the same units, σ² in true units.
    """
    L, M = rows, cols
    if L > M:
        raise ValueError(f"evbmf needs rows <= cols, got {rows} x {cols}")
    if xatol is not None and not xatol > 0:
        raise ValueError(f"xatol must be positive or None, got {xatol!r}")
    s = np.asarray(s, dtype=np.float64)
    if s.size == 0 or s[0] == 0.0:
        return EVBMFResult(np.zeros(0), 0.0)
    e = int(np.frexp(s[0])[1])
    s = np.ldexp(s, -e)
    whole = e + exponent  # s · 2**whole are the true values
    s2 = s * s
    total = float(s2.sum())
    alpha = L / M
    tau_bar = _TAU_FACTOR * math.sqrt(alpha)
    x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar)

    k = min(math.ceil(L / (1.0 + alpha)) - 1, L) - 1
    lower = max(s2[k + 1] / (M * x_bar), float(s2[k + 1 :].mean()) / M)
    upper = total / (L * M)

    positive = s2[s2 > 0.0]
    if xatol is None:  # coarse (≤ 1e-4 relative: lower ≤ σ²), then polished
        tolerance = 1e-4 * lower
    else:  # the absolute tolerance in the scaled units (capped: a huge one means "stop at once")
        tolerance = math.ldexp(xatol, -2 * whole) if math.frexp(xatol)[1] - 2 * whole < 1000 else upper
    result = minimize_scalar(
        _objective,
        args=(positive, M, alpha, x_bar),
        bounds=(lower, upper),
        method="bounded",
        options={"xatol": tolerance},
    )
    sigma2 = float(result.x)
    if xatol is None:
        sigma2 = _polish(sigma2, lower, upper, (positive, M, alpha, x_bar))

    threshold = math.sqrt(M * sigma2 * (1.0 + tau_bar) * (1.0 + alpha / tau_bar))
    kept = s[s > threshold]
    ratio = 1.0 - (L + M) * sigma2 / kept**2
    d = kept / 2.0 * (ratio + np.sqrt(ratio**2 - 4.0 * L * M * sigma2**2 / kept**4))
    with np.errstate(over="ignore"):  # σ² ~ s²/M may exceed float64 where s does not: inf
        return EVBMFResult(np.ldexp(d, e), float(np.ldexp(sigma2, 2 * whole)))


def _objective(sigma2: float, s2: np.ndarray, M: int, alpha: float, x_bar: float) -> float:
    """Φ(σ²) of SPEC §3 (the negative free energy up to constants)."""
    x = s2 / (M * sigma2)
    small = x[x <= x_bar]
    big = x[x > x_bar]
    shifted = big - (1.0 + alpha)
    tau = 0.5 * (shifted + np.sqrt(shifted * shifted - 4.0 * alpha))
    return float(
        (small - np.log(small)).sum()
        + (big - tau + np.log((tau + 1.0) / big) + alpha * np.log(tau / alpha + 1.0)).sum()
    )


def _slope(sigma2: float, s2: np.ndarray, M: int, alpha: float, x_bar: float) -> float:
    """``dΦ/dσ²`` (``dx_i/dσ² = −x_i/σ²``; ``τ' = τ / sqrt((x − (1+α))² − 4α)``)."""
    x = s2 / (M * sigma2)
    small = x[x <= x_bar]
    big = x[x > x_bar]
    shifted = big - (1.0 + alpha)
    root = np.sqrt(shifted * shifted - 4.0 * alpha)
    tau = 0.5 * (shifted + root)
    dtau = tau / root
    dphi_dx = 1.0 - 1.0 / big + dtau * (1.0 / (tau + 1.0) + alpha / (tau + alpha) - 1.0)
    return -float((small - 1.0).sum() + (big * dphi_dx).sum()) / sigma2


def _polish(sigma2: float, lower: float, upper: float, args: tuple) -> float:
    """The minimum of Φ within 0.1% of Brent's ``sigma2``, exactly: the root of ``dΦ/dσ²``
    where the slope changes sign next to it, or a point where Φ jumps (some ``x_i``
    crossing ``x̄`` switches branch, and Φ is not continuous there), whichever is lower."""
    s2, M, _, x_bar = args
    a, b = max(lower, sigma2 * (1 - 1e-3)), min(upper, sigma2 * (1 + 1e-3))
    candidates = [sigma2]
    for width in (1e-3, 1e-4, 1e-5, 1e-6):  # the slope itself jumps, so narrow until it brackets
        lo, hi = max(lower, sigma2 * (1 - width)), min(upper, sigma2 * (1 + width))
        if lo < hi and _slope(lo, *args) < 0 < _slope(hi, *args):
            candidates = [float(brentq(_slope, lo, hi, args=args, xtol=1e-300, rtol=4 * np.finfo(float).eps))]
            break
    jumps = s2[(s2 >= a * M * x_bar) & (s2 <= b * M * x_bar)] / (M * x_bar)
    eps = 4 * np.finfo(float).eps
    candidates += [float(j) * side for j in jumps for side in (1 - eps, 1 + eps)]  # either side of a jump
    return min(candidates, key=lambda c: _objective(c, *args))
