"""report_measures / get_measures: what is stored, JSON safety, and a clean objective record."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

import probe
from integrations.optuna import MeasurePruner, get_measures, report_measures

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def test_report_is_stored_per_step_and_read_back():
    study = optuna.create_study()
    trial = study.ask()
    reports = {0: probe.measure(_model(0)), 3: probe.measure(_model(1))}
    for step, report in reports.items():
        stored = report_measures(trial, report, step)
        assert stored == pytest.approx(report.network, nan_ok=True)
    measures = get_measures(trial)
    assert list(measures) == [0, 3]
    for step, report in reports.items():
        assert measures[step] == pytest.approx(report.network, nan_ok=True)
        assert sorted(measures[step]) == sorted(probe.HEADLINE_NAMES)
    report_measures(trial, {"E_L2_BE": 7.0}, 3)  # same step again: replaced
    assert get_measures(trial)[3] == {"E_L2_BE": 7.0}
    assert trial.user_attrs["probe:measures:0"]["E_L2_BE"] == pytest.approx(reports[0].network["E_L2_BE"])


def test_default_names_add_the_pruner_aggregate_and_names_select():
    report = probe.measure(_model())
    study = optuna.create_study(pruner=MeasurePruner(measure="ER_L2_t6_BE"))
    trial = study.ask()
    stored = report_measures(trial, report, 0)
    assert set(stored) == set(probe.HEADLINE_NAMES) | {"ER_L2_t6_BE"}
    assert stored["ER_L2_t6_BE"] == pytest.approx(report.value("ER_L2_t6_BE"))
    assert stored["ER_L2_t6_BE"] == pytest.approx(report.network["E_L2_BE"])  # same definition
    stored = report_measures(trial, report, 1, names=["SQ_p_BE", "fro_wmean_t0_AE"])
    assert get_measures(trial)[1] == pytest.approx({"SQ_p_BE": report.network["SQ_p_BE"],
                                                     "fro_wmean_t0_AE": report.value("fro_wmean_t0_AE")}, nan_ok=True)
    assert report_measures(trial, {"E_L2_BE": 1, "SQ_p_BE": 2.5}, 2, names=["SQ_p_BE"]) == {"SQ_p_BE": 2.5}


def test_non_finite_values_are_stored_json_safely(tmp_path):
    model = _model()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    nan_report = probe.measure(model, nonfinite="nan")
    assert all(math.isnan(v) for v in nan_report.network.values())

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    report_measures(trial, nan_report, 0)
    report_measures(trial, {"E_L2_BE": math.inf, "SQ_p_BE": -math.inf, "S_p_BE": 1.5}, 1)
    study.tell(trial, 0.0)

    loaded = optuna.load_study(study_name="s", storage=storage).trials[0]
    raw = {key: value for key, value in loaded.user_attrs.items()}
    json.dumps(raw, allow_nan=False)  # strict JSON: no NaN / Infinity tokens
    assert raw["probe:measures:0"] == {name: None for name in probe.HEADLINE_NAMES}
    assert raw["probe:measures:1"] == {"E_L2_BE": "inf", "SQ_p_BE": "-inf", "S_p_BE": 1.5}
    measures = get_measures(loaded)
    assert all(math.isnan(v) for v in measures[0].values())
    assert measures[1] == {"E_L2_BE": math.inf, "SQ_p_BE": -math.inf, "S_p_BE": 1.5}


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (({"E_L2_BE": 1.0}, -1), {}, r"step=-1"),
        (({"E_L2_BE": 1.0}, 1.0), {}, r"step=1.0"),
        (({"E_L2_BE": 1.0}, True), {}, r"step=True"),
        (({"E_L2": 1.0}, 0), {}, r"names='E_L2'"),
        (({"E_L2_BE": "high"}, 0), {}, r"'E_L2_BE' must be a number, got 'high'"),
        (({"E_L2_BE": 1.0}, 0), {"names": ["SQ_p_BE"]}, r"names='SQ_p_BE' is not in the measures given"),
        (({"E_L2_BE": 1.0}, 0), {"names": ["ER_L9_t0_BE"]}, r"names='ER_L9_t0_BE'"),
    ],
)
def test_bad_arguments(args, kwargs, match):
    trial = optuna.create_study().ask()
    with pytest.raises(ValueError, match=match):
        report_measures(trial, *args, **kwargs)


class RecordingSampler(optuna.samplers.RandomSampler):
    """A real random sampler that records every value and intermediate value it is shown."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: set[float] = set()

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        for past in study.get_trials(deepcopy=False):
            self.seen.update(past.values or [])
            self.seen.update(past.intermediate_values.values())
        super().before_trial(study, trial)


def test_objective_record_stays_clean():
    """Pruned and completed trials carry only the objective's values; the sampler sees no measure."""
    sampler = RecordingSampler()
    pruner = MeasurePruner(n_startup_trials=3, wrapped_pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    objective_values: dict[int, dict[int, float]] = {}

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        reported = objective_values.setdefault(trial.number, {})
        for epoch in range(5):
            report_measures(trial, {"E_L2_BE": 1000.0 + x, "SQ_p_BE": 2000.0 + x}, epoch)
            if epoch % 2 == 0:  # the objective is validated every other epoch
                reported[epoch] = round(x, 3) + epoch
                trial.report(reported[epoch], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return round(x, 3) + 10.0

    study.optimize(objective, n_trials=16)
    states = {t.state for t in study.trials}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for t in study.trials:
        assert t.intermediate_values == objective_values[t.number]
        if t.state == optuna.trial.TrialState.PRUNED:
            last = max(objective_values[t.number])
            assert t.value == objective_values[t.number][last]  # Optuna's rule: last objective value
        assert get_measures(t)  # the measures are still there, beside the record
    assert sampler.seen and all(v < 1000.0 for v in sampler.seen)


def test_measure_only_pruned_trial_has_no_value():
    study = optuna.create_study(direction="maximize", pruner=MeasurePruner(n_startup_trials=1))
    done = study.ask()
    report_measures(done, {"E_L2_BE": 2.0}, 0)
    study.tell(done, 0.9)

    def objective(trial: optuna.Trial) -> float:
        report_measures(trial, {"E_L2_BE": 1.0}, 0)
        if trial.should_prune():
            raise optuna.TrialPruned()
        return 0.5

    study.optimize(objective, n_trials=1)
    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.value is None and pruned.intermediate_values == {}
