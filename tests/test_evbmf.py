import numpy as np
import pytest
import torch

from probe.evbmf import evbmf


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


def test_default_tolerance_is_scipys():
    s = torch.linalg.svdvals(low_rank_plus_noise()).numpy()
    coarse, fine = evbmf(s, 40, 200), evbmf(s, 40, 200, xatol=1e-12)
    assert len(coarse.d) == len(fine.d)
    assert coarse.sigma2 == pytest.approx(fine.sigma2, abs=1e-5)


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
