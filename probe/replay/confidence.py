"""Confidence intervals of correlation coefficients (Fisher's z), for the report's plots.

``z = atanh(r)`` is about normal with standard error ``c / √(n − k)``: Pearson ``c = 1, k = 3``;
Spearman ``c = √1.06, k = 3`` and Kendall ``c = √0.437, k = 4`` (Fieller, Hartley & Pearson,
1957). The interval is ``tanh(z ± q·se)``, ``q`` the normal quantile of the level. With too few
models (``n ≤ k``), an undefined ``r``, or ``|r| = 1`` (where ``z`` is infinite and the interval
would shrink to the point, as if a perfect agreement among a few models were certain) it is NaN.
"""

from __future__ import annotations

import numpy as np

_FISHER = {"pearson": (1.0, 3), "spearman": (1.06**0.5, 3), "kendall": (0.437**0.5, 4)}


def correlation_interval(r: np.ndarray, n: np.ndarray, method: str, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of the ``level`` confidence interval of each coefficient ``r`` from ``n`` pairs."""
    from scipy import stats

    if method not in _FISHER:
        raise ValueError(f"unknown correlation method {method!r}; choose from {tuple(_FISHER)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got level={level!r}")
    scale, k = _FISHER[method]
    r = np.asarray(r, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where((n > k) & (np.abs(r) < 1.0), scale / np.sqrt(n - k), np.nan)
        z = np.arctanh(np.clip(r, -1.0, 1.0))
        half = stats.norm.ppf(0.5 + level / 2) * se
        return np.tanh(z - half), np.tanh(z + half)
