"""report_measures / get_measures: what is stored, JSON safety, and a clean objective record."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import torch

import probe
from integrations.optuna import (
    MeasurePruner,
    get_measures,
    measured_trial,
    report_measures,
)
from integrations.optuna._measures import stored_measure

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
    report_measures(trial, {"E_L2_BE": 7.0}, 3)  # same step again: that value replaced, the step's others kept
    assert get_measures(trial)[3] == pytest.approx({**reports[3].network, "E_L2_BE": 7.0}, nan_ok=True)
    assert study.trials[0].system_attrs["probe:measures:0"]["E_L2_BE"] == pytest.approx(reports[0].network["E_L2_BE"])
    assert trial.user_attrs["probe:E_L2_BE"] == 7.0 and trial.user_attrs["probe:last_step"] == 3


def test_default_names_add_the_pruner_aggregate_and_names_select():
    report = probe.measure(_model())
    study = optuna.create_study(pruner=MeasurePruner(measure="ER_L2_t6_BE"))
    trial = study.ask()
    stored = report_measures(trial, report, 0)
    assert set(stored) == set(probe.HEADLINE_NAMES) | {"ER_L2_t6_BE"}
    assert stored["ER_L2_t6_BE"] == pytest.approx(report.network["E_L2_BE"])  # same definition
    stored = report_measures(trial, report, 1, measures=["SQ_p_BE", "SQ_p_t0_AE"])
    assert get_measures(trial)[1] == pytest.approx({"SQ_p_BE": report.network["SQ_p_BE"],
                                                     "SQ_p_t0_AE": report.network["SQ_p_AE"]}, nan_ok=True)
    assert report_measures(trial, {"E_L2_BE": 1, "SQ_p_BE": 2.5}, 2, measures=["SQ_p_BE"]) == {"SQ_p_BE": 2.5}


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
    raw = loaded.user_attrs
    assert not any(key.startswith("probe:measures:") for key in raw)  # the history is a system attribute
    history = {key: value for key, value in loaded.system_attrs.items() if key.startswith("probe:measures:")}
    json.dumps(history, allow_nan=False)  # the history is strict JSON: no NaN / Infinity tokens
    assert history == {"probe:measures:0": {name: None for name in probe.HEADLINE_NAMES},
                       "probe:measures:1": {"E_L2_BE": "inf", "SQ_p_BE": "-inf", "S_p_BE": 1.5}}
    # the latest values are plain floats, non-finite ones included, so that columns stay numeric
    assert (raw["probe:E_L2_BE"], raw["probe:SQ_p_BE"], raw["probe:S_p_BE"]) == (math.inf, -math.inf, 1.5)
    assert math.isnan(raw["probe:F_p_BE"]) and math.isnan(raw["probe:E_L2_AE"]) and raw["probe:last_step"] == 1
    measures = get_measures(loaded)
    assert all(math.isnan(v) for v in measures[0].values())
    assert measures[1] == {"E_L2_BE": math.inf, "SQ_p_BE": -math.inf, "S_p_BE": 1.5}


def test_latest_values_follow_the_latest_step_of_each_measure():
    trial = optuna.create_study().ask()
    report_measures(trial, {"E_L2_BE": 0.5, "SQ_p_BE": 2.0}, 2)
    report_measures(trial, {"E_L2_BE": 0.1, "SQ_p_BE": 9.0}, 0)  # an earlier step: history only
    assert (trial.user_attrs["probe:last_step"], trial.user_attrs["probe:E_L2_BE"]) == (2, 0.5)
    report_measures(trial, {"E_L2_BE": 0.7}, 5)  # only E_L2_BE at the new latest step
    report_measures(trial, {"E_L2_BE": 0.6, "SQ_p_BE": 3.0}, 4)  # SQ_p_BE's latest step now; not E_L2_BE's
    attrs = trial.user_attrs
    assert (attrs["probe:last_step"], attrs["probe:E_L2_BE"], attrs["probe:SQ_p_BE"]) == (5, 0.7, 3.0)
    assert get_measures(trial) == {0: {"E_L2_BE": 0.1, "SQ_p_BE": 9.0}, 2: {"E_L2_BE": 0.5, "SQ_p_BE": 2.0},
                                   4: {"E_L2_BE": 0.6, "SQ_p_BE": 3.0}, 5: {"E_L2_BE": 0.7}}


def test_measured_trial_carries_the_layout_report_measures_writes():
    trial = measured_trial({1: {"E_L2_BE": 0.5, "SQ_p_BE": math.nan}, 0: {"E_L2_BE": 0.25}},
                           value=2.0, user_attrs={"seed": 3})
    attrs = dict(trial.user_attrs)
    assert math.isnan(attrs.pop("probe:SQ_p_BE"))
    assert attrs == {"seed": 3, "probe:E_L2_BE": 0.5, "probe:last_step": 1}
    assert trial.system_attrs == {"probe:measures:0": {"E_L2_BE": 0.25},
                                  "probe:measures:1": {"E_L2_BE": 0.5, "SQ_p_BE": None}}
    study = optuna.create_study()
    study.add_trials([trial])
    measures = get_measures(study.trials[0])
    assert math.isnan(measures[1].pop("SQ_p_BE"))
    assert measures == {0: {"E_L2_BE": 0.25}, 1: {"E_L2_BE": 0.5}}
    assert study.trials[0].value == 2.0


def test_fixed_trial_keeps_the_measures_to_itself():
    """Re-running the best parameters with FixedTrial: the measures are returned and kept in its user_attrs."""
    report = probe.measure(_model())

    def objective(trial: optuna.trial.BaseTrial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        for epoch in range(2):
            report_measures(trial, report, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 1.0

    fixed = optuna.trial.FixedTrial({"x": 0.5})
    assert objective(fixed) == 1.0
    assert report_measures(fixed, report, 2) == pytest.approx(report.network, nan_ok=True)
    assert list(get_measures(fixed)) == [0, 1, 2]
    assert fixed.user_attrs["probe:E_L2_BE"] == pytest.approx(report.network["E_L2_BE"])
    assert fixed.user_attrs["probe:measures:2"]["E_L2_BE"] == pytest.approx(report.network["E_L2_BE"])


FOREIGN_ATTRS = {
    "probe:measures:best": {"E_L2_BE": 100.0},  # not a step
    "probe:measures:-1": {"E_L2_BE": 100.0},
    "probe:measures:٣": {"E_L2_BE": 100.0},  # Arabic-Indic digit three
    "probe:measures:": 1.0,
    "probe:measures:7": "done",  # not a mapping
    "probe:best": "trial 3",
}


def test_attributes_of_other_code_are_ignored():
    study = optuna.create_study(direction="maximize", pruner=MeasurePruner(n_startup_trials=2, n_min_trials=2))
    for value in (1.0, 2.0):
        trial = study.ask()
        for key, foreign in FOREIGN_ATTRS.items():
            trial.set_user_attr(key, foreign)
        study._storage.set_trial_system_attr(trial._trial_id, "probe:measures:best", {"E_L2_BE": 100.0})
        report_measures(trial, {"E_L2_BE": value}, 0)
        # an older study's layout (history in user attributes), with entries no report_measures wrote
        trial.set_user_attr("probe:measures:1", {"E_L2_BE": "high", "SQ_p_BE": True, "S_p_BE": [1], "F_p_BE": 3})
        study.tell(trial, value)
    done = study.trials[0]
    assert get_measures(done) == {0: {"E_L2_BE": 1.0}, 1: {"F_p_BE": 3.0}}
    assert stored_measure(done, 1, "E_L2_BE") is None and stored_measure(done, 7, "E_L2_BE") is None

    judged = study.ask()
    for key, foreign in FOREIGN_ATTRS.items():
        judged.set_user_attr(key, foreign)
    report_measures(judged, {"E_L2_BE": 1.2}, 0)
    assert judged.should_prune()  # below the median 1.5 of the completed trials
    report_measures(judged, {"E_L2_BE": 2.5}, 0)
    assert not judged.should_prune()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (({"E_L2_BE": 1.0}, -1), {}, r"step=-1"),
        (({"E_L2_BE": 1.0}, 1.0), {}, r"step=1.0"),
        (({"E_L2_BE": 1.0}, True), {}, r"step=True"),
        (({"E_L2": 1.0}, 0), {}, r"measures='E_L2'"),
        (({"E_L2_BE": "high"}, 0), {}, r"'E_L2_BE' must be a number, got 'high'"),
        (({"E_L2_BE": 1.0}, 0), {"measures": ["SQ_p_BE"]}, r"measures='SQ_p_BE' is not in the measures given"),
        (({"E_L2_BE": 1.0}, 0), {"measures": ["ER_L9_t0_BE"]}, r"measures='ER_L9_t0_BE'"),
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


def test_each_latest_value_is_its_measure_s_latest_and_steps_of_any_integer_type_are_taken():
    import numpy as np

    study = optuna.create_study()
    trial = study.ask()
    report_measures(trial, {"E_L2_BE": 1.0, "F_p_BE": 2.0}, np.int64(0))
    report_measures(trial, {"F_p_BE": 3.0}, torch.tensor(1))
    attrs = study.trials[0].user_attrs
    assert attrs["probe:F_p_BE"] == 3.0 and attrs["probe:last_step"] == 1
    assert attrs["probe:E_L2_BE"] == 1.0  # its latest step: 0
    assert get_measures(trial) == {0: {"E_L2_BE": 1.0, "F_p_BE": 2.0}, 1: {"F_p_BE": 3.0}}
    with pytest.raises(ValueError, match="measure 'F_p_BE' must be a number, got '0.5'"):
        report_measures(trial, {"F_p_BE": "0.5"}, 2)
