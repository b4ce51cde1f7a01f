import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from probe.evbmf import _TAU_FACTOR, REFERENCE_XATOL, _big_terms, _objective, _Phi, evbmf


def low_rank_plus_noise(rows=40, cols=200, rank=4, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(rows, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, cols, generator=g, dtype=torch.float64)
    return signal + noise * torch.randn(rows, cols, generator=g, dtype=torch.float64)


def test_recovers_rank_and_noise_variance():
    a = low_rank_plus_noise()
    s = torch.linalg.svdvals(a).numpy()
    result = evbmf(s, *a.shape, xatol=1e-12)
    assert len(result.d) == 4
    assert result.sigma2 == pytest.approx(0.01, rel=0.1)
    assert np.all(result.d < s[:4]) and np.all(result.d > 0)  # shrunk, not removed


def test_pure_noise_keeps_nothing():
    a = 0.1 * torch.randn(40, 200, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert len(evbmf(torch.linalg.svdvals(a).numpy(), 40, 200).d) == 0


def test_reference_tolerance_is_scipys_bounded_search():
    """An explicit xatol is the reference's absolute tolerance: SciPy's search, unchanged."""
    s = torch.linalg.svdvals(low_rank_plus_noise(noise=1.0)).numpy()
    L, M = 40, 200
    alpha = L / M
    tau_bar = 2.5129 * alpha**0.5
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    s2 = s * s
    k = int(np.ceil(L / (1 + alpha))) - 2
    bounds = (max(s2[k + 1] / (M * x_bar), s2[k + 1:].mean() / M), s2.sum() / (L * M))
    plain = minimize_scalar(_objective, args=(s2, M, alpha, x_bar), bounds=bounds, method="bounded",
                            options={"xatol": REFERENCE_XATOL})
    assert evbmf(s, L, M, xatol=REFERENCE_XATOL).sigma2 == plain.x  # bit for bit


def scaled_problem(s, L, M):
    """SPEC §3's inputs on ``s`` scaled as ``evbmf`` scales it: (c, M, α, x̄, lower, upper, exponent)."""
    e = int(np.frexp(s[0])[1])
    c = np.ldexp(s, -e) ** 2
    alpha = L / M
    tau_bar = _TAU_FACTOR * alpha**0.5
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    k = min(int(np.ceil(L / (1 + alpha))) - 1, L) - 1
    lower, upper = max(c[k + 1] / (M * x_bar), c[k + 1:].mean() / M), c.sum() / (L * M)
    return c[c > 0], M, alpha, x_bar, lower, upper, e


def phi(t, c, M, alpha, x_bar):
    """Φ and ``t·dΦ/dt`` at each ``t``, each term on the branch SPEC §3 gives it."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    bigs = np.array([int((c / (M * x) > x_bar).sum()) for x in t])
    return _Phi(c, M, alpha, x_bar)(t, bigs)


def ill_spectrum(L=64, M=4096, seed=0):
    """Singular values of a Gaussian ``L × M`` matrix whose rows are scaled over 1e9."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(L, M, generator=g, dtype=torch.float64) * torch.logspace(0, -9, L, dtype=torch.float64)[:, None]
    return torch.linalg.svdvals(a).numpy()


def test_phi_terms_are_specs_formula_and_slope_its_derivative():
    """Φ's terms for ``x > x̄``, rewritten without cancellation, equal SPEC's formula where it
    has none, and the slope is Φ's derivative (``t·dΦ/dt``)."""
    alpha = 0.2
    x = np.array([2.5, 3.0, 10.0, 1e3])
    shifted = x - (1 + alpha)
    tau = 0.5 * (shifted + np.sqrt(shifted**2 - 4 * alpha))
    spec = x - tau + np.log((tau + 1) / x) + alpha * np.log(tau / alpha + 1)
    np.testing.assert_allclose(_big_terms(x, alpha)[0], spec, rtol=1e-12)
    c, M, alpha, x_bar, lower, upper, _ = scaled_problem(torch.linalg.svdvals(low_rank_plus_noise()).numpy(), 40, 200)
    for t in np.geomspace(lower, upper, 7)[1:-1]:
        value, slope = phi(t, c, M, alpha, x_bar)
        assert value[0] == pytest.approx(_objective(t, c, M, alpha, x_bar), rel=1e-12)
        h = t * 1e-7
        numeric = (phi(t + h, c, M, alpha, x_bar)[0] - phi(t - h, c, M, alpha, x_bar)[0]) / (2 * h)
        assert slope[0] / t == pytest.approx(numeric[0], rel=1e-5)


@pytest.mark.parametrize("spectrum", ["low_rank", "ill", "small_ill"])
def test_default_is_the_global_minimum(spectrum):
    """σ² is SPEC §3's minimiser over the bounds: no point of a fine grid (nor either side of
    a breakpoint) has a lower Φ. On the ill-conditioned spectrum the reference's bounded
    search stops at a local minimum."""
    s, L, M = {"low_rank": (torch.linalg.svdvals(low_rank_plus_noise()).numpy(), 40, 200),
               "ill": (ill_spectrum(), 64, 4096), "small_ill": (ill_spectrum(8, 27, seed=2), 8, 27)}[spectrum]
    c, M, alpha, x_bar, lower, upper, e = scaled_problem(s, L, M)
    sigma2 = evbmf(s, L, M).sigma2 / 2.0 ** (2 * e)
    breaks = c / (M * x_bar)
    breaks = breaks[(breaks > lower) & (breaks < upper)]
    grid = np.concatenate([np.geomspace(lower, upper, 4000), breaks * (1 + 1e-15), breaks * (1 - 1e-15)])
    best = phi(grid, c, M, alpha, x_bar)[0].min()
    assert phi(sigma2, c, M, alpha, x_bar)[0][0] <= best + 1e-12 * abs(best)
    if spectrum == "ill":
        local = evbmf(s, L, M, xatol=1e-12 * lower * 2.0 ** (2 * e)).sigma2 / 2.0 ** (2 * e)
        assert phi(local, c, M, alpha, x_bar)[0][0] > best + 1e-6 * abs(best)
        assert abs(local - sigma2) > 0.01 * sigma2  # another minimum, not a rounding of this one


@pytest.mark.parametrize("spectrum", ["low_rank", "ill", "small_ill", "wide_ill"])
def test_stretch_bounds_bound_phi_between_the_breakpoints(spectrum):
    """The lower bound that lets the search skip a stretch's grid lies below Φ everywhere on
    that stretch (600 points on each, both ends included, each end on the stretch's side)."""
    s, L, M = {"low_rank": (torch.linalg.svdvals(low_rank_plus_noise()).numpy(), 40, 200),
               "ill": (ill_spectrum(), 64, 4096), "small_ill": (ill_spectrum(8, 27, seed=2), 8, 27),
               "wide_ill": (ill_spectrum(300, 300, seed=1), 300, 300)}[spectrum]
    c, M, alpha, x_bar, lower, upper, _ = scaled_problem(s, L, M)
    at = _Phi(c, M, alpha, x_bar)
    breaks = c / (M * x_bar)
    ends = at.points(np.unique(np.concatenate([breaks[(breaks > lower) & (breaks < upper)], [lower, upper]])))
    bounds = at.stretch_bounds(ends)
    assert len(bounds) == len(ends.t) - 1 >= 1
    for k, bound in enumerate(bounds):
        t = np.geomspace(ends.t[k], ends.t[k + 1], 600)
        values = at(t, np.full(len(t), ends.bigs[k]))[0]  # the stretch's branches, at its ends too
        assert bound <= values.min() + 1e-12 * abs(values.min())


def test_skipping_stretches_keeps_the_minimum_bit_for_bit(monkeypatch):
    """With the grid laid over every stretch (no bounding), σ² and the values are the same."""
    spectra = [(ill_spectrum(300, 300, seed=1), 300, 300), (ill_spectrum(), 64, 4096),
               (ill_spectrum(200, 1000, seed=3), 200, 1000), (torch.linalg.svdvals(low_rank_plus_noise()).numpy(), 40, 200)]
    assert_bounding_changes_nothing(spectra, monkeypatch)


def assert_bounding_changes_nothing(spectra, monkeypatch) -> None:
    """Each ``(s, L, M)`` gets the same σ² and values, bit for bit, with the grid laid everywhere."""
    import probe.evbmf as module

    bounded = [evbmf(s, L, M) for s, L, M in spectra]
    monkeypatch.setattr(module, "_GRID_FIRST", 10**18)
    for (s, L, M), result in zip(spectra, bounded):
        everywhere = evbmf(s, L, M)
        assert result.sigma2 == everywhere.sigma2
        np.testing.assert_array_equal(result.d, everywhere.d)


def test_skipping_stretches_keeps_the_minimum_on_varied_spectra(monkeypatch):
    """The same comparison on 60 seeded spectra: uniform, log-spaced over up to 40 decades,
    scaled by up to 1e±100, repeated values, half zeros, heavy-tailed with steep decay."""
    rng = np.random.default_rng(7)
    spectra = []
    for trial in range(60):
        L = int(rng.integers(2, 300))
        M = int(L + rng.integers(0, 3 * L))
        s = [np.sort(rng.random(L)), np.logspace(-rng.uniform(1, 40), 0, L),
             np.sort(rng.standard_normal(L) ** 2) * 10.0 ** rng.uniform(-100, 100),
             np.sort(np.repeat(np.logspace(-rng.uniform(1, 20), 0, L // 4 + 1), 4)[:L]),
             np.sort(np.concatenate([np.zeros(L // 2), np.logspace(-3, 0, L - L // 2)])),
             np.sort(np.abs(rng.standard_cauchy(L)) * np.exp(-rng.uniform(0, 60) * np.arange(L) / L))][trial % 6]
        spectra.append((s[::-1].copy(), L, M))
    assert_bounding_changes_nothing(spectra, monkeypatch)


@pytest.mark.parametrize("spectrum", ["ill", "small_ill"])
def test_sigma2_is_continuous_in_the_singular_values(spectrum):
    """A local search's minimum depends on the path it takes: float64 svdvals from LAPACK and
    from torch, equal to 2e-15, gave σ² 14 % apart on the ill spectrum (and AE's C as much);
    the global minimum moves with the values."""
    s, L, M = (ill_spectrum(), 64, 4096) if spectrum == "ill" else (ill_spectrum(8, 27, seed=2), 8, 27)
    base = evbmf(s, L, M)
    for seed in range(5):
        nudged = evbmf(s * (1 + 1e-14 * np.random.default_rng(seed).standard_normal(L)), L, M)
        assert nudged.sigma2 == pytest.approx(base.sigma2, rel=1e-10)
        assert len(nudged.d) == len(base.d)
        np.testing.assert_allclose(nudged.d, base.d, rtol=1e-7)


def test_all_zero_and_zero_values_are_defined():
    assert len(evbmf(np.zeros(5), 5, 9).d) == 0
    s = np.array([10.0, 9.0, 0.1, 0.09, 0.0, 0.0])  # exact zeros would make Φ infinite
    result = evbmf(s, 6, 30)
    assert np.isfinite(result.sigma2) and 0 < len(result.d) <= 2


def test_single_row_and_orientation_check():
    result = evbmf(np.array([3.0]), 1, 50)
    assert np.isfinite(result.sigma2)
    with pytest.raises(ValueError, match="rows <= cols"):
        evbmf(np.ones(3), 5, 3)
    with pytest.raises(ValueError, match="xatol"):
        evbmf(np.ones(3), 3, 5, xatol=0.0)


@pytest.mark.parametrize(("model", "names"), [
    ("resnet18", ("layer15.weight", "layer14.weight")),  # σ² at a jump of Φ
    ("resnet50", ("layer39.weight",)),                   # a root next to a jump of the slope
])
def test_sigma2_is_stable_where_the_objective_jumps(model, names):
    """Φ jumps where some x_i crosses x̄, and σ² can sit at such a jump (found on a
    trained-like ResNet-18 layer of benchmarks/speed.py): spectra equal to 1e-14 must give
    σ² equal to ~1e-12, not ~1e-5 as a search on Φ alone did."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import speed

    last = max(int(name[5:-7]) for name in names)
    weights = speed.trained_like(speed.init_weights(getattr(speed, model)()[:last + 1]))
    for name in names:
        w = weights[name]
        for matrix in (w.reshape(w.shape[0], -1), w.transpose(0, 1).reshape(w.shape[1], -1)):
            rows, cols = sorted(matrix.shape)
            s = torch.linalg.svdvals(matrix.double()).numpy()
            base = evbmf(s, rows, cols)
            nudged = evbmf(s * (1 + 1e-14 * np.random.default_rng(0).standard_normal(rows)), rows, cols)
            assert nudged.sigma2 == pytest.approx(base.sigma2, rel=1e-10), name
            np.testing.assert_allclose(nudged.d, base.d, rtol=1e-7)  # d near the threshold: amplified


@pytest.mark.parametrize("s", [np.array([1.0, 1e-161]), np.array([1.0, 1e-158, 1e-162, 0.0]), np.array([1.0, 5e-324]),
                               np.logspace(0, -300, 50), np.logspace(0, -320, 400)],
                         ids=["two", "subnormal squares", "smallest subnormal", "over 1e300", "over 1e320"])
@pytest.mark.parametrize("aspect", [1, 3])
def test_values_whose_squares_underflow_give_finite_results(s, aspect):
    """Float64 spectra over ~1e160 and more (squares below float64's range): finite σ² and
    ``d``, no warning (they raised in the search's bounds, overflowed τ, and gave 0/0 in the
    shrinkage)."""
    import warnings

    L = len(s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evbmf(s, L, aspect * L)
    assert np.isfinite(result.sigma2) and result.sigma2 >= 0
    assert np.isfinite(result.d).all() and (result.d > 0).all() and len(result.d) <= L
