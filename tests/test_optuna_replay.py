"""replay_study(study=...): recorded runs replayed into a study the caller owns, on a real storage."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from integrations.optuna import MeasurePruner, RecordedRun, get_measures, replay_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(quality: float) -> RecordedRun:
    return RecordedRun(measures={epoch: {"E_L2_BE": quality + epoch} for epoch in range(3)}, value=quality)


def test_replay_into_a_stored_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'replay.db'}"
    study = optuna.create_study(study_name="replay", storage=storage, direction="maximize",
                                pruner=MeasurePruner(n_startup_trials=3))
    qualities = [5.0, 6.0, 7.0, 1.0, 8.0, 2.0]
    # the first three complete (start-up); 1 and 2 fall below the median of the completed ones at epoch 0
    assert replay_study([_run(q) for q in qualities], study=study) == [None, None, None, 0, None, 0]

    trials = optuna.load_study(study_name="replay", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED, TrialState.COMPLETE,
                                                                     TrialState.PRUNED]
    assert [t.value for t in trials if t.state == TrialState.COMPLETE] == [5.0, 6.0, 7.0, 8.0]
    assert [list(get_measures(t)) for t in trials] == [[0, 1, 2]] * 3 + [[0], [0, 1, 2], [0]]
    assert study.best_value == 8.0


def test_replay_needs_exactly_one_of_pruner_and_study():
    runs = [_run(1.0)]
    with pytest.raises(ValueError, match="needs pruner="):
        replay_study(runs)
    study = optuna.create_study(study_name="mine")
    with pytest.raises(ValueError, match="study='mine': leave pruner and study_name unset"):
        replay_study(runs, study=study, pruner=MeasurePruner())
    with pytest.raises(ValueError, match="leave pruner and study_name unset"):
        replay_study(runs, study=study, study_name="other")
