"""Stage 3b: singular values -> EVBMF-denoised singular values (SPEC §3).

Analytic empirical variational Bayes matrix factorisation (Nakajima et al., 2013) on the
singular values alone: estimate the noise variance σ², keep the components above the
threshold and shrink them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq, minimize_scalar

REFERENCE_XATOL = 1e-5
"""SciPy's default absolute tolerance on σ² for the bounded Brent search: the reference's
(pass it as ``xatol`` to reproduce GenProb's numbers exactly)."""

_TAU_FACTOR = 2.5129
# Φ is evaluated at least every this ratio of σ² between its bounds (beside its breakpoints),
# on at most this many grid points (bounds more than ~1e87 apart: a coarser grid).
_STEP = 1.05
_MAX_GRID = 4096
# A stretch is left without the grid where its lower bound exceeds the lowest value found by
# more than this times (|that value| + the number of terms): far above rounding.
_MARGIN = 1e-9
# Bounding the stretches first pays where the grid would have more than this many ψ terms to
# evaluate (~0.1 µs each; the bounds cost about 100 µs).
_GRID_FIRST = 5000


@dataclass(frozen=True)
class EVBMFResult:
    """Denoised values ``d`` (descending, ``len(d)`` = kept rank) and the noise variance."""

    d: np.ndarray
    sigma2: float


def evbmf(s: np.ndarray, rows: int, cols: int, *, xatol: float | None = None, exponent: int = 0) -> EVBMFResult:
    """Denoise the singular values ``s`` (descending) of an oriented ``rows × cols`` matrix.

    ``rows ≤ cols`` is required (``L = rows``, ``M = cols``). ``xatol``: ``None`` (default)
    gives σ² as SPEC §3 defines it, the minimiser of Φ over the bounds: the global one
    (:func:`_global_minimum`), with Φ computed without cancellation. Φ has many local minima
    where it has kinks (trained layers, ill-conditioned spectra), and a local search lands in
    one of them by the path it takes, so a change in the last digits of ``s`` could move σ²,
    and the AE values, by percents. A float is an absolute tolerance on σ² for the
    reference's bounded Brent search, a local one (:data:`REFERENCE_XATOL` reproduces the
    reference bit for bit). Exactly-zero singular values add an infinite constant to the
    objective for every σ², so they are left out (the limit); an all-zero spectrum keeps no
    component.

    σ² is found for ``s / 2**e`` (``s_1`` scaled into [0.5, 1), an exact rescaling
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
    if xatol is None:
        sigma2 = _global_minimum(positive, M, alpha, x_bar, lower, upper) if lower < upper else lower
    else:  # the absolute tolerance in the scaled units (capped: a huge one means "stop at once")
        tolerance = math.ldexp(xatol, -2 * whole) if math.frexp(xatol)[1] - 2 * whole < 1000 else upper
        result = minimize_scalar(_objective, args=(positive, M, alpha, x_bar), bounds=(lower, upper),
                                 method="bounded", options={"xatol": tolerance})
        sigma2 = float(result.x)

    threshold = math.sqrt(M * sigma2 * (1.0 + tau_bar) * (1.0 + alpha / tau_bar))
    kept = s[s > threshold]
    q = sigma2 / kept**2  # σ⁴/s⁴ as q², which neither underflows nor overflows where q is in range
    ratio = 1.0 - (L + M) * q
    d = kept / 2.0 * (ratio + np.sqrt(ratio**2 - 4.0 * L * M * q * q))
    with np.errstate(over="ignore"):  # σ² ~ s²/M may exceed float64 where s does not: inf
        return EVBMFResult(np.ldexp(d, e), float(np.ldexp(sigma2, 2 * whole)))


def _objective(sigma2: float, s2: np.ndarray, M: int, alpha: float, x_bar: float) -> float:
    """Φ(σ²) of SPEC §3 (the negative free energy up to constants) as the reference computes it,
    for its search (``xatol``); ``x − τ`` loses every digit once ``x ≳ 1e16``, so the default
    search uses :class:`_Phi`."""
    x = s2 / (M * sigma2)
    small = x[x <= x_bar]
    big = x[x > x_bar]
    shifted = big - (1.0 + alpha)
    tau = 0.5 * (shifted + np.sqrt(shifted * shifted - 4.0 * alpha))
    return float(
        (small - np.log(small)).sum()
        + (big - tau + np.log((tau + 1.0) / big) + alpha * np.log(tau / alpha + 1.0)).sum()
    )


def _global_minimum(c: np.ndarray, M: int, alpha: float, x_bar: float, lower: float, upper: float) -> float:
    """The minimiser of Φ over ``[lower, upper]`` (``c``: the positive ``s_i²``, descending).

    With ``x_i = c_i / (M t)``, a term is ``x − ln x`` while ``x ≤ x̄`` and ``ψ(τ(x))``
    beyond (:func:`_big_terms`). Between the breakpoints ``t_i = c_i / (M x̄)`` the terms keep
    their branch and Φ is smooth; each breakpoint adds a kink and a small jump. Φ and its
    slope are computed at the bounds and at every breakpoint between them (both sides): the
    ends of the smooth stretches. On a stretch the ``x − ln x`` terms are convex in ``ln t``
    and the ``ψ`` terms concave, which bounds Φ there from below (:meth:`_Phi.stretch_bounds`);
    a stretch whose bound could beat the ends' lowest value also gets a grid of ``_STEP``
    ratios (it can hold more than one minimum). Each stretch's minimum is the root of the
    slope where it turns from − to + between two points, and the lowest of all these points
    is returned (the stretches left out cannot hold it: the same point as with the grid
    laid everywhere).
    """
    phi_at = _Phi(c, M, alpha, x_bar)
    breaks = phi_at.breaks
    eps = 4 * np.finfo(float).eps
    # below the smallest breakpoint every term is on the second branch, where Φ falls as σ²
    # rises (t·dΦ/dt = −α·Σ(1 + 1/τ_i) < 0): its minimum there is at that breakpoint. (σ² is
    # relative to s_1² ≈ 1 here: none below float64's smallest normal number is sought.)
    lower = max(lower, float(breaks[-1]) * (1 - eps), float(np.finfo(float).tiny))
    if lower >= upper:
        return upper
    ends_t = _each_once(np.sort(np.concatenate([breaks[(breaks > lower) & (breaks < upper)], [lower, upper]])))
    steps = min(_MAX_GRID, math.ceil(math.log(upper / lower) / math.log(_STEP)))
    grid = lower * np.exp(np.arange(1, steps + 1) * (math.log(upper / lower) / (steps + 1)))  # geometric
    grid = grid[grid < upper]
    turning_allowed: np.ndarray | bool = True
    if np.searchsorted(-breaks, -grid).sum() > _GRID_FIRST:  # a wide spectrum: bound the stretches first
        ends = phi_at.points(ends_t)
        best = min(float(ends.phi.min()), float(ends.joined_phi.min()))
        open_stretch = phi_at.stretch_bounds(ends) <= best + _MARGIN * (abs(best) + len(c))
        stretch = np.searchsorted(ends_t, grid, side="right") - 1  # each grid point's
        p = phi_at.merged(ends, phi_at.points(grid[open_stretch[stretch] & (ends_t[stretch] != grid)]))
        turning_allowed = open_stretch[np.searchsorted(ends_t, p.t[:-1], side="right") - 1]
    else:
        p = phi_at.points(_each_once(np.sort(np.concatenate([ends_t, grid]))))
    at = np.where(p.joining > 0, p.t * (1 + eps), p.t).clip(None, upper)
    below = np.nonzero(p.joining[1:])[0] + 1
    phis = [p.phi, p.joined_phi[below]]
    ats = [at, np.maximum(lower, p.t[below] * (1 - eps))]
    for k in np.nonzero((p.slope[:-1] < 0) & (p.joined_slope[1:] > 0) & turning_allowed)[0]:
        big = int(p.bigs[k])
        t = float(brentq(lambda t, big=big: phi_at.at(t, big)[1], p.t[k], p.t[k + 1], xtol=1e-300, rtol=eps))
        phis.append(np.array([phi_at.at(t, big)[0]]))
        ats.append(np.array([t]))
    return _lowest(np.concatenate(phis), np.concatenate(ats))


def _each_once(sorted_values: np.ndarray) -> np.ndarray:
    """The sorted values without repeats."""
    return sorted_values[np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])]


class _Points(NamedTuple):
    """Φ and ``t·dΦ/dt`` at the points ``t`` (ascending): with the ``joining`` terms at ``x = x̄``
    there on the ``x − ln x`` branch (``phi``, ``slope``: just above ``t``) and on the other
    (``joined_*``: just below); ``bigs`` terms have ``x > x̄``."""

    t: np.ndarray
    bigs: np.ndarray
    joining: np.ndarray
    phi: np.ndarray
    slope: np.ndarray
    joined_phi: np.ndarray
    joined_slope: np.ndarray


def _lowest(phi: np.ndarray, t: np.ndarray) -> float:
    """The ``t`` of the lowest ``phi`` (the smallest such ``t`` on a tie)."""
    tied = phi == phi.min()
    return float(t[tied].min())


class _Phi:
    """Φ and ``t·dΦ/dt`` for the positive ``s_i²`` ``c`` (descending), at points ``t_k``
    with the first ``bigs[k]`` terms on the ``x > x̄`` branch and the rest on ``x − ln x``
    (those by suffix sums, the first in flat vectorised chunks of about ``chunk`` terms)."""

    def __init__(self, c: np.ndarray, M: int, alpha: float, x_bar: float, chunk: int = 1 << 20) -> None:
        self.c, self.M, self.alpha, self.chunk = c, M, alpha, chunk
        self.breaks = c / (M * x_bar)
        self.suffix_c = np.concatenate([np.cumsum(c[::-1])[::-1], [0.0]])
        self.suffix_log = np.concatenate([np.cumsum(np.log(c[::-1]) - math.log(M))[::-1], [0.0]])
        # a term at x = x̄ (τ = τ̄) moved from the x − ln x branch to the other: Φ's and the slope's jump
        tau_bar = float(_tau(np.float64(x_bar), alpha))
        psi_bar = float(_big_terms(np.float64(x_bar), alpha)[0])
        self.jump_phi = psi_bar - x_bar + math.log(x_bar)
        self.jump_slope = x_bar - 1.0 - alpha * (1.0 + 1.0 / tau_bar)

    def points(self, t: np.ndarray) -> _Points:
        """Φ and its slope at the ascending points ``t``, on both sides of any breakpoint among them."""
        bigs = np.searchsorted(-self.breaks, -t, side="left")  # per point, the terms with x > x̄
        joining = np.searchsorted(-self.breaks, -t, side="right") - bigs  # the terms with x = x̄ there
        phi, slope = self(t, bigs)
        return _Points(t, bigs, joining, phi, slope, phi + joining * self.jump_phi, slope + joining * self.jump_slope)

    @staticmethod
    def merged(a: _Points, b: _Points) -> _Points:
        """The points of ``a`` and ``b`` (none in both) in ascending order."""
        order = np.argsort(np.concatenate([a.t, b.t]), kind="stable")
        return _Points(*(np.concatenate([x, y])[order] for x, y in zip(a, b)))

    def small(self, t: np.ndarray, bigs: np.ndarray) -> np.ndarray:
        """The ``x − ln x`` terms' share of Φ at ``t`` (all but the first ``bigs``)."""
        return self.suffix_c[bigs] / (self.M * t) - self.suffix_log[bigs] + (len(self.c) - bigs) * np.log(t)

    def stretch_bounds(self, ends: _Points) -> np.ndarray:
        """A lower bound of Φ on each stretch ``[t_k, t_k+1]`` between consecutive ``ends`` (no
        breakpoint inside; its first ``bigs[k]`` terms on the ``ψ`` branch): the ``x − ln x``
        share is convex in ``ln t`` (its minimum where ``Σx = n − bigs``, clipped to the
        stretch) and the ``ψ`` share concave (``d²ψ/d(ln t)² = −αx/(τ² − α) < 0``: at least its
        value at one end)."""
        left, right, bigs = ends.t[:-1], ends.t[1:], ends.bigs[:-1]
        free = len(self.c) - bigs
        stationary = np.where(free > 0, self.suffix_c[bigs] / (self.M * np.maximum(free, 1)), right)
        psi_left = ends.phi[:-1] - self.small(left, bigs)
        psi_right = ends.joined_phi[1:] - self.small(right, bigs)
        return self.small(stationary.clip(left, right), bigs) + np.minimum(psi_left, psi_right)

    def at(self, t: float, big: int) -> tuple[float, float]:
        """Φ and ``t·dΦ/dt`` at the one point ``t`` (the first ``big`` terms with ``x > x̄``)."""
        c, M, alpha, n = self.c, self.M, self.alpha, len(self.c)
        small_x = self.suffix_c[big] / (M * t)
        psi, inverse_tau = _big_terms(c[:big] / (M * t), alpha)
        phi = small_x - self.suffix_log[big] + (n - big) * math.log(t) + psi.sum()
        return float(phi), float((n - big) - small_x - alpha * big - alpha * inverse_tau.sum())

    def __call__(self, points: np.ndarray, bigs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, M, alpha, n = self.c, self.M, self.alpha, len(self.c)
        small_x = self.suffix_c[bigs] / (M * points)
        phi = small_x - self.suffix_log[bigs] + (n - bigs) * np.log(points)
        slope = (n - bigs) - small_x - alpha * bigs
        ends = np.cumsum(bigs)
        start = 0
        while start < len(points):
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] - bigs[start] + self.chunk, side="right")))
            sizes = bigs[start:stop]
            owner = np.repeat(np.arange(stop - start), sizes)
            index = np.arange(len(owner)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            psi, inverse_tau = _big_terms(c[index] / (M * points[start:stop][owner]), alpha)
            phi[start:stop] += np.bincount(owner, psi, stop - start)
            slope[start:stop] -= alpha * np.bincount(owner, inverse_tau, stop - start)
            start = stop
        return phi, slope


def _big_terms(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Φ's term ``ψ`` for ``x > x̄`` and ``1/τ``, without cancellation at large ``x``.

    ``τ`` solves ``τ² − (x − 1 − α)τ + α = 0``, so ``x = (τ+1)(τ+α)/τ`` and SPEC's
    ``x − τ + ln((τ+1)/x) + α·ln(τ/α + 1)`` is ``1 + α + α/τ + ln τ + (α−1)·ln(τ+α) − α·ln α``;
    its derivative is ``dψ/dx = α/(τ+α)``, so ``t·dψ/dt = −x·α/(τ+α) = −α(1 + 1/τ)``.
    """
    tau = _tau(x, alpha)
    psi = 1.0 + alpha + alpha / tau + np.log(tau) + (alpha - 1.0) * np.log(tau + alpha) - alpha * math.log(alpha)
    return psi, 1.0 / tau


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    """SPEC §3's ``τ(x)`` for ``x > x̄`` (then ``x − 1 − α > 0``: no cancellation, and no
    overflow of its square at any ``x``)."""
    shifted = x - (1.0 + alpha)
    return 0.5 * shifted * (1.0 + np.sqrt(1.0 - 4.0 * alpha / shifted / shifted))
