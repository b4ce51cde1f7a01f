"""integrations.tensorboard: what a Report becomes in TensorBoard, read back with TensorBoard's reader."""

from __future__ import annotations

import io
import math
import re

import matplotlib.image
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import probe
from integrations._heatmap import LayerHistory, defined, undefined_legend
from integrations._tb_layout import UNDEFINED_TAG
from integrations.tensorboard import (
    HEATMAP_QUANTITIES,
    LAYER_QUANTITIES,
    LogOptions,
    ReportWriter,
    heatmap_tag,
    layer_tag,
    spectrum_tag,
)
from probe.aggregate import check_measure_names
from tests.tb_events import close, layout, load, scalars

GREY = np.array([0xC8, 0xC8, 0xC8])  # the heatmaps' "undefined" colour


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 12, 3), nn.Flatten(), nn.Linear(12 * 4 * 4, 10))


def _structured(seed: int = 0, layers: int = 3) -> nn.Module:
    """Linear layers holding a strong rank-2 signal plus noise: EVBMF keeps components in every layer."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*(nn.Linear(16, 16) for _ in range(layers)))
    with torch.no_grad():
        for layer in model:
            signal = torch.randn(16, 2, generator=generator) @ torch.randn(2, 16, generator=generator)
            layer.weight.copy_(signal + 0.05 * torch.randn(16, 16, generator=generator))
    return model


def _write(tmp_path, reports: dict[int, probe.Report], epoch: int | None = None, **kwargs) -> None:
    with SummaryWriter(tmp_path) as writer:
        ours = ReportWriter(writer, **kwargs)
        for step, report in reports.items():
            ours.write(report, step, epoch=epoch)


def _pixels(events, tag: str) -> np.ndarray:
    return (matplotlib.image.imread(io.BytesIO(events.Images(tag)[-1].encoded_image_string), format="png")[..., :3] * 255).round()


def _notes(events) -> list[str]:
    """The ``probe/undefined`` texts (torch's writer stores them as ``probe/undefined/text_summary``)."""
    tags = [tag for tag in events.Tags()["tensors"] if tag.startswith(UNDEFINED_TAG)]
    return [event.tensor_proto.string_val[0].decode() for tag in tags for event in events.Tensors(tag)]


def _has_grey(pixels: np.ndarray) -> bool:
    """Whether some cell is drawn grey (more grey pixels than anti-aliased text leaves)."""
    return int((np.abs(pixels - GREY).max(axis=-1) == 0).sum()) > 1000


def test_default_is_eight_scalars_and_four_images_even_for_fifty_layers(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(12, 12) for _ in range(50)))
    report = probe.measure(model)
    _write(tmp_path, {7: report}, epoch=3)
    events = load(tmp_path)
    tags = events.Tags()
    defined_names = [name for name in probe.HEADLINE_NAMES if math.isfinite(report.network[name])]
    assert set(tags["scalars"]) == {f"probe/{name}" for name in defined_names}
    assert len(tags["scalars"]) <= 64
    for name in defined_names:
        assert close(scalars(events, f"probe/{name}")[7], report.network[name])
    assert sorted(tags["images"]) == sorted(heatmap_tag(q) for q in HEATMAP_QUANTITIES)
    assert tags["histograms"] == []
    image = events.Images(heatmap_tag("SQ"))[0]
    assert image.step == 7 and image.height > 50 * 10  # a readable row per layer


def test_undefined_values_are_never_written_as_numbers(tmp_path) -> None:
    report = probe.measure(_model())  # fresh weights: EVBMF keeps nothing, every AE value is missing
    assert all(math.isnan(report.network[f"{name}_AE"]) for name in ("E_L2", "SQ_p", "S_p", "F_p"))
    _write(tmp_path, {0: report}, options=LogOptions(layer_quantities=LAYER_QUANTITIES))
    events = load(tmp_path)
    tags = set(events.Tags()["scalars"])
    assert not any(tag.startswith("probe/") and tag.endswith("_AE") for tag in tags)
    assert not any(tag.startswith("probe_layer_") and "/AE_" in tag for tag in tags)
    assert {f"probe/{name}_BE" for name in ("E_L2", "SQ_p", "S_p", "F_p")} <= tags
    (text,) = _notes(events)
    assert "E_L2_AE" in text and "F_p_AE" in text and "EVBMF kept a component in 0 of 6 unfoldings" in text
    assert _has_grey(_pixels(events, heatmap_tag("SQ")))  # undefined AE cells: grey


def test_defined_values_are_colours_and_per_layer_scalars(tmp_path) -> None:
    reports = {9: probe.measure(_structured(0)), 19: probe.measure(_structured(1))}
    assert all(defined(u, v) for r in reports.values() for layer in r.layers for u in layer.unfoldings.values() for v in ("BE", "AE"))
    _write(tmp_path, reports, options=LogOptions(heatmaps=LAYER_QUANTITIES, layer_quantities=LAYER_QUANTITIES, histograms=True))
    events = load(tmp_path)
    for name in probe.HEADLINE_NAMES:
        logged = scalars(events, f"probe/{name}")
        assert all(close(logged[step], report.network[name]) for step, report in reports.items()), name
    report = reports[19]
    for layer in report.layers:
        for u, unfolding in layer.unfoldings.items():
            for variant in ("BE", "AE"):
                for q in LAYER_QUANTITIES:
                    assert close(scalars(events, layer_tag(q, variant, u, layer.name))[19], getattr(unfolding, variant)[q])
            histogram = events.Histograms(spectrum_tag(layer.name, u))[-1]
            assert histogram.step == 19 and histogram.histogram_value.num == len(unfolding.s)
            assert histogram.histogram_value.max == pytest.approx(unfolding.s.max())
    assert _notes(events) == []
    for q in LAYER_QUANTITIES:
        assert [image.step for image in events.Images(heatmap_tag(q))] == [9, 19]
        assert not _has_grey(_pixels(events, heatmap_tag(q))), q  # no cell drawn as undefined


