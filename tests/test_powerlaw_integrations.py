"""α and α̂ travel like any measure: stored by ``report_measures``, named as pruner candidates, written to TensorBoard."""

from __future__ import annotations

import math

import pytest
import torch

import probe

optuna = pytest.importorskip("optuna")

from integrations.optuna import LearnedMeasurePruner, get_measures, report_measures  # noqa: E402

NAMES = ["E_L2_BE", "alpha_mean_BE", "alphahat_mean_BE", "alpha_p_t0_BE"]


def test_report_measures_stores_alpha_in_a_real_study():
    torch.manual_seed(0)
    report = probe.measure(torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 16)))
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    stored = report_measures(trial, report, 0, measures=NAMES)
    assert stored == {name: report.value(name) for name in NAMES}
    assert all(math.isfinite(v) for v in stored.values())
    assert get_measures(study.trials[0])[0] == pytest.approx(stored)


def test_the_learned_pruner_takes_alpha_as_candidates_and_stores_them_by_default():
    pruner = LearnedMeasurePruner(measures=["E_L2_BE", "alpha_mean_BE", "alphahat_mean_BE"])
    assert pruner.measures == ("E_L2_BE", "alpha_mean_BE", "alphahat_mean_BE")
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), pruner=pruner)
    trial = study.ask()
    torch.manual_seed(1)
    stored = report_measures(trial, probe.measure({"w": torch.randn(24, 48)}, layers=lambda n, t: True), 0)
    assert {"alpha_mean_BE", "alphahat_mean_BE"} <= set(stored)
    with pytest.raises(ValueError, match="alpha_mean_BE"):
        LearnedMeasurePruner(measures=["alpha_mean_AE"])


def test_tensorboard_writes_alpha_with_a_titled_chart(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from integrations.tensorboard import LogOptions, ReportWriter
    from tests.tb_events import close, layout, load, scalars

    torch.manual_seed(0)
    report = probe.measure(torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 16)))
    with SummaryWriter(tmp_path) as writer:
        ReportWriter(writer, measures=["alpha_mean_BE", "alphahat_mean_BE"], options=LogOptions(heatmaps=(), layer_quantities=())).write(report, 2)
    events = load(tmp_path)
    assert close(scalars(events, "probe/alpha_mean_BE")[2], report.value("alpha_mean_BE"))
    assert close(scalars(events, "probe/alphahat_mean_BE")[2], report.value("alphahat_mean_BE"))
    titles = [chart.title for category in layout(events).category for chart in category.chart]
    assert any(t.startswith("alpha_mean_BE: power-law exponent α (WeightWatcher)") for t in titles)
