"""MeasurePruner (percentile rule on one chosen measure) on synthetic studies."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from integrations.optuna import (
    MeasurePruner,
    RecordedRun,
    pruner_settings,
    pruning_reason,
    replay_study,
    report_measures,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_RUNS, N_STEPS = 40, 6


def _runs(kind: str, *, seed: int = 0, measure: str = "E_L2_BE") -> tuple[list[RecordedRun], np.ndarray]:
    """Runs whose final objective is their quality q; the measure is q, -q or noise at every step."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0.0, 1.0, N_RUNS)
    runs = []
    for q in quality:
        values = {"predicts": q, "anti": -q}
        per_step = {
            step: {measure: values[kind] + 0.01 * step if kind in values else float(rng.normal())}
            for step in range(N_STEPS)
        }
        runs.append(RecordedRun(measures=per_step, value=float(q)))
    return runs, quality


def _kept_quality(pruned: list[int | None], quality: np.ndarray, skip: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Quality of the kept and of the pruned runs, after the first ``skip`` (never judged) runs."""
    kept = np.array([p is None for p in pruned])[skip:]
    return quality[skip:][kept], quality[skip:][~kept]


def test_percentile_rule_prunes_trials_the_measure_ranks_low():
    runs, quality = _runs("predicts")
    pruner = MeasurePruner(n_startup_trials=5, n_warmup_steps=1)
    pruned = replay_study(runs, pruner=pruner)
    kept, dropped = _kept_quality(pruned, quality)
    assert pruned[:5] == [None] * 5  # startup trials run to the end
    assert len(dropped) >= 10
    assert {p for p in pruned if p is not None} == {1}  # first judged step after warmup
    # every pruned run was worse than the median of the runs completed before it
    for i, p in enumerate(pruned):
        if p is not None:
            before = [quality[j] for j in range(i) if pruned[j] is None]
            assert quality[i] < np.median(before)
    assert quality.argmax() not in np.flatnonzero([p is not None for p in pruned])
    assert kept.mean() > dropped.mean() + 0.3


def test_percentile_rule_with_wrong_direction_prunes_the_good_ones():
    runs, quality = _runs("anti")
    pruned = replay_study(runs, pruner=MeasurePruner(direction="maximize"))
    kept, dropped = _kept_quality(pruned, quality)
    assert dropped.mean() > kept.mean()
    minimize = replay_study(runs, pruner=MeasurePruner(direction="minimize"))
    kept, dropped = _kept_quality(minimize, quality)
    assert kept.mean() > dropped.mean() + 0.3


def test_hybrid_prunes_when_either_signal_says_so():
    """The measure is good for every run, the objective is poor for some: the objective prunes them."""
    runs = [
        RecordedRun(measures={s: {"E_L2_BE": 1.0} for s in range(3)}, value=q,
                    intermediate_values={s: q for s in range(3)})
        for q in [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
    ]
    median = optuna.pruners.MedianPruner(n_startup_trials=5)
    assert replay_study(runs, pruner=MeasurePruner(wrapped_pruner=median)) == [None] * 5 + [0]
    assert replay_study(runs, pruner=MeasurePruner()) == [None] * 6


def _dip(at: set[int]) -> RecordedRun:
    """A run whose measure is 1 except 0 at the steps ``at``."""
    return RecordedRun(measures={s: {"E_L2_BE": 0.0 if s in at else 1.0} for s in range(6)}, value=1.0)


def test_warmup_interval_and_min_trials():
    runs = [_dip(set()), _dip(set()), _dip({5}), _dip({3, 4}), _dip({1}), _dip({2}), _dip({0, 1, 3, 4})]
    pruner = MeasurePruner(n_startup_trials=2, n_warmup_steps=2, interval_steps=3)
    # judged at steps 2 and 5 only
    assert replay_study(runs, pruner=pruner) == [None, None, 5, None, None, 2, None]
    skipped = [_dip(set()), _dip(set()), RecordedRun(measures={0: {"E_L2_BE": 1.0}, 3: {"E_L2_BE": 0.0}}, value=1.0)]
    # no measure at steps 2: the first step of the interval that has one (3) is judged
    assert replay_study(skipped, pruner=pruner) == [None, None, 3]
    runs, _ = _runs("predicts")
    strict = MeasurePruner(n_startup_trials=1, n_min_trials=N_RUNS)
    assert replay_study(runs, pruner=strict) == [None] * N_RUNS


def test_nan_measure_is_pruned_or_ignored_as_configured():
    good = [RecordedRun(measures={0: {"E_L2_BE": 1.0}}, value=1.0)] * 2
    diverged = RecordedRun(measures={0: {"E_L2_BE": math.nan}}, value=0.0)
    assert replay_study(good + [diverged], pruner=MeasurePruner(n_startup_trials=2)) == [None, None, 0]
    ignore = MeasurePruner(n_startup_trials=2, nan_policy="ignore")
    assert replay_study(good + [diverged], pruner=ignore) == [None, None, None]
    # other trials' NaNs are left out of the percentile: the best finite one still decides
    runs = [diverged._replace(value=1.0)] * 3 + [RecordedRun(measures={0: {"E_L2_BE": 2.0}}, value=1.0),
                                                 RecordedRun(measures={0: {"E_L2_BE": 1.0}}, value=1.0)]
    assert replay_study(runs, pruner=MeasurePruner(n_startup_trials=4, nan_policy="ignore")) == [None] * 4 + [0]


def test_trial_without_measures_is_left_to_the_wrapped_pruner():
    runs = [RecordedRun(measures={}, value=1.0, intermediate_values={0: 1.0})] * 3
    assert replay_study(runs, pruner=MeasurePruner(n_startup_trials=0)) == [None] * 3


def test_aggregate_measure_must_be_stored_for_the_judged_trial():
    pruner = MeasurePruner(measure="ER_L2_t6_BE", n_startup_trials=0)
    study = optuna.create_study(pruner=pruner)
    study.enqueue_trial({})
    done = study.ask()
    report_measures(done, {"ER_L2_t6_BE": 1.0}, 0)
    study.tell(done, 1.0)
    trial = study.ask()
    report_measures(trial, {"E_L2_BE": 1.0}, 0)
    with pytest.raises(ValueError, match=r"'ER_L2_t6_BE' was not stored at step 0 of trial 1.*measures="):
        trial.should_prune()


def test_multi_objective_study_is_refused():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    with pytest.raises(ValueError, match="multi-objective"):
        MeasurePruner().prune(study, study.trials[trial.number])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"measure": "E_L3_BE"}, r"measure='E_L3_BE'"),
        ({"measure": "ER_L2_t8_BE"}, r"measure='ER_L2_t8_BE'"),
        ({"measure": "QS_p_t0_BE"}, r"measure='QS_p_t0_BE'"),
        ({"percentile": 101.0}, r"percentile=101.0"),
        ({"percentile": -1}, r"percentile=-1"),
        ({"direction": "up"}, r"direction='up'"),
        ({"n_startup_trials": -1}, r"n_startup_trials=-1"),
        ({"n_warmup_steps": -1}, r"n_warmup_steps=-1"),
        ({"interval_steps": 0}, r"interval_steps=0"),
        ({"n_min_trials": 0}, r"n_min_trials=0"),
        ({"nan_policy": "drop"}, r"nan_policy='drop'"),
        ({"wrapped_pruner": "median"}, r"wrapped_pruner"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MeasurePruner(**kwargs)


def test_valid_measure_names():
    for name in ("E_L2_BE", "SQ_p_AE", "F_p_BE", "ER_L2_t6_BE", "spec_wp_t7_AE", "fro_wmean_t0_BE"):
        assert MeasurePruner(measure=name).measure == name


def test_replay_tells_completed_values_and_marks_pruned_trials():
    runs, _ = _runs("predicts")
    pruner = MeasurePruner(n_startup_trials=5)
    pruned = replay_study(runs[:12], pruner=pruner)
    assert pruned[:5] == [None] * 5 and any(p is not None for p in pruned)
    # a second replay of the same runs is independent (fresh study each call)
    assert replay_study(runs[:12], pruner=pruner) == pruned


def test_replay_with_a_fixed_study_name_is_repeatable_for_hyperband():
    rng = np.random.default_rng(7)
    runs = [
        RecordedRun(measures={}, value=float(q), intermediate_values={s: float(q) * (s + 1) / 9 for s in range(9)})
        for q in rng.uniform(0.0, 1.0, 30)
    ]
    def run(name):
        return replay_study(runs, pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9), study_name=name)
    first = run("family-order-0")
    assert run("family-order-0") == first
    assert any(p is not None for p in first)


def test_pruned_trials_record_why_and_the_study_records_the_settings(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    pruner = MeasurePruner(measure="F_p_BE", percentile=50.0, n_startup_trials=2, n_warmup_steps=1,
                           wrapped_pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    study = optuna.create_study(direction="maximize", storage=storage, pruner=pruner)
    for measure, objective in [(3.0, 0.9), (1.0, 0.9), (0.5, 0.9), (3.0, 0.1)]:
        trial = study.ask()
        for step in range(3):
            report_measures(trial, {"F_p_BE": measure}, step)
            trial.report(objective, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, objective)
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert pruning_reason(trials[0]) is None
    # F_p_BE 0.5 < median(3.0, 1.0) = 2.0 at the first judged step
    assert pruning_reason(trials[2]) == {"rule": "percentile", "signal": "F_p_BE", "step": 1, "value": 0.5,
                                         "threshold": 2.0, "higher_is_better": True, "percentile": 50.0}
    # a good measure, a poor objective: the wrapped ThresholdPruner prunes at step 0 (no warm-up of its own)
    assert pruning_reason(trials[3]) == {"rule": "wrapped", "signal": "ThresholdPruner", "step": 0}
    settings = pruner_settings(optuna.load_study(study_name=study.study_name, storage=storage))
    assert settings["class"] == "MeasurePruner" and settings["measure"] == "F_p_BE"
    assert settings["wrapped_pruner"] == "ThresholdPruner" and settings["n_warmup_steps"] == 1
