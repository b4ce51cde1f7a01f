"""``probe.measure`` on models and state dicts, including every kind of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import probe


def small_net() -> nn.Module:
    """A small convnet whose weights are low rank plus noise, as trained weights are, so
    EVBMF keeps components and every network measure is defined."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():
        for layer in (model[0], model[2], model[4]):
            w = layer.weight
            rows = w.shape[0]
            signal = torch.randn(rows, 2) @ torch.randn(2, w[0].numel())
            w.copy_((signal + 0.05 * torch.randn_like(signal)).reshape(w.shape))
    return model


def test_module_and_its_state_dict_agree():
    model = small_net()
    a, b = probe.measure(model), probe.measure(model.state_dict())
    assert [layer.name for layer in a.layers] == ["0.weight", "2.weight", "4.weight"]
    assert a.network == b.network
    assert all(math.isfinite(v) for v in a.network.values())


def test_measure_does_not_touch_the_model():
    model = small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe.measure(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_nonfinite_weights_raise_naming_the_layer():
    model = small_net()
    with torch.no_grad():
        model[2].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layer '2.weight' has non-finite weights"):
        probe.measure(model)


def test_nonfinite_weights_give_nan_rows_on_request():
    model = small_net()
    with torch.no_grad():
        model[2].weight[1, 1, 1, 1] = float("inf")
    report = probe.measure(model, nonfinite="nan")
    bad = report.layers[1]
    assert all(math.isnan(v) for u in bad.unfoldings.values() for v in (*u.BE.values(), *u.AE.values()))
    assert all(math.isnan(v) for v in report.network.values())
    good = report.layers[0].unfoldings["in"].BE
    assert all(math.isfinite(v) for v in good.values())


def test_all_zero_layer_is_missing_not_nan():
    model = small_net()
    with torch.no_grad():
        model[2].weight.zero_()
    report = probe.measure(model)
    zero = report.layers[1]
    for u in zero.unfoldings.values():
        assert all(v == 0.0 for v in (*u.BE.values(), *u.AE.values()))
    rest = probe.measure(model, layers=lambda name, t: name != "2.weight" and t.ndim > 1)
    # missing entries take no part in mean/L2/p but still count in N of the transforms
    values, _ = report.vector("ER", "BE")
    assert (values == 0).sum() == 2
    assert report.aggregate("ER", "BE", "L2", "t0") == pytest.approx(rest.aggregate("ER", "BE", "L2", "t0"))


def test_rank_deficient_layer_is_finite_and_exact():
    w = (torch.randn(32, 2) @ torch.randn(2, 64)).reshape(32, 4, 4, 4)
    fast = probe.measure({"w.weight": w}).layers[0]
    exact = probe.measure({"w.weight": w}, method="svd").layers[0]
    for u in ("in", "out"):
        assert not any(math.isnan(v) for v in fast.unfoldings[u].BE.values())
        for name in ("S", "ER", "spec", "fro", "SQ"):
            assert fast.unfoldings[u].BE[name] == pytest.approx(exact.unfoldings[u].BE[name], rel=1e-5)
    assert fast.unfoldings["out"].BE["C"] > 1e4


@pytest.mark.parametrize("shape", [(1, 30), (30, 1), (1, 1)])
def test_single_row_or_column(shape):
    w = torch.randn(*shape)
    layer = probe.measure({"fc.weight": w}).layers[0]
    u = layer.unfoldings["in"]
    assert (u.rows, u.cols) == (1, max(shape))
    assert u.BE["spec"] == pytest.approx(float(w.norm()), rel=1e-6)
    assert u.BE["S"] == pytest.approx(1.0) and u.BE["C"] == 1.0 and u.BE["ER"] == 0.0


def test_depthwise_and_grouped_convs():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, groups=16), nn.Conv2d(16, 32, 3, groups=4))
    report = probe.measure(model)
    depthwise, grouped = report.layers
    assert (depthwise.unfoldings["in"].rows, depthwise.unfoldings["in"].cols) == (1, 144)
    assert (depthwise.unfoldings["out"].rows, depthwise.unfoldings["out"].cols) == (9, 16)
    assert (grouped.unfoldings["in"].rows, grouped.unfoldings["in"].cols) == (4, 288)
    assert all(math.isfinite(v) for v in report.network.values() if not math.isnan(v))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_lose_nothing(dtype):
    model = small_net().to(dtype)
    upcast = {k: v.float() for k, v in model.state_dict().items()}
    half, full = probe.measure(model), probe.measure(upcast)
    for name, value in full.network.items():
        assert half.network[name] == pytest.approx(value, rel=1e-6, nan_ok=True), name


def test_meta_device_is_an_error():
    with torch.device("meta"):
        model = small_net()
    with pytest.raises(ValueError, match=r"layer '0.weight' is on the meta device"):
        probe.measure(model)


def test_nothing_selected_is_an_error():
    with pytest.raises(ValueError, match="no layer selected"):
        probe.measure(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match="no layer selected"):
        probe.measure({})
    with pytest.raises(ValueError, match="no layer selected: the layer filter"):
        probe.measure(small_net(), layers=lambda name, t: False)


