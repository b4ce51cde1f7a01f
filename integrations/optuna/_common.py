"""What the measure pruners share: argument checks, the judged step, and the record of why a
trial was pruned (trial system attribute ``probe:pruned``) and of the pruner's settings (study
system attribute ``probe:pruner``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

PRUNED_KEY = "probe:pruned"
"""Trial system attribute: why the trial was pruned (``{"rule", "signal", "value", "threshold", "step", …}``)."""
READABLE_KEY = "probe:pruned_reason"
"""Trial user attribute: the same reason as one readable sentence (a column in optuna-dashboard)."""
SETTINGS_KEY = "probe:pruner"
"""Study system attribute: the measure pruner's class and arguments."""
NAN_POLICIES = ("prune", "ignore")


def check_int(name: str, value: int, minimum: int) -> None:
    """``ValueError`` naming the argument unless ``value`` is an integer ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """``ValueError`` naming the argument unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {name}={value!r}")


def check_single_objective(study: optuna.study.Study, pruner: object) -> None:
    """Refuse multi-objective studies (Optuna cannot prune them)."""
    if len(study.directions) > 1:
        raise ValueError(
            f"{type(pruner).__name__} cannot prune multi-objective study {study.study_name!r} "
            f"({len(study.directions)} directions): Optuna's pruning supports single-objective studies only"
        )


def undefined_not_diverged(name: str, value: float, measures: Mapping[str, float]) -> bool:
    """Whether the NaN ``value`` of measure ``name`` means "undefined", not "diverged": an AE
    measure (EVBMF kept too little: weights still noise-like) beside a finite BE measure of
    the same step (NaN/Inf weights make every measure NaN)."""
    return (name.endswith("_AE") and math.isnan(value)
            and any(math.isfinite(v) for k, v in measures.items() if not k.endswith("_AE")))


def step_to_judge(
    study: optuna.study.Study, steps: Iterable[int], *, n_startup_trials: int, n_warmup_steps: int, interval_steps: int
) -> tuple[int, list[FrozenTrial]] | None:
    """The trial's latest step and the study's completed trials, when the pruner judges now, else ``None``.

    As Optuna's pruners: not before ``n_warmup_steps``, once per ``interval_steps`` (the first
    step of the trial in each interval), and only after ``n_startup_trials`` (at least one)
    trials have completed.
    """
    steps = set(steps)
    if not steps:
        return None
    step = max(steps)
    lowest = (step - n_warmup_steps) // interval_steps * interval_steps + n_warmup_steps
    previous = max(steps - {step}, default=-1)
    if step < n_warmup_steps or previous >= lowest:
        return None
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < max(1, n_startup_trials):
        return None
    return step, completed


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def record_pruned(study: optuna.study.Study, trial: FrozenTrial, reason: Mapping[str, Any]) -> None:
    """Store why ``trial`` is pruned: the record in its system attribute ``probe:pruned`` (NaN as
    ``None``), :func:`describe_reason`'s sentence in its user attribute ``probe:pruned_reason`` and,
    where optuna-dashboard is installed, at the top of the trial's note (shown at the top of its
    page; a note someone wrote stays, below it)."""
    sentence = describe_reason(reason)
    study._storage.set_trial_system_attr(trial._trial_id, PRUNED_KEY, {k: _json_safe(v) for k, v in reason.items()})
    study._storage.set_trial_user_attr(trial._trial_id, READABLE_KEY, sentence)
    _dashboard_note(study, trial, f"**Pruned** by the measure pruner: {sentence}.")


def _dashboard_note(study: optuna.study.Study, trial: FrozenTrial | None, body: str, *, only_if_empty: bool = False) -> None:
    """Put ``body`` (Markdown) in the optuna-dashboard note of ``trial``, or of the study, if
    optuna-dashboard is installed; else nothing. A note already there is kept: below ``body``,
    or alone with ``only_if_empty``."""
    try:
        from optuna_dashboard._note import get_note_from_system_attrs, save_note_with_version
    except ImportError:
        return
    trial_id = None if trial is None else trial._trial_id
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), trial_id)
    if note["version"] and (only_if_empty or note["body"].startswith(body)):
        return
    written = f"{body}\n\n{note['body']}" if note["body"] else body
    save_note_with_version(study._storage, study._study_id, trial_id, note["version"] + 1, written)


def describe_reason(reason: Mapping[str, Any]) -> str:
    """A pruning record as one sentence, e.g. ``"step 3, learned rule on F_p_BE: 0.41 < 0.52 (outside
    the top 5 of 13; trusted by this study: rho +0.93 with the final value over 12 trials)"``."""
    head = f"step {reason.get('step')}, {reason.get('rule')} rule on {reason.get('signal')}"
    if reason.get("rule") == "nan":
        return f"{head}: NaN"
    if reason.get("rule") == "wrapped" or "threshold" not in reason:
        return head
    side = "<" if reason.get("higher_is_better") else ">"
    text = f"{head}: {reason['value']:.4g} {side} {reason['threshold']:.4g}"
    if "keep" in reason:
        horizon = "the final value" if reason.get("horizon") == "final" else f"the objective at step {reason.get('horizon')}"
        source = "this study" if reason.get("source") == "study" else "the prior study"
        return (f"{text} (outside the top {reason['keep']} of {reason['of']}; trusted by {source}: "
                f"rho {reason['rho']:+.2f} with {horizon} over {reason['n']} trials)")
    if reason.get("rule") == "fallback":
        return f"{text} (percentile {reason.get('percentile')} of the completed trials; nothing trusted at this step)"
    return f"{text} (percentile {reason.get('percentile')} of the completed trials)"


def record_settings(study: optuna.study.Study, settings: Mapping[str, Any]) -> None:
    """Store the pruner's ``settings`` in the study's system attribute ``probe:pruner`` and,
    where optuna-dashboard is installed and the study has no note yet, as the study's note."""
    study._storage.set_study_system_attr(study._study_id, SETTINGS_KEY, dict(settings))
    arguments = ", ".join(f"{name}={value!r}" for name, value in settings.items() if name != "class")
    _dashboard_note(study, None, f"**Pruner**: `{settings.get('class', 'measure pruner')}({arguments})`", only_if_empty=True)


def pruning_reason(trial: FrozenTrial) -> dict[str, Any] | None:
    """Why a measure pruner pruned ``trial`` (its ``probe:pruned`` record), or ``None``.

    Keys: ``rule`` (``"percentile"``, ``"learned"``, ``"fallback"``, ``"nan"`` or
    ``"wrapped"``), ``signal`` (the measure, or ``"objective"`` for ``trial.report`` values),
    ``step``, ``value``, ``threshold``, ``higher_is_better``; the percentile rules add
    ``percentile``; the learned promotion rule adds ``keep`` and ``of`` (the trial was not
    among the best ``keep`` of ``of`` at the rung), the trusted signal's Spearman ``rho``,
    the ``n`` trials it was estimated on, its ``horizon`` (``"final"`` or the step whose
    objective it ranks) and ``source`` (``"study"`` or ``"prior"``). The same reason, as one
    sentence, is the trial's user attribute ``probe:pruned_reason`` (optuna-dashboard shows it).
    """
    return trial.system_attrs.get(PRUNED_KEY)


def pruner_settings(study: optuna.study.Study) -> dict[str, Any] | None:
    """The measure pruner's class and arguments recorded with ``study``, or ``None``."""
    return study._storage.get_study_system_attrs(study._study_id).get(SETTINGS_KEY)
