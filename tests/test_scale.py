"""Scale invariance (SPEC §2, §3): weights × c give the same S, C, ER, SQ and c × the norms,
on every route, for float32 and float64 weights, at any scale the dtype holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probe
from probe.evbmf import REFERENCE_XATOL, evbmf
from tests.test_spectrum import assert_quantities_match, matrix_with_condition


def weights(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A conv (well-conditioned), a 1×1 conv, a trained-like linear (low rank + noise) and an
    ill-conditioned conv, so every route and EVBMF keeping something are covered. In float32
    the last is only 1e4-conditioned: rounding ``w × c`` to float32 moves its true C by ~6e-8·C."""
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(48, 4, generator=g) @ torch.randn(4, 200, generator=g) + 0.1 * torch.randn(48, 200, generator=g)
    tensors = {
        "conv.weight": 0.1 * torch.randn(16, 8, 3, 3, generator=g),
        "pointwise.weight": 0.1 * torch.randn(32, 16, 1, 1, generator=g),
        "fc.weight": low_rank,
        "ill.weight": matrix_with_condition(24, 216, 1e7 if dtype == torch.float64 else 1e4).reshape(24, 24, 3, 3),
    }
    return {name: t.to(dtype) for name, t in tensors.items()}


def assert_scaled(scaled: probe.Report, base: probe.Report, factor: float) -> None:
    assert_quantities_match(scaled, base, norm_factor=factor)


@pytest.mark.parametrize("method", ["auto", "gram64", "svd"])
@pytest.mark.parametrize(("dtype", "scales"), [
    (torch.float32, [1e-30, 1e-20, 1e-10, 1e10, 1e20, 1e30]),
    (torch.float64, [1e-300, 1e-30, 1e-20, 1e20, 1e30, 1e300]),
])
def test_every_quantity_is_scale_invariant(dtype, scales, method):
    w = weights(dtype)
    base = probe.measure(w, method=method)
    assert all(len(u.d) > 0 for u in base.layers[2].unfoldings.values())  # EVBMF keeps the signal
    assert base.layers[3].unfoldings["out"].BE["C"] > 5e3
    for factor in scales:
        scaled = probe.measure({k: (v.double() * factor).to(dtype) for k, v in w.items()}, method=method)
        assert_scaled(scaled, base, factor)


@pytest.mark.parametrize("factor", [1e-30, 1e30])
def test_ill_conditioned_float32_is_exact_at_any_scale(factor):
    w = {"w.weight": (matrix_with_condition(24, 216, 1e7).double() * factor).float()}
    fast, exact = probe.measure(w), probe.measure(w, method="svd")
    assert fast.layers[0].unfoldings["out"].route in ("gram64+min", "svd")  # beyond the Gram alone
    reference = torch.linalg.svdvals(w["w.weight"].double()).numpy()
    np.testing.assert_allclose(exact.layers[0].unfoldings["out"].s, reference, rtol=1e-9)
    for u in ("in", "out"):
        for variant in ("BE", "AE"):
            for name, value in getattr(exact.layers[0].unfoldings[u], variant).items():
                assert getattr(fast.layers[0].unfoldings[u], variant)[name] == pytest.approx(value, rel=1e-5)


def test_extreme_float32_entries_are_measured_not_missing():
    w = 0.1 * torch.randn(16, 72, generator=torch.Generator().manual_seed(1))
    base = probe.measure({"w.weight": w})
    one_big = w.clone()
    one_big[3, 5] = 1e30  # was: "Optimization bounds must be finite scalars" from EVBMF
    big = probe.measure({"w.weight": one_big}).layers[0].unfoldings["out"]
    assert big.BE["spec"] == pytest.approx(1e30, rel=1e-6) and math.isfinite(big.BE["C"])
    near_max = probe.measure({"w.weight": w / w.abs().max() * 3e38})  # float32 entries near its max
    assert_scaled(near_max, base, 3e38 / float(w.abs().max()))
    tiny = probe.measure({"w.weight": w * 1e-38})  # normal and subnormal float32 entries: not "missing"
    assert tiny.layers[0].unfoldings["out"].BE["S"] == pytest.approx(base.layers[0].unfoldings["out"].BE["S"], rel=1e-4)


@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_up_to_the_dtypes_largest_finite_value(dtype, method):
    """Every layer rescaled so that its largest entry is ``finfo.max`` (float64: singular values,
    norms and σ² beyond float64): S, C, ER, SQ as at scale 1, spec and fro ``c`` times theirs or
    ``inf`` exactly where that exceeds float64. Was: S = 0 (missing) and ER = NaN from ×1e307."""
    w = weights(dtype)
    base = probe.measure(w, method=method)
    largest = torch.finfo(dtype).max
    big = {k: (v.double() / v.double().abs().max() * largest).to(dtype) for k, v in w.items()}
    assert all(torch.isfinite(v).all() and v.abs().max() == largest for v in big.values())
    with np.errstate(all="raise"):  # no overflow warning on the way either
        scaled = probe.measure(big, method=method)
    for name, layer, layer_base in zip(w, scaled.layers, base.layers):
        peak = float(w[name].double().abs().max())
        for u, got in layer.unfoldings.items():
            want = layer_base.unfoldings[u]
            assert len(got.d) == len(want.d), (name, u)
            for variant in ("BE", "AE"):
                for q, value in getattr(want, variant).items():
                    expected = value / peak * largest if q in ("spec", "fro") else value  # inf where beyond float64
                    assert getattr(got, variant)[q] == pytest.approx(expected, rel=1e-5), (name, u, variant, q)
    for measure in ("E_L2_BE", "SQ_p_BE", "E_L2_AE", "SQ_p_AE"):
        assert scaled.network[measure] == pytest.approx(base.network[measure], rel=1e-5, nan_ok=True), measure


def test_evbmf_default_tolerance_is_relative_the_reference_one_absolute():
    """σ² scales as c²; with the reference's absolute 1e-5 it does not at small scales."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(64, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 576, generator=g, dtype=torch.float64)
    s = torch.linalg.svdvals(a + 3 * torch.randn(64, 576, generator=g, dtype=torch.float64)).numpy()
    base = evbmf(s, 64, 576)
    for factor in (1e-6, 1e-3, 1e3):
        scaled = evbmf(s * factor, 64, 576)
        assert scaled.sigma2 == pytest.approx(base.sigma2 * factor**2, rel=1e-9)
        np.testing.assert_allclose(scaled.d, base.d * factor, rtol=1e-9)
    reference = evbmf(s * 1e-3, 64, 576, xatol=REFERENCE_XATOL)  # tolerance 1e-5 ≫ σ² ≈ 1e-5
    assert reference.sigma2 != pytest.approx(base.sigma2 * 1e-6, rel=1e-3)
