"""integrations.tensorboard: what a Report becomes in TensorBoard, read back with TensorBoard's reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import probe
from integrations.tensorboard import (
    LAYER_QUANTITIES,
    LogOptions,
    add_layout,
    check_measure_names,
    heatmap_columns,
    layer_tag,
    spectrum_tag,
    write_report,
)
from tests.tb_events import close, layout, load, scalars


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 12, 3), nn.Flatten(), nn.Linear(12 * 4 * 4, 10))


def _write(tmp_path, reports: dict[int, probe.Report], **kwargs) -> None:
    with SummaryWriter(tmp_path) as writer:
        add_layout(writer, kwargs.get("measures", probe.HEADLINE_NAMES), kwargs.get("options", LogOptions()))
        for step, report in reports.items():
            write_report(writer, report, step, **kwargs)


def test_default_output_matches_the_reports(tmp_path) -> None:
    reports = {0: probe.measure(_model(0)), 5: probe.measure(_model(1))}
    _write(tmp_path, reports)
    events = load(tmp_path)

    for name in probe.HEADLINE_NAMES:
        logged = scalars(events, f"probe/{name}")
        assert sorted(logged) == [0, 5]
        for step, report in reports.items():
            assert close(logged[step], report.network[name]), (name, step)

    report = reports[5]
    for layer in report.layers:
        for u, unfolding in layer.unfoldings.items():
            for variant in ("BE", "AE"):
                for q in LAYER_QUANTITIES:
                    logged = scalars(events, layer_tag(q, variant, u, layer.name))
                    assert close(logged[5], getattr(unfolding, variant)[q]), (layer.name, u, variant, q)
            histogram = events.Histograms(spectrum_tag(layer.name, u))[-1]
            assert histogram.step == 5
            assert histogram.histogram_value.num == len(unfolding.s)
            assert histogram.histogram_value.min == pytest.approx(unfolding.s.min())
            assert histogram.histogram_value.max == pytest.approx(unfolding.s.max())
            assert histogram.histogram_value.sum == pytest.approx(unfolding.s.sum())
    assert events.Tags()["images"] == []


def test_layout_has_one_multiline_chart_per_quantity_variant_unfolding(tmp_path) -> None:
    _write(tmp_path, {0: probe.measure(_model())})
    result = layout(load(tmp_path))
    categories = {c.title: c for c in result.category}
    assert list(categories) == ["probe network", "probe layers BE", "probe layers AE"]
    network = {chart.title: list(chart.multiline.tag) for chart in categories["probe network"].chart}
    assert network == {name: [f"^probe/{name}$"] for name in probe.HEADLINE_NAMES}
    charts = {chart.title: list(chart.multiline.tag) for chart in categories["probe layers BE"].chart}
    assert len(charts) == len(LAYER_QUANTITIES) * 2
    assert charts["SQ_BE in (all layers)"] == [r"^probe_SQ_BE/in/"]


def test_options_choose_what_is_written(tmp_path) -> None:
    report = probe.measure(_model())
    options = LogOptions(layer_quantities=("SQ", "ER"), variants=("AE",), histograms=False, heatmap=True)
    _write(tmp_path, {3: report}, measures=["E_L2_BE", "ER_mean_t0_AE"], options=options)
    events = load(tmp_path)
    tags = set(events.Tags()["scalars"])
    per_layer = {layer_tag(q, "AE", u, layer.name) for q in ("SQ", "ER") for u in ("in", "out") for layer in report.layers}
    assert tags == {"probe/E_L2_BE", "probe/ER_mean_t0_AE"} | per_layer
    assert close(scalars(events, "probe/ER_mean_t0_AE")[3], report.value("ER_mean_t0_AE"))
    assert events.Tags()["histograms"] == []
    (image,) = events.Images("probe_heatmap")
    assert image.step == 3 and image.width > 100 and image.height > 50
    assert [c.title for c in layout(events).category] == ["probe network", "probe layers AE"]


def test_heatmap_columns_are_the_per_layer_values() -> None:
    report = probe.measure(_model())
    columns, table = heatmap_columns(report, LogOptions(layer_quantities=("SQ", "fro"), variants=("BE",)))
    assert columns == ["in_SQ_BE", "out_SQ_BE", "in_fro_BE", "out_fro_BE"]
    assert table.shape == (len(report.layers), 4)
    rows = report.genprob_rows()
    np.testing.assert_allclose(table[:, 2], [row["in_fro_BE"] for row in rows])
    np.testing.assert_allclose(table[:, 0], [layer.unfoldings["in"].BE["SQ"] for layer in report.layers])


def test_nan_report_is_written_without_histograms(tmp_path) -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    report = probe.measure(model, nonfinite="nan")
    _write(tmp_path, {1: report}, options=LogOptions(heatmap=True))
    events = load(tmp_path)
    assert np.isnan(scalars(events, "probe/E_L2_BE")[1])
    histograms = set(events.Tags()["histograms"])
    assert spectrum_tag("0.weight", "in") not in histograms and spectrum_tag("2.weight", "in") in histograms
    assert len(events.Images("probe_heatmap")) == 1


def test_measure_names_are_validated() -> None:
    assert check_measure_names(["E_L2_AE", "spec_wp_t7_BE"]) == ("E_L2_AE", "spec_wp_t7_BE")
    with pytest.raises(ValueError, match=r"unknown network measure measures='E_L3_BE'"):
        check_measure_names(["E_L3_BE"])
    with pytest.raises(ValueError, match="duplicate"):
        check_measure_names(["E_L2_BE", "E_L2_BE"])
    with pytest.raises(TypeError, match="wrap it in a list"):
        check_measure_names("E_L2_BE")


def test_log_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"layer_quantities.*\['SQP'\]"):
        LogOptions(layer_quantities=("SQ", "SQP"))
    with pytest.raises(ValueError, match=r"variants.*\['XE'\]"):
        LogOptions(variants=("XE",))
    with pytest.raises(TypeError, match="string"):
        LogOptions(variants="BE")
    assert LogOptions(layer_quantities=[], variants=[]).layer_quantities == ()
