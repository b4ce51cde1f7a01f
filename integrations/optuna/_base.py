"""What both measure pruners share: the common arguments and their checks (startup, warm-up,
interval, NaN policy), the judged step, and the records of settings and reasons."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from integrations.optuna._common import (
    NAN_POLICIES,
    check_choice,
    check_int,
    check_single_objective,
    record_pruned,
    record_settings,
    step_to_judge,
)

State = TypeVar("State")


class MeasureBasedPruner(BasePruner):
    """Base of :class:`MeasurePruner` and :class:`LearnedMeasurePruner` (not for direct use)."""

    def __init__(self, *, n_startup_trials: int, n_warmup_steps: int, interval_steps: int, nan_policy: str) -> None:
        check_int("n_startup_trials", n_startup_trials, 0)
        check_int("n_warmup_steps", n_warmup_steps, 0)
        check_int("interval_steps", interval_steps, 1)
        check_choice("nan_policy", nan_policy, NAN_POLICIES)
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps
        self._interval_steps = interval_steps
        self._nan_policy = nan_policy
        self._settings: dict[str, Any] = {
            "class": type(self).__name__, "n_startup_trials": n_startup_trials, "n_warmup_steps": n_warmup_steps,
            "interval_steps": interval_steps, "nan_policy": nan_policy,
        }
        self._lock = threading.RLock()  # study.optimize(n_jobs=...) calls prune from several threads
        self._studies: weakref.WeakKeyDictionary[Any, dict[int, dict[str, Any]]] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (a trial handed to spawned processes carries its study's pruner): without
        the lock and the per-study caches, which are rebuilt from the storage."""
        state = self.__dict__.copy()
        del state["_lock"], state["_studies"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._studies = weakref.WeakKeyDictionary()

    def _per_study(self, study: optuna.study.Study, name: str, make: Callable[[], State]) -> State:
        """This pruner's ``name`` state for ``study``, made on first use. Kept per storage object
        (weakly: gone with it, so a later storage that reuses a freed one's ``id`` starts afresh)
        and study id (several studies share an RDB storage)."""
        states = self._studies.setdefault(study._storage, {}).setdefault(study._study_id, {})
        if name not in states:
            states[name] = make()
        return states[name]

    @property
    def settings(self) -> dict[str, Any]:
        """The pruner's class and arguments (as :func:`pruner_settings` reads them back from a study)."""
        return dict(self._settings)

    @property
    def stored_measures(self) -> tuple[str, ...]:
        """The measures the pruner reads; ``report_measures`` stores them by default."""
        return ()

    def _start(self, study: optuna.study.Study) -> None:
        """Refuse multi-objective studies; record the settings with the study (once)."""
        check_single_objective(study, self)
        with self._lock:
            recorded = self._per_study(study, "recorded", lambda: [False])
            if not recorded[0]:
                record_settings(study, self._settings)
                recorded[0] = True

    def _gate(self, study: optuna.study.Study, steps: Iterable[int]) -> tuple[int, list[FrozenTrial]] | None:
        """The step to judge and the completed trials, or ``None`` (startup, warm-up, interval)."""
        return step_to_judge(study, steps, n_startup_trials=self._n_startup_trials,
                             n_warmup_steps=self._n_warmup_steps, interval_steps=self._interval_steps)

    def _nan_reason(self, signal: str, step: int, value: float = float("nan")) -> dict[str, Any] | None:
        """The reason to prune a trial whose signal is NaN, under the NaN policy."""
        return {"rule": "nan", "signal": signal, "step": step, "value": value} if self._nan_policy == "prune" else None

    def _record(self, study: optuna.study.Study, trial: FrozenTrial, reason: dict[str, Any] | None) -> bool:
        """Store ``reason`` with the trial when there is one; whether to prune."""
        if reason is not None:
            record_pruned(study, trial, reason)
        return reason is not None
