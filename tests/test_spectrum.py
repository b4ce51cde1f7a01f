"""Every singular-value route gives each quantity within 1e-5 of float64 svdvals (SPEC §2)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import probe
from probe.spectrum import singular_values


def matrix_with_condition(rows: int, cols: int, condition: float, seed: int = 0) -> torch.Tensor:
    """A float32 ``rows × cols`` matrix whose singular values are log-spaced from 1 to 1/condition."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -np.log10(condition), rows, dtype=torch.float64)
    return ((u * s) @ v.T).float()


def routes(caplog, matrices) -> str:
    with caplog.at_level(logging.DEBUG, logger="probe.spectrum"):
        caplog.clear()
        singular_values(matrices)
    return caplog.text


# conditions on each side of the float32 (cond ≈ 4) and float64 (cond ≈ 1e5) tier limits
CONDITIONS = [1.5, 3.9, 4.2, 60.0, 5e4, 2e5, 1e9]


@pytest.mark.parametrize("shape", [(200, 1800), (128, 1152), (27, 64), (40, 40), (1, 50)])
@pytest.mark.parametrize("condition", CONDITIONS)
def test_every_route_matches_float64_svdvals(shape, condition):
    rows, cols = shape
    w = matrix_with_condition(rows, cols, condition if rows > 1 else 1.0)
    fast = probe.measure({"w.weight": w}, method="auto").layers[0].unfoldings["out"]
    exact = probe.measure({"w.weight": w}, method="svd").layers[0].unfoldings["out"]
    np.testing.assert_allclose(fast.s, exact.s, rtol=2e-6, atol=0)
    for variant in ("BE", "AE"):
        for name, value in getattr(exact, variant).items():
            assert getattr(fast, variant)[name] == pytest.approx(value, rel=1e-5), (variant, name)


def test_tiers_are_chosen_by_conditioning(caplog):
    assert "1 of 1 by torch.float32" in routes(caplog, [matrix_with_condition(64, 576, 2.0)])
    text = routes(caplog, [matrix_with_condition(64, 576, 1e3)])
    assert "0 of 1 by torch.float32" in text and "1 of 1 by torch.float64" in text
    assert "1 by float64 svdvals" in routes(caplog, [matrix_with_condition(64, 576, 1e9)])


def test_float32_is_not_tried_where_the_stable_rank_rules_it_out(caplog):
    text = routes(caplog, [matrix_with_condition(256, 2304, 3e4)])
    assert "torch.float32" not in text and "1 of 1 by torch.float64" in text


def test_rank_deficient_matrix_takes_the_svd_fallback(caplog):
    w = torch.randn(16, 3) @ torch.randn(3, 40)
    assert "1 by float64 svdvals" in routes(caplog, [w])
    (s,) = singular_values([w])
    np.testing.assert_allclose(s[:3], torch.linalg.svdvals(w.double()).numpy()[:3], rtol=1e-6)
    assert s[3:].max() < 1e-5 * s[0]


def test_batched_groups_keep_input_order():
    mats = [torch.randn(8, 20), torch.randn(5, 9), torch.randn(8, 20) * 3]
    for got, m in zip(singular_values(mats), mats):
        np.testing.assert_allclose(got, torch.linalg.svdvals(m.double()).numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast_per_matrix(dtype):
    w = torch.randn(32, 288).to(dtype)
    (s,) = singular_values([w])
    np.testing.assert_allclose(s, torch.linalg.svdvals(w.double()).numpy(), rtol=1e-5)


def test_unknown_method_and_unoriented_input():
    with pytest.raises(ValueError, match="method"):
        singular_values([torch.randn(2, 3)], method="lapack")
    with pytest.raises(ValueError, match="orient"):
        singular_values([torch.randn(5, 3)])
