"""LearnedMeasurePruner on constructed studies whose right answer is known: trust earned from
pruned (partial) trials, the promotion rule at the rungs, trust carried with ``prior=``, and
the bounded chance of trusting a useless signal across looks."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from integrations.optuna import LearnedMeasurePruner, measured_trial, pruning_reason, report_measures
from integrations.optuna._trust import look_size

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _finished(study: optuna.Study, quality: float, *, last: int, measure: float | None = None, complete: bool) -> None:
    """Add a finished trial: objective ``quality + step / 100`` at steps 0..``last`` (final
    value ``quality`` when ``complete``), and ``F_p_BE = measure`` at step 1 when given."""
    measures = {1: {"F_p_BE": measure}} if measure is not None else {}
    study.add_trial(measured_trial(
        measures, state=TrialState.COMPLETE if complete else TrialState.PRUNED,
        value=quality if complete else None,
        intermediate_values={s: quality + s / 100 for s in range(last + 1)},
    ))


def _judge(study: optuna.Study, *, step: int, measure: float | None = None, objective: float | None = None) -> bool:
    """A new trial with values up to ``step`` (the same ones at every step): does the pruner prune it?"""
    trial = study.ask()
    for s in range(step + 1):
        if measure is not None:
            report_measures(trial, {"F_p_BE": measure}, s)
        if objective is not None:
            trial.report(objective, s)
    return trial.should_prune()


def _partial_study(sign: float, **kwargs) -> optuna.Study:
    """8 completed trials that stored no measure (their objective ranks the final value), and
    12 trials pruned at step 3 whose step-1 ``F_p_BE`` ranks their step-3 objective with ``sign``."""
    pruner = LearnedMeasurePruner(measures=["F_p_BE"], **kwargs)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for q in np.linspace(0.5, 0.9, 8):
        _finished(study, float(q), last=9, complete=True)
    for q in np.linspace(0.1, 0.6, 12):
        _finished(study, float(q), last=3, measure=sign * float(q), complete=False)
    return study


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_trust_comes_from_pruned_trials_through_the_chain(sign):
    study = _partial_study(sign)
    pruner: LearnedMeasurePruner = study.pruner
    at_three = {s.name: s for s in pruner.trusted(study, 3)}
    # the objective at step 3 ranks the final value over the 8 completed trials (the last link)
    assert at_three["objective"].horizon is None and at_three["objective"].n == 8
    # the measure: no completed trial carries it; at horizon 3 the look takes the first 18 of
    # the 20 trials (grid 8, 12, 18), 10 of them pruned ones with the measure, ranked against
    # their step-3 objective, which is trusted in turn
    measure = next(s for s in pruner.trusted(study, 1) if s.name == "F_p_BE")
    assert (measure.horizon, measure.n, measure.higher_is_better) == (3, 10, sign > 0)
    assert measure.rho == pytest.approx(sign)


def test_no_chain_without_the_last_link():
    """The same pruned trials, but the completed trials' objective does not rank their final
    value (reversed): the step-1 measure ranks only an untrusted intermediate value."""
    pruner = LearnedMeasurePruner(measures=["F_p_BE"])
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for q in np.linspace(0.5, 0.9, 8):
        study.add_trial(measured_trial({}, state=TrialState.COMPLETE, value=1.4 - float(q),
                                       intermediate_values={s: float(q) for s in range(10)}))
    for q in np.linspace(0.1, 0.6, 12):
        _finished(study, float(q), last=3, measure=float(q), complete=False)
    assert pruner.trusted(study, 3) == [] and pruner.trusted(study, 1) == []


def test_promotion_rule_keeps_the_top_third_at_rungs_only():
    study = _partial_study(1.0)  # F_p_BE trusted at step 1, higher is better; 12 values at step 1: 0.1 … 0.6
    population = sorted(float(q) for q in np.linspace(0.1, 0.6, 12))
    # 13 with the judged trial: ⌈13 / 3⌉ = 5 run on. The 5th best of the others is population[-5].
    keep_line = population[-5]
    assert not _judge(study, step=1, measure=keep_line + 1e-9)  # 5th best of 13: promoted
    assert _judge(study, step=1, measure=keep_line - 1e-9)  # 6th best: pruned
    reason = pruning_reason(study.trials[-1])
    assert reason["rule"] == "learned" and reason["signal"] == "F_p_BE" and (reason["keep"], reason["of"]) == (5, 13)
    assert reason["horizon"] == 3 and reason["source"] == "study" and reason["threshold"] == pytest.approx(keep_line)
    # step 2 is no rung (rungs 1, 3, 9 with warm-up 1 and η = 3): nothing is judged by the measure there
    pruner = LearnedMeasurePruner(measures=["F_p_BE"])
    assert not pruner._is_rung(2) and pruner._is_rung(3) and pruner._is_rung(9) and not pruner._is_rung(6)
    # η = 2 keeps the top half: ⌈13 / 2⌉ = 7
    study = _partial_study(1.0, reduction_factor=2)
    assert not _judge(study, step=1, measure=population[-7] + 1e-9)
    assert _judge(study, step=1, measure=population[-7] - 1e-9)
    # keep=0.5 keeps the top half at η = 3's rungs (1, 3, 9): ⌈13 · 0.5⌉ = 7
    study = _partial_study(1.0, keep=0.5)
    assert not study.pruner._is_rung(2) and study.pruner._is_rung(3)
    assert not _judge(study, step=1, measure=population[-7] + 1e-9)
    assert _judge(study, step=1, measure=population[-7] - 1e-9)
    assert (pruning_reason(study.trials[-1])["keep"], pruning_reason(study.trials[-1])["of"]) == (7, 13)


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5, True, "half"])
def test_keep_must_be_a_share(keep):
    with pytest.raises(ValueError, match="keep="):
        LearnedMeasurePruner(keep=keep)


def test_prior_trust_is_used_then_refuted_or_confirmed(tmp_path):
    storage = f"sqlite:///{tmp_path / 'earlier.db'}"
    earlier = optuna.create_study(direction="maximize", storage=storage, study_name="earlier")
    for q in np.linspace(0.1, 0.9, 20):  # there F_p_BE ranked the final value; the early objective misled
        earlier.add_trial(measured_trial({1: {"F_p_BE": float(q)}}, state=TrialState.COMPLETE, value=float(q),
                                         intermediate_values={s: 1.0 - float(q) for s in range(10)}))
    prior = optuna.load_study(study_name="earlier", storage=storage)

    def fresh(sign: float, n: int) -> optuna.Study:
        study = optuna.create_study(direction="maximize",
                                    pruner=LearnedMeasurePruner(measures=["F_p_BE"], prior=prior, n_startup_trials=5))
        for q in np.linspace(0.2, 0.8, n):
            _finished(study, float(q), last=9, measure=sign * float(q), complete=True)
        return study

    # five trials of its own: too few to test anything, the prior's F_p_BE (higher is better) judges
    study = fresh(1.0, 5)
    trusted = study.pruner.trusted(study, 1)
    assert [(s.name, s.source, s.higher_is_better) for s in trusted] == [("F_p_BE", "prior", True)]
    assert _judge(study, step=1, measure=0.0, objective=0.9)  # low measure: pruned at rung 1 though its objective is high
    assert pruning_reason(study.trials[-1])["source"] == "prior"
    # the new study's own trials point the other way: the prior's sign is refuted once
    # n_trust_trials (8) finished trials show it, and the study's own test learns the other sign
    study = fresh(-1.0, 8)
    assert {(s.source, s.higher_is_better) for s in study.pruner.trusted(study, 1) if s.name == "F_p_BE"} == {
        ("study", False)}
    # they agree: confirmed by the study's own test
    study = fresh(1.0, 12)
    assert ("F_p_BE", "study") in {(s.name, s.source) for s in study.pruner.trusted(study, 1)}
    with pytest.raises(ValueError, match="prior="):
        LearnedMeasurePruner(prior="earlier")  # type: ignore[arg-type]


def test_look_sizes_are_a_fixed_grid():
    assert look_size(7, 8) == (0, 0)
    assert [look_size(n, 8) for n in (8, 11, 12, 17, 18, 26, 27, 41)] == [
        (8, 1), (8, 1), (12, 2), (12, 2), (18, 3), (18, 3), (27, 4), (41, 5)]


def test_a_useless_signal_is_rarely_trusted_across_looks():
    """300 studies of 41 completed trials whose 8 measures and objective are noise at every
    step: the share of studies that trust anything at step 1 at *any* look (grid sizes 8,
    12, 18, 27, 41) stays under 1 − confidence = 5 % (plus three Monte-Carlo standard errors)."""
    rng = np.random.default_rng(0)
    names = ["E_L2_BE", "SQ_p_BE", "S_p_BE", "F_p_BE", "E_L2_AE", "SQ_p_AE", "S_p_AE", "F_p_AE"]
    studies, ever = 300, 0
    for _ in range(studies):
        pruner = LearnedMeasurePruner()
        study = optuna.create_study(direction="maximize", pruner=pruner)
        trusted = False
        for number in range(41):
            study.add_trial(measured_trial(
                {1: dict(zip(names, rng.normal(size=8)))}, state=TrialState.COMPLETE, value=float(rng.normal()),
                intermediate_values={1: float(rng.normal())}))
            if number + 1 in (8, 12, 18, 27, 41):
                trusted = trusted or bool(pruner.trusted(study, 1))
        ever += trusted
    assert ever / studies <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / studies)


def test_the_reason_is_readable_in_the_dashboard_columns():
    study = _partial_study(1.0)
    assert _judge(study, step=1, measure=0.0)
    attrs = study.trials[-1].user_attrs
    reason = pruning_reason(study.trials[-1])
    assert attrs["probe:pruned_reason"] == (
        f"step 1, learned rule on F_p_BE: 0 < {reason['threshold']:.4g} (outside the top 5 of 13; trusted by this "
        f"study: rho +1.00 with the objective at step 3 over 10 trials)")


def test_the_reason_is_the_trials_note_in_optuna_dashboard():
    from optuna_dashboard._note import get_note_from_system_attrs

    study = _partial_study(1.0)
    assert _judge(study, step=1, measure=0.0)
    trial = study.trials[-1]
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), trial._trial_id)
    assert note["body"] == f"**Pruned** by the measure pruner: {trial.user_attrs['probe:pruned_reason']}."


def test_the_pruners_settings_are_the_studys_note_in_optuna_dashboard():
    from optuna_dashboard._note import get_note_from_system_attrs

    study = _partial_study(1.0)
    _judge(study, step=1, measure=0.0)
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), None)
    assert note["body"].startswith("**Pruner**: `LearnedMeasurePruner(") and "trust_threshold=0.2" in note["body"]
