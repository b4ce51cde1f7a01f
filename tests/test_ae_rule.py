"""One rule for AE values (SPEC §5): an AE aggregate is defined only when EVBMF kept a component in
at least half of the unfoldings, and a 0 entry is missing — the same in the engine, TensorBoard,
the heatmaps, Optuna's attributes and the replay tables."""

from __future__ import annotations

import csv
import math

import numpy as np
import optuna
import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import probe
from integrations._heatmap import LayerHistory
from integrations.optuna import report_measures
from integrations.tensorboard import LogOptions, ReportWriter
from probe.aggregate import AE_MIN_KEPT_SHARE, HEADLINE
from probe.cli import main
from tests.tb_events import load

AE_NAMES = [f"{name}_AE" for name in HEADLINE]


def _net(structured: int, noise: int = 6, seed: int = 0) -> nn.Sequential:
    """``structured`` rank-2 + small-noise 16×16 layers (EVBMF keeps 2 components), then ``noise``
    freshly initialised ones (EVBMF keeps nothing). A Linear's two unfoldings are one matrix."""
    g = torch.Generator().manual_seed(seed)
    layers = [nn.Linear(16, 16) for _ in range(structured + noise)]
    with torch.no_grad():
        for layer in layers[:structured]:
            layer.weight.copy_(torch.randn(16, 2, generator=g) @ torch.randn(2, 16, generator=g)
                               + 0.01 * torch.randn(16, 16, generator=g))
    return nn.Sequential(*layers)


def test_the_engine_shows_ae_aggregates_only_from_half_of_the_unfoldings():
    few, half = probe.measure(_net(structured=1, noise=6)), probe.measure(_net(structured=3, noise=3))
    assert few.kept == (2, 14) and half.kept == (6, 12) and AE_MIN_KEPT_SHARE == 0.5
    assert all(math.isnan(few.network[name]) for name in AE_NAMES)
    assert all(math.isfinite(few.network[f"{name}_BE"]) for name in HEADLINE)
    assert np.isnan(few.grid("ER", "AE")).all() and math.isnan(few.value("ER_mean_t0_AE"))
    assert few.why_undefined("SQ_p_AE") == (
        "EVBMF kept a component in 2 of 14 unfoldings; AE measures need at least 50% "
        "(fresh weights are mostly noise; training adds structure)")
    assert few.why_undefined("SQ_p_BE") is None
    assert "\nE_L2_AE   –\n" in few.format()
    assert "– E_L2_AE, SQ_p_AE, S_p_AE, F_p_AE: EVBMF kept a component in 2 of 14 unfoldings" in few.format()
    assert all(math.isfinite(half.network[name]) for name in AE_NAMES)  # at the boundary: shown
    # the per-layer values of the layer that kept something are still its own
    assert few.layers[0].unfoldings["in"].AE == probe.measure(_net(1, 0)).layers[0].unfoldings["in"].AE


def test_tensorboard_and_its_heatmaps_follow_the_rule(tmp_path):
    report = probe.measure(_net(structured=1, noise=6))
    with SummaryWriter(tmp_path) as writer:
        ReportWriter(writer, options=LogOptions(heatmaps=("ER",), layer_quantities=("ER",))).write(report, 3)
    events = load(tmp_path)
    scalars = set(events.Tags()["scalars"])
    assert not any(tag.startswith("probe/") and tag.endswith("_AE") for tag in scalars)
    note = events.Tensors("probe/undefined/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "- E_L2_AE: EVBMF kept a component in 2 of 14 unfoldings" in note


def test_a_zero_entry_is_missing_in_the_heatmaps_as_in_the_aggregates():
    """One kept component: ER = 0, which the aggregates count as missing; the heatmap draws it grey (NaN)."""
    g = torch.Generator().manual_seed(1)
    rank_one = {"fc.weight": torch.randn(16, 1, generator=g) @ torch.randn(1, 16, generator=g) + 1e-3 * torch.randn(16, 16, generator=g)}
    report = probe.measure(rank_one)
    unfolding = report.layers[0].unfoldings["in"]
    assert len(unfolding.d) == 1 and unfolding.AE["ER"] == 0.0 and unfolding.AE["SQ"] == pytest.approx(math.pi / 2)
    history = LayerHistory()
    history.add(report, 0)
    assert np.isnan(history.table("ER", "in", "AE")[1]).all()
    assert history.table("SQ", "in", "AE")[1][0, 0] == pytest.approx(math.pi / 2)


def test_optuna_attributes_and_replay_tables_follow_the_rule(tmp_path, capsys):
    model = _net(structured=1, noise=6)
    study = optuna.create_study()
    trial = study.ask()
    report_measures(trial, probe.measure(model), 0)
    assert all(math.isnan(trial.user_attrs[f"probe:{name}"]) for name in AE_NAMES)
    assert math.isfinite(trial.user_attrs["probe:F_p_BE"])
    torch.save(model.state_dict(), tmp_path / "model.pt")
    assert main(["replay", str(tmp_path / "model.pt"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    with open(tmp_path / "out" / "checkpoints.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert all(row[name] in ("", "nan") for name in AE_NAMES) and float(row["F_p_BE"]) > 0
    assert main(["measure", str(tmp_path / "model.pt")]) == 0
    assert "– E_L2_AE, SQ_p_AE, S_p_AE, F_p_AE: EVBMF kept a component in 2 of 14 unfoldings" in capsys.readouterr().out


def test_an_undefined_er_from_one_kept_component_says_so():
    """EVBMF keeping one component everywhere gives ER = 0 (missing) and SQ = π/2: the reason names it."""
    generator = torch.Generator().manual_seed(0)
    weights = {f"l{i}.weight": torch.randn(30, 1, generator=generator) @ torch.randn(1, 40, generator=generator)
               + 0.001 * torch.randn(30, 40, generator=generator) for i in range(3)}
    report = probe.measure(weights)
    assert all(len(layer.unfoldings["in"].d) == 1 for layer in report.layers)
    assert report.why_undefined("E_L2_AE") == ("every ER entry is 0, which counts as missing: EVBMF kept at most one "
                                               "component in each unfolding (the entropy of one value is 0)")
    assert report.network["SQ_p_AE"] == pytest.approx(math.pi / 2)