def test_layer_history_holds_every_epoch_with_nan_for_undefined() -> None:
    torch.manual_seed(0)
    structured, fresh = probe.measure(_structured(0, layers=2)), probe.measure(nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16)))
    history = LayerHistory()
    history.add(structured, 5)
    history.add(fresh, 2)
    history.add(structured, 2)  # the same epoch again replaces it
    labels, table = history.table("ER", "out", "AE")
    assert labels == [2, 5] and history.layers == ["0.weight", "1.weight"]
    expected = [layer.unfoldings["out"].AE["ER"] for layer in structured.layers]
    np.testing.assert_array_equal(table[:, 0], expected)
    np.testing.assert_array_equal(table[:, 1], expected)
    history.add(fresh, 8)
    assert np.isnan(history.table("SQ", "in", "AE")[1][:, 2]).all()  # EVBMF kept nothing: NaN, not 0


def test_layout_titles_say_what_each_chart_is(tmp_path) -> None:
    options = LogOptions(layer_quantities=("SQ", "C"), variants=("BE", "AE"))
    _write(tmp_path, {0: probe.measure(_structured())}, options=options, measures=["E_L2_BE", "ER_mean_t0_AE"])
    events = load(tmp_path)
    categories = {c.title: c for c in layout(events).category}
    assert list(categories) == ["probe network", "probe layers BE", "probe layers AE"]
    network = {chart.title: list(chart.multiline.tag) for chart in categories["probe network"].chart}
    assert network == {
        "E_L2_BE: effective rank, ln √(RMS over unfoldings), raw weights": ["^probe/E_L2_BE$"],
        "ER_mean_t0_AE: effective rank, mean over unfoldings, after EVBMF denoising": ["^probe/ER_mean_t0_AE$"],
    }
    charts = {chart.title: chart.multiline.tag[0] for chart in categories["probe layers AE"].chart}
    title = "SQ (stable quality), out-channel unfolding, AE (after EVBMF denoising): one line per layer"
    matched = sorted(tag for tag in events.Tags()["scalars"] if re.search(charts[title], tag))
    assert matched == [layer_tag("SQ", "AE", "out", f"{i}.weight") for i in range(3)]


def test_options_choose_what_is_written(tmp_path) -> None:
    report = probe.measure(_model())
    options = LogOptions(heatmaps=(), layer_quantities=("SQ", "ER"), variants=("BE",))
    _write(tmp_path, {3: report}, measures=["E_L2_BE", "ER_mean_t0_BE"], options=options)
    events = load(tmp_path)
    per_layer = {layer_tag(q, "BE", u, layer.name) for q in ("SQ", "ER") for u in ("in", "out") for layer in report.layers}
    assert set(events.Tags()["scalars"]) == {"probe/E_L2_BE", "probe/ER_mean_t0_BE"} | per_layer
    assert close(scalars(events, "probe/ER_mean_t0_BE")[3], report.value("ER_mean_t0_BE"))
    assert events.Tags()["images"] == [] and events.Tags()["histograms"] == []
    assert [c.title for c in layout(events).category] == ["probe network", "probe layers BE"]


def test_nan_weights_are_explained_and_have_no_histogram(tmp_path) -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    report = probe.measure(model, nonfinite="nan")
    _write(tmp_path, {1: report}, options=LogOptions(histograms=True))
    events = load(tmp_path)
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("probe/")]
    assert "not finite" in _notes(events)[0]
    histograms = set(events.Tags()["histograms"])
    assert spectrum_tag("0.weight", "in") not in histograms and spectrum_tag("2.weight", "in") in histograms
    assert len(events.Images(heatmap_tag("SQ"))) == 1


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
    with pytest.raises(ValueError, match=r"heatmaps.*\['E'\]"):
        LogOptions(heatmaps=("E",))
    with pytest.raises(ValueError, match=r"variants.*\['XE'\]"):
        LogOptions(variants=("XE",))
    with pytest.raises(TypeError, match="string"):
        LogOptions(variants="BE")
    with pytest.raises(ValueError, match="nothing per layer"):
        LogOptions(variants=())
    assert LogOptions(heatmaps=[], layer_quantities=[], variants=[]).layer_quantities == ()


def test_cards_say_what_each_measure_is_without_codes(tmp_path) -> None:
    _write(tmp_path, {0: probe.measure(_structured()), 1: probe.measure(_structured(1))})
    events = load(tmp_path)
    description = events.SummaryMetadata("probe/E_L2_BE").summary_description
    assert description.startswith("E_L2_BE: effective rank, ln √(RMS over unfoldings), raw weights.")
    assert "below 0 when the typical entropy is under 1" in description and "learns it per study" in description
    assert sorted(scalars(events, "probe/E_L2_BE")) == [0, 1]  # the described first value is an ordinary point
    titles = [chart.title for category in layout(events).category for chart in category.chart]
    assert "F_p_AE: Frobenius norm, ln √(N·geometric mean over unfoldings), after EVBMF denoising" in titles
    assert not [title for title in titles if re.search(r"\(t\d\)", title)]


def test_the_grey_cells_legend_says_what_is_missing_for_each_quantity():
    """One kept component gives ER = 0 (missing) but SQ = π/2, S = 1/L, C = 1 (defined)."""
    assert "EVBMF kept ≤ 1 component" in undefined_legend("ER")
    assert all("EVBMF kept nothing" in undefined_legend(q) and "≤ 1" not in undefined_legend(q) for q in ("SQ", "S", "C"))
