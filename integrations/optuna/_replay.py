"""Replay recorded runs through a pruner, as trials of an in-memory study."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

import optuna
from optuna.pruners import BasePruner
from optuna.trial import TrialState

from integrations.optuna._measures import report_measures


class RecordedRun(NamedTuple):
    """One finished training run: its measures per step, final objective, and objective per step."""

    measures: Mapping[int, Mapping[str, float]]
    """``{step: {name: value}}``, e.g. ``{epoch: report.network}``."""
    value: float
    """The final objective (e.g. test accuracy)."""
    intermediate_values: Mapping[int, float] = {}
    """The objective's own per-step values for ``trial.report`` (only a wrapped pruner reads them)."""


def replay_study(
    runs: Iterable[RecordedRun],
    *,
    pruner: BasePruner | None = None,
    direction: Literal["minimize", "maximize"] = "maximize",
    study_name: str | None = None,
    study: optuna.Study | None = None,
) -> list[int | None]:
    """Replay ``runs`` in order, each as one trial of a fresh in-memory study using ``pruner``.

    Each step does what an objective does: ``report_measures``, then ``trial.report`` when
    the run has an objective value at that step, then ``trial.should_prune()``.

    Parameters
    ----------
    runs:
        Recorded runs, in the order the study would have run them.
    pruner:
        The pruner to evaluate (e.g. a :class:`MeasurePruner`); required unless ``study`` is given.
    direction:
        The study's direction, ``"maximize"`` (default) or ``"minimize"``.
    study_name:
        Name of the in-memory study (default: random). Fix it for repeatable results with
        pruners that depend on it (``HyperbandPruner`` assigns brackets by hashing it).
    study:
        Replay into this study instead (its own pruner, direction and storage, e.g. SQLite
        or PostgreSQL), and read it afterwards (``study.best_value``, ``trials_dataframe()``,
        the pruned trials' reasons). ``pruner`` and ``study_name`` must then be left unset.

    Returns
    -------
    list
        For each run, the step at which it was pruned, or ``None`` if it ran to the end
        (its ``value`` is then told to the study, so later runs are judged against it).
    """
    if study is None:
        if pruner is None:
            raise ValueError("replay_study needs pruner= (a fresh in-memory study) or study= (an existing one)")
        study = optuna.create_study(direction=direction, pruner=pruner, study_name=study_name)
    elif pruner is not None or study_name is not None:
        raise ValueError(
            f"replay_study got study={study.study_name!r}: leave pruner and study_name unset (the study's own are used)"
        )
    pruned_at: list[int | None] = []
    for run in runs:
        trial = study.ask()
        pruned_at.append(None)
        for step in sorted(set(run.measures) | set(run.intermediate_values)):
            if step in run.measures:
                report_measures(trial, run.measures[step], step)
            if step in run.intermediate_values:
                trial.report(run.intermediate_values[step], step)
            if trial.should_prune():
                pruned_at[-1] = step
                break
        if pruned_at[-1] is None:
            study.tell(trial, run.value)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    return pruned_at
