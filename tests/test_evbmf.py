import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from probe.evbmf import REFERENCE_XATOL, _objective, _slope, evbmf


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


def test_default_finds_the_stationary_point():
    """Φ is flat at its minimum: the default polishes Brent's σ² to the root of dΦ/dσ²."""
    s = torch.linalg.svdvals(low_rank_plus_noise()).numpy()
    s2, M, alpha = s * s, 200, 0.2
    x_bar = (1 + 2.5129 * alpha**0.5) * (1 + alpha / (2.5129 * alpha**0.5))
    sigma2 = evbmf(s, 40, M).sigma2
    assert abs(_slope(sigma2, s2, M, alpha, x_bar)) * sigma2 < 1e-8 * len(s)
    for step in (1e-4, -1e-4):  # a minimum, not a maximum
        assert _objective(sigma2 * (1 + step), s2, M, alpha, x_bar) > _objective(sigma2, s2, M, alpha, x_bar)
    assert evbmf(s, 40, M, xatol=1e-14).sigma2 == pytest.approx(sigma2, rel=1e-5)


@pytest.mark.parametrize("sigma2", [1e-3, 1e-2, 0.05])
def test_slope_is_the_objectives_derivative(sigma2):
    s = torch.linalg.svdvals(low_rank_plus_noise()).numpy()
    args = (s * s, 200, 0.2, (1 + 2.5129 * 0.2**0.5) * (1 + 0.2 / (2.5129 * 0.2**0.5)))
    h = sigma2 * 1e-6
    numeric = (_objective(sigma2 + h, *args) - _objective(sigma2 - h, *args)) / (2 * h)
    assert _slope(sigma2, *args) == pytest.approx(numeric, rel=1e-5)


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