def test_bad_arguments_and_tensors():
    with pytest.raises(ValueError, match="nonfinite"):
        probe.measure(small_net(), nonfinite="skip")
    with pytest.raises(ValueError, match="evbmf_xatol"):
        probe.measure(small_net(), evbmf_xatol=0)
    with pytest.raises(ValueError, match=r"layer 'idx.weight' has dtype torch.int64"):
        probe.measure({"idx.weight": torch.ones(3, 3, dtype=torch.int64)}, layers=lambda n, t: True)
    with pytest.raises(ValueError, match=r"layer 'bias': cannot unfold"):
        probe.measure({"bias": torch.ones(3)}, layers=lambda n, t: True)


def test_device_argument_computes_there_and_gives_the_same_spectra():
    model = small_net()
    report = probe.measure(model, device="cpu")
    for layer, module in zip(report.layers, (model[0], model[2], model[4])):
        expected = torch.linalg.svdvals(module.weight.detach().double().reshape(module.weight.shape[0], -1))
        np.testing.assert_allclose(layer.unfoldings["out"].s, expected.numpy(), rtol=1e-5)


def test_tighter_evbmf_tolerance_moves_ae_measures_only_slightly():
    model = small_net()
    default, tight = probe.measure(model), probe.measure(model, evbmf_xatol=1e-10)
    for name in ("E_L2_BE", "F_p_BE"):  # BE measures do not depend on EVBMF at all
        assert tight.network[name] == default.network[name]
    assert tight.network["E_L2_AE"] == pytest.approx(default.network["E_L2_AE"], rel=0.05)


def test_report_accessors():
    report = probe.measure(small_net())
    # SPEC §5 by hand, from the per-layer quantities: the in values of every layer, then the out values
    units = [layer.unfoldings[u] for u in ("in", "out") for layer in report.layers]
    er = np.array([unit.BE["ER"] for unit in units])
    assert report.value("E_L2_BE") == pytest.approx(math.log(math.sqrt(math.sqrt((er**2).sum() / len(er)))))
    sq = np.array([unit.AE["SQ"] for unit in units])
    weights = np.array([unit.weight for unit in units], dtype=float)
    kept = sq != 0
    wmean = (weights[kept] * np.abs(sq[kept])).sum() / weights[kept].sum()
    assert report.value("SQ_wmean_t3_AE") == pytest.approx(math.sqrt(wmean * len(sq)))
    assert report.aggregates()["SQ_wmean_t3_AE"] == pytest.approx(math.sqrt(wmean * len(sq)))
    assert len(report.aggregates()) == 4 * 2 * 5 * 8
    with pytest.raises(KeyError, match="unknown network measure name=.E_L3_BE."):
        report.value("E_L3_BE")
    with pytest.raises(ValueError, match="unknown measure"):
        report.grid("Q", "BE")
    records = report.records()
    assert len(records) == 3 * 2 * 2 and {"layer", "unfolding", "variant", "kept", "SQ"} <= set(records[0])
    assert "E_L2_BE" in report.format()
    rows = report.genprob_rows()
    assert rows[2]["in_S_BE"] == rows[2]["out_S_BE"]  # linear: both unfoldings are the matrix
    assert np.isclose(rows[0]["in_fro_BE"], float(report.layers[0].unfoldings["in"].s @ report.layers[0].unfoldings["in"].s) ** 0.5)


def test_a_linears_two_unfoldings_are_measured_once():
    """A linear's (or 1×1 conv's) ``in`` and ``out`` are one matrix: one spectrum, and one
    EVBMF and set of quantities, shared; a 3×3 conv's two unfoldings are two."""
    g = torch.Generator().manual_seed(0)
    report = probe.measure({"fc.weight": torch.randn(20, 50, generator=g), "pw.weight": torch.randn(8, 16, 1, 1, generator=g),
                            "conv.weight": torch.randn(8, 16, 3, 3, generator=g)})
    fc, pw, conv = (layer.unfoldings for layer in report.layers)
    assert fc["in"] is fc["out"] and pw["in"] is pw["out"]
    assert conv["in"] is not conv["out"] and (conv["in"].rows, conv["out"].rows) == (16, 8)


def test_sparse_weights_a_meta_device_and_hints_that_are_no_report_are_refused_by_name():
    with pytest.raises(ValueError, match=r"layer 'fc.weight' is a sparse tensor \(torch.sparse_coo\); pass tensor.to_dense"):
        probe.measure({"fc.weight": torch.randn(5, 6).to_sparse()})
    with pytest.raises(ValueError, match="'meta' holds none"):
        probe.MeasureOptions(device="meta")
    report = probe.measure({"fc.weight": torch.randn(5, 6)})
    with pytest.raises(TypeError, match="hints must be a Report .* got dict"):
        probe.measure({"fc.weight": torch.randn(5, 6)}, hints=report.network)  # type: ignore[arg-type]
