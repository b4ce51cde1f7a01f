"""Stage 3b: singular values -> EVBMF-denoised singular values (SPEC §3).

Analytic empirical variational Bayes matrix factorisation (Nakajima et al., 2013) on the
singular values alone: estimate the noise variance σ², keep the components above the
threshold and shrink them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

DEFAULT_XATOL = 1e-5
"""SciPy's default absolute tolerance on σ² for the bounded Brent search (the reference's)."""

_TAU_FACTOR = 2.5129


@dataclass(frozen=True)
class EVBMFResult:
    """Denoised values ``d`` (descending, ``len(d)`` = kept rank) and the noise variance."""

    d: np.ndarray
    sigma2: float


def evbmf(s: np.ndarray, rows: int, cols: int, *, xatol: float = DEFAULT_XATOL) -> EVBMFResult:
    """Denoise the singular values ``s`` (descending) of an oriented ``rows × cols`` matrix.

    ``rows ≤ cols`` is required (``L = rows``, ``M = cols``). Exactly-zero singular values
    add an infinite constant to the objective for every σ², so they are left out of the
    search (the limit); an all-zero spectrum keeps no component.
    """
    L, M = rows, cols
    if L > M:
        raise ValueError(f"evbmf needs rows <= cols, got {rows} x {cols}")
    s = np.asarray(s, dtype=np.float64)
    s2 = s * s
    total = float(s2.sum())
    if total == 0.0:
        return EVBMFResult(np.zeros(0), 0.0)
    alpha = L / M
    tau_bar = _TAU_FACTOR * math.sqrt(alpha)
    x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar)

    k = min(math.ceil(L / (1.0 + alpha)) - 1, L) - 1
    lower = max(s2[k + 1] / (M * x_bar), float(s2[k + 1 :].mean()) / M)
    upper = total / (L * M)

    positive = s2[s2 > 0.0]
    result = minimize_scalar(
        _objective,
        args=(positive, M, alpha, x_bar),
        bounds=(lower, upper),
        method="bounded",
        options={"xatol": xatol},
    )
    sigma2 = float(result.x)

    threshold = math.sqrt(M * sigma2 * (1.0 + tau_bar) * (1.0 + alpha / tau_bar))
    kept = s[s > threshold]
    ratio = 1.0 - (L + M) * sigma2 / kept**2
    d = kept / 2.0 * (ratio + np.sqrt(ratio**2 - 4.0 * L * M * sigma2**2 / kept**4))
    return EVBMFResult(d, sigma2)


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
