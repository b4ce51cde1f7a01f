"""LearnedMeasurePruner (the recommended default) on synthetic Optuna studies: what it trusts,
what it abstains on, its fallback on the objective, NaNs, and the record of its decisions."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from integrations.optuna import (
    LearnedMeasurePruner,
    RecordedRun,
    pruner_settings,
    pruning_reason,
    replay_study,
)
from probe import HEADLINE_NAMES

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_RUNS, N_STEPS = 60, 5


def _runs(signal: dict[str, str], *, objective: str | None = None, seed: int = 0) -> tuple[list[RecordedRun], np.ndarray]:
    """Runs whose final value is their quality q; each measure is ``"q"``, ``"-q"``, ``"noise"``
    or ``"nan"`` at every step (with a small trend); the reported objective likewise, if given."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0.0, 1.0, N_RUNS)

    def value(kind: str, q: float, step: int) -> float:
        return {"q": q + 0.01 * step, "-q": -q - 0.01 * step, "noise": float(rng.normal()), "nan": math.nan}[kind]

    runs = [
        RecordedRun(
            measures={s: {name: value(kind, q, s) for name, kind in signal.items()} for s in range(N_STEPS)},
            value=float(q),
            intermediate_values={} if objective is None else {s: value(objective, q, s) for s in range(N_STEPS)},
        )
        for q in quality
    ]
    return runs, quality


def _study(runs: list[RecordedRun], pruner: LearnedMeasurePruner, *, direction: str = "maximize",
           storage: str | None = None) -> optuna.Study:
    """Replay ``runs`` as an Optuna study (as an objective would: measures, report, should_prune)."""
    from integrations.optuna import report_measures

    study = optuna.create_study(direction=direction, pruner=pruner, storage=storage)
    for run in runs:
        trial = study.ask()
        for step in range(N_STEPS):
            report_measures(trial, run.measures[step], step)
            if step in run.intermediate_values:
                trial.report(run.intermediate_values[step], step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, run.value)
    return study


def _pruned(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]


def _completed_before(study: optuna.Study, number: int) -> int:
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials[:number])


NOISE = {name: "noise" for name in HEADLINE_NAMES}


