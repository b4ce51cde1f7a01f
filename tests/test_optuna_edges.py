"""The learned pruner in setups users run: step numberings, undefined AE values, one pruner for
several studies, threads, pickling, wrappers and notes (constructed studies with a known answer)."""

from __future__ import annotations

import gc
import math
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import optuna
import pytest

from integrations.optuna import LearnedMeasurePruner, MeasurePruner, pruner_settings, pruning_reason, report_measures
from integrations.optuna._measures import _default_names

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(pruner: optuna.pruners.BasePruner, steps: list[int], *, trials: int = 40, seed: int = 0,
           undefined_ae: bool = False) -> optuna.Study:
    """A study whose objective's curve and ``F_p_BE`` rank the final value ``q``; with
    ``undefined_ae``, ``E_L2_AE`` ranks it too but is NaN at the first two steps of every third trial."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    rng = np.random.default_rng(seed)
    for number in range(trials):
        trial = study.ask()
        q = float(rng.uniform())
        trial.set_user_attr("q", q)
        for k, step in enumerate(steps):
            measures = {"F_p_BE": q + 0.01 * float(rng.normal())}
            if undefined_ae:
                measures = {"F_p_BE": float(rng.normal()), "E_L2_AE": math.nan if number % 3 == 0 and k < 2 else q}
            report_measures(trial, measures, step)
            trial.report(0.1 + 1e-3 * float(rng.normal()) if undefined_ae else q * (k + 1) / len(steps), step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, q)
    return study


def _pruned_at(study: optuna.Study) -> list[int]:
    return sorted({pruning_reason(t)["step"] for t in study.trials if t.state == optuna.trial.TrialState.PRUNED})


@pytest.mark.parametrize("steps, judged", [(list(range(10)), [1, 3]), (list(range(0, 20, 2)), [2, 4]),
                                           ([100 * k + 99 for k in range(10)], [99, 299])])
def test_steps_that_skip_the_rungs_are_judged_at_the_first_step_past_each(steps, judged):
    study = _study(LearnedMeasurePruner(measures=["F_p_BE"]), steps)
    assert _pruned_at(study) == judged
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials) >= 15


def test_an_undefined_ae_measure_prunes_nothing_and_a_nan_be_measure_still_does():
    study = _study(LearnedMeasurePruner(measures=["F_p_BE", "E_L2_AE"]), list(range(6)), undefined_ae=True)
    assert "E_L2_AE" in [s.name for s in study.pruner.trusted(study, 1)]
    assert not [t for t in study.trials if (pruning_reason(t) or {}).get("rule") == "nan"]
    pruner = MeasurePruner(measure="E_L2_AE", n_startup_trials=1)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0}))
    for be, pruned in ((1.0, False), (math.nan, True)):  # NaN AE beside a finite BE: undefined; beside NaN BE: diverged
        trial = study.ask()
        report_measures(trial, {"E_L2_BE": be, "E_L2_AE": math.nan}, 0)
        assert trial.should_prune() is pruned
        study.tell(trial, state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.FAIL)


def test_one_pruner_for_many_studies_reads_each_study_s_own_trials():
    """Caches are per storage object (weakly held): a new storage reusing a freed one's id starts afresh."""
    pruner = LearnedMeasurePruner(measures=["F_p_BE"])
    for seed in range(12):
        study = _study(pruner, [0, 1], trials=6, seed=seed)
        read = [float(h.values[0][0]) for h in pruner._finished(study)]
        stored = [t.system_attrs["probe:measures:0"]["F_p_BE"] for t in study.trials]
        assert read == stored and pruner_settings(study) is not None
        del study
        gc.collect()
        assert not pruner._studies  # its state went with the storage


def test_threads_get_one_answer_and_the_pruner_pickles():
    study = _study(LearnedMeasurePruner(measures=["F_p_BE"]), list(range(4)), trials=20)
    pruner = study.pruner
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda step: tuple(s.name for s in pruner.trusted(study, step)), [1] * 16))
    assert len(set(answers)) == 1 and answers[0]
    copy = pickle.loads(pickle.dumps(pruner))  # a trial sent to spawned processes carries its study's pruner
    assert [s.name for s in copy.trusted(study, 1)] == list(answers[0])


def test_a_wrapped_pruner_s_aggregate_is_stored_by_default_and_a_user_s_trial_note_is_kept():
    pytest.importorskip("optuna_dashboard")
    from optuna_dashboard import save_note
    from optuna_dashboard._note import get_note_from_system_attrs

    inner = MeasurePruner(measure="ER_L2_t6_BE", n_startup_trials=1)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.PatientPruner(inner, patience=0))
    assert "ER_L2_t6_BE" in _default_names(study.ask())
    study = optuna.create_study(direction="maximize", pruner=MeasurePruner(measure="F_p_BE", n_startup_trials=1))
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0},
                                              system_attrs={"probe:measures:0": {"F_p_BE": 0.9}}))
    trial = study.ask()
    save_note(trial, "my note: an lr outlier")
    report_measures(trial, {"F_p_BE": 0.1}, 0)
    assert trial.should_prune()
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), trial._trial_id)
    assert note["body"].startswith("**Pruned** by the measure pruner: step 0") and note["body"].endswith("my note: an lr outlier")