def test_prunes_on_the_measure_that_predicts_among_noise():
    runs, quality = _runs({**NOISE, "F_p_BE": "q"})
    study = _study(runs, LearnedMeasurePruner())
    pruned = _pruned(study)
    assert len(pruned) >= 8
    reasons = [pruning_reason(t) for t in pruned]
    assert {r["signal"] for r in reasons} == {"F_p_BE"} and {r["rule"] for r in reasons} == {"learned"}
    for reason in reasons:
        assert reason["higher_is_better"] is True and reason["rho"] > 0.9 and reason["n"] >= 8
        assert reason["value"] < reason["threshold"]
        assert reason["step"] in (1, 3)  # the rungs: warm-up 1, η = 3
    # never before n_trust_trials (8) finished trials, and never the best run
    assert min(t.number for t in pruned) >= 8
    assert quality.argmax() not in {t.number for t in pruned}
    kept = [quality[t.number] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert np.mean(kept) > np.mean([quality[t.number] for t in pruned]) + 0.3


def test_learns_an_inverted_sign_and_reads_it_against_a_minimized_objective():
    runs, _ = _runs({**NOISE, "SQ_p_BE": "-q"})
    study = _study(runs, LearnedMeasurePruner())
    reasons = [pruning_reason(t) for t in _pruned(study)]
    assert len(reasons) >= 8 and {(r["signal"], r["higher_is_better"]) for r in reasons} == {("SQ_p_BE", False)}
    assert all(r["rho"] < -0.9 and r["value"] > r["threshold"] for r in reasons)
    # objective = loss = 1 - q: SQ_p_BE = -q rises with the loss, so lower is still better
    losses = [run._replace(value=1.0 - run.value) for run in runs]
    reasons = [pruning_reason(t) for t in _pruned(_study(losses, LearnedMeasurePruner(), direction="minimize"))]
    assert len(reasons) >= 8 and {(r["signal"], r["higher_is_better"]) for r in reasons} == {("SQ_p_BE", False)}
    assert all(r["rho"] > 0.9 for r in reasons)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_abstains_when_every_measure_is_noise(seed):
    """Eight noise candidates, 60 trials, every step: Holm keeps chance trust away."""
    runs, _ = _runs(NOISE, seed=seed)
    pruner = LearnedMeasurePruner()
    study = _study(runs, pruner)
    assert _pruned(study) == []
    assert all(pruner.trusted(study, step) == [] for step in range(N_STEPS))


def test_falls_back_on_the_objective_when_no_measure_is_trusted():
    runs, _ = _runs(NOISE, objective="q")
    study = _study(runs, LearnedMeasurePruner(percentile=50.0, n_startup_trials=5, n_trust_trials=10))
    reasons = {t.number: pruning_reason(t) for t in _pruned(study)}
    # with fewer than 10 completed trials nothing can be trusted: the percentile rule on the objective
    early = [r for number, r in reasons.items() if _completed_before(study, number) < 10]
    assert early and all(r["rule"] == "fallback" and r["signal"] == "objective" for r in early)
    # later the objective earns trust itself; noise measures never do
    assert {r["signal"] for r in reasons.values()} == {"objective"}
    assert any(r["rule"] == "learned" for r in reasons.values())
    # the fallback is optuna's PercentilePruner on the reported values: same decisions while untrusted
    untrusted = replay_study(runs[:12], pruner=LearnedMeasurePruner(percentile=50.0, n_startup_trials=5))
    percentile = replay_study(runs[:12], pruner=optuna.pruners.PercentilePruner(50.0, n_startup_trials=5, n_warmup_steps=1))
    assert untrusted == percentile and any(p is not None for p in percentile)


def test_the_fallback_stands_down_where_the_objective_is_refuted():
    """The reported values rank the runs backwards: once 10 completed trials show it, the
    objective no longer prunes (and noise measures never do)."""
    runs, _ = _runs(NOISE, objective="-q")
    study = _study(runs, LearnedMeasurePruner(percentile=75.0, n_trust_trials=10))
    pruned = _pruned(study)
    assert pruned and all(pruning_reason(t)["rule"] == "fallback" for t in pruned)
    assert max(_completed_before(study, t.number) for t in pruned) < 10


def test_by_default_nothing_prunes_untrusted_not_even_the_objective():
    """A plateau: the early objective ranks the runs backwards (the best leave it last). The
    default waits for trust and never prunes on it; the opt-in fallback prunes on it at once."""
    runs, _ = _runs(NOISE, objective="-q")
    study = _study(runs, LearnedMeasurePruner())
    assert _pruned(study) == [] and study.best_value == max(run.value for run in runs)
    with_fallback = _study(runs, LearnedMeasurePruner(percentile=75.0))
    assert any(pruning_reason(t)["rule"] == "fallback" for t in _pruned(with_fallback))
    # a constructed plateau: every early value tied but the best run's, below the others
    plateau = [run._replace(intermediate_values={s: (0.2 if run.value == max(r.value for r in runs) else 0.35)
                                                 for s in run.intermediate_values}) for run in runs]
    assert _pruned(_study(plateau, LearnedMeasurePruner())) == []


def test_a_trusted_measure_beats_a_misleading_objective():
    """The objective's early values point the wrong way (negative rho): never trusted, and
    once the measure is trusted it judges instead of the fallback."""
    runs, _ = _runs({**NOISE, "S_p_BE": "q"}, objective="-q")
    reasons = [pruning_reason(t) for t in _pruned(_study(runs, LearnedMeasurePruner()))]
    late = [r for r in reasons if r["rule"] != "fallback"]
    assert late and {r["signal"] for r in late} == {"S_p_BE"}


def test_nan_measures_are_left_out_and_an_all_nan_trial_is_pruned():
    # AE measures NaN everywhere (EVBMF kept nothing): never trusted, never a reason to prune
    runs, _ = _runs({**NOISE, "E_L2_AE": "nan", "F_p_AE": "nan", "F_p_BE": "q"})
    study = _study(runs, LearnedMeasurePruner())
    reasons = [pruning_reason(t) for t in _pruned(study)]
    assert len(reasons) >= 8 and {r["signal"] for r in reasons} == {"F_p_BE"}
    # a diverged trial (every measure NaN) after trust is established: pruned, reason "nan"
    diverged = RecordedRun(measures={s: {name: math.nan for name in HEADLINE_NAMES} for s in range(N_STEPS)}, value=0.0)
    study = _study([*runs[:30], diverged], LearnedMeasurePruner())
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED
    assert pruning_reason(study.trials[-1]) == {"rule": "nan", "signal": "F_p_BE", "step": 1, "value": None}
    study = _study([*runs[:30], diverged], LearnedMeasurePruner(nan_policy="ignore"))
    assert study.trials[-1].state == optuna.trial.TrialState.COMPLETE
    # the predictive measure NaN for a third of the runs: still trusted on the others
    holes = [run._replace(measures={s: {**m, "F_p_BE": math.nan} for s, m in run.measures.items()}) if i % 3 == 0 else run
             for i, run in enumerate(runs)]
    pruner = LearnedMeasurePruner(nan_policy="ignore")
    study = _study(holes, pruner)
    assert [s.name for s in pruner.trusted(study, 1)] == ["F_p_BE"]
    assert all(t.number % 3 for t in _pruned(study))  # runs without the measure are never judged by it


def test_records_why_and_the_settings_in_sqlite(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    runs, _ = _runs({**NOISE, "F_p_BE": "q"})
    study = _study(runs[:25], LearnedMeasurePruner(percentile=40.0), storage=storage)
    loaded = optuna.load_study(study_name=study.study_name, storage=storage)
    reasons = [pruning_reason(t) for t in loaded.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert any(reason["rule"] == "learned" for reason in reasons)
    for reason in reasons:
        if reason["rule"] == "learned":  # the promotion rule on the trusted measure
            assert set(reason) == {"rule", "signal", "step", "value", "threshold", "higher_is_better", "keep", "of",
                                   "rho", "n", "horizon", "source"}
            assert reason["signal"] == "F_p_BE" and reason["source"] == "study" and reason["keep"] <= reason["of"]
        else:  # the percentile fallback on the objective: no rho, no n
            assert set(reason) == {"rule", "signal", "step", "value", "threshold", "higher_is_better", "percentile"}
            assert reason["rule"] == "fallback" and reason["percentile"] == 40.0
    assert all(pruning_reason(t) is None for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE)
    settings = pruner_settings(loaded)
    assert settings["class"] == "LearnedMeasurePruner" and settings["measures"] == list(HEADLINE_NAMES)
    assert settings["percentile"] == 40.0 and settings["objective"] is True and settings["reduction_factor"] == 3


def test_multi_objective_study_is_refused():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    with pytest.raises(ValueError, match="LearnedMeasurePruner.*multi-objective"):
        LearnedMeasurePruner().prune(study, study.trials[trial.number])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"measures": "F_p_BE"}, r"measures='F_p_BE'"),
        ({"measures": ["F_p_BE", "E_L3_BE"]}, r"E_L3_BE"),
        ({"measures": ["F_p_BE", "F_p_BE"]}, r"repeat.*measures="),
        ({"measures": [], "objective": False}, r"nothing to judge"),
        ({"percentile": 101.0}, r"percentile=101.0"),
        ({"trust_threshold": 1.0}, r"trust_threshold=1.0"),
        ({"trust_threshold": -0.1}, r"trust_threshold=-0.1"),
        ({"confidence": 1.0}, r"confidence=1.0"),
        ({"n_trust_trials": 3}, r"n_trust_trials=3"),
        ({"n_startup_trials": -1}, r"n_startup_trials=-1"),
        ({"n_warmup_steps": 1.5}, r"n_warmup_steps=1.5"),
        ({"interval_steps": 0}, r"interval_steps=0"),
        ({"nan_policy": "drop"}, r"nan_policy='drop'"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnedMeasurePruner(**kwargs)
