"""``MeasurePruner``: prune trials whose chosen network measure ranks low at a step (percentile rule)."""

from __future__ import annotations

import math

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from integrations.optuna._base import MeasureBasedPruner
from integrations.optuna._common import check_choice, check_int, undefined_not_diverged
from integrations.optuna._measures import (
    check_measure_name,
    get_measures,
    stored_measure,
)
from integrations.optuna._trust import percentile_threshold

DIRECTIONS = ("maximize", "minimize")


class MeasurePruner(MeasureBasedPruner):
    """Percentile rule on one network measure stored by :func:`report_measures`, optionally
    with an objective pruner. For a study where you do not know which measure predicts (or
    which way), use :class:`LearnedMeasurePruner`, the recommended default.

    At the latest step with stored measures, the trial's ``measure`` is compared with the
    values that completed trials had at the same step (completed only, as in Optuna's
    pruners): like Optuna's ``PercentilePruner`` on the measure, with a fixed ``direction``
    (``"maximize"``: higher is better — the paper's finding for ``E_*`` and ``SQ_*`` against
    test accuracy on CIFAR; on the digits benchmarks ``SQ_*`` points the other way). A trial
    is pruned when the measure says so **or** ``wrapped_pruner`` (e.g. a ``MedianPruner``
    on ``trial.report`` values) does (hybrid). Why a trial was pruned is stored in its system
    attribute ``probe:pruned`` (see :func:`pruning_reason`), the pruner's settings in the
    study's ``probe:pruner``.

    Steps: the measure is judged at the trial's latest step stored by ``report_measures``
    (so it works without any ``trial.report``); ``wrapped_pruner`` judges the objective at
    ``trial.last_step`` as usual. In the usual loop both are the epoch just finished; when
    measures are stored less often than the objective, each check in between judges the
    latest stored step again (as Optuna re-judges a step asked about twice).

    Missing and NaN values: a trial with no stored measures is not judged by the measure.
    A NaN measure for the trial (non-finite weights, or an aggregate with no entry) prunes
    it with ``nan_policy="prune"`` (default, as ``MedianPruner`` does for NaN objectives) or
    makes the measure abstain with ``"ignore"`` (consider it for ``_AE`` measures, NaN
    when EVBMF keeps no component anywhere). Other trials' NaN or missing values are
    left out of the percentile. A stored step lacking ``measure``
    for the trial being judged raises ``ValueError`` (store it with ``measures=``).

    Example:

        .. code-block:: python

            import optuna

            from integrations.optuna import MeasurePruner, report_measures


            def objective(trial):
                quality = trial.suggest_float("x", 0.0, 1.0)
                for epoch in range(10):
                    # in real use: report_measures(trial, probe.measure(model), epoch)
                    report_measures(trial, {"E_L2_BE": quality * (1 + epoch) / 10}, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                return quality


            study = optuna.create_study(
                direction="maximize",
                pruner=MeasurePruner(measure="E_L2_BE", n_startup_trials=5, n_warmup_steps=1),
            )
            study.optimize(objective, n_trials=30)

    Parameters
    ----------
    measure:
        Network measure to judge by: one of ``probe.HEADLINE_NAMES`` or an aggregate name
        such as ``ER_L2_t6_BE``. Default ``"E_L2_BE"``.
    percentile:
        Share of the best trials kept, in percent, 0–100 (Optuna's convention); default 50
        (the median rule).
    direction:
        ``"maximize"`` (default) or ``"minimize"``: whether a higher measure is better.
    n_startup_trials:
        No pruning by the measure until this many trials have completed; default 5.
    n_warmup_steps:
        No pruning by the measure before this step; default 0.
    interval_steps:
        Judge at most once per this many steps, counted from ``n_warmup_steps``; default 1.
    n_min_trials:
        Fewest completed trials with a finite measure at the step needed to judge; default 1.
    nan_policy:
        ``"prune"`` (default) or ``"ignore"``: what a NaN measure of the judged trial does.
    wrapped_pruner:
        Optional objective-based pruner consulted too (either signal prunes).
    """

    def __init__(
        self,
        *,
        measure: str = "E_L2_BE",
        percentile: float = 50.0,
        direction: str = "maximize",
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        interval_steps: int = 1,
        n_min_trials: int = 1,
        nan_policy: str = "prune",
        wrapped_pruner: BasePruner | None = None,
    ) -> None:
        check_measure_name(measure)
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be between 0 and 100 inclusive, got percentile={percentile!r}")
        check_choice("direction", direction, DIRECTIONS)
        check_int("n_min_trials", n_min_trials, 1)
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise ValueError(f"wrapped_pruner must be an optuna BasePruner or None, got wrapped_pruner={wrapped_pruner!r}")
        super().__init__(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps,
                         interval_steps=interval_steps, nan_policy=nan_policy)
        self.measure = measure
        self._percentile = percentile
        self._higher_is_better = direction == "maximize"
        self._n_min_trials = n_min_trials
        self._wrapped_pruner = wrapped_pruner
        self._settings.update({
            "measure": measure, "percentile": percentile, "direction": direction, "n_min_trials": n_min_trials,
            "wrapped_pruner": None if wrapped_pruner is None else type(wrapped_pruner).__name__,
        })

    @property
    def stored_measures(self) -> tuple[str, ...]:
        """The measure this pruner reads (``report_measures`` stores it by default)."""
        return (self.measure,)

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Whether to prune ``trial``: its measure is poor, or ``wrapped_pruner`` says so."""
        self._start(study)
        reason = self._judge(study, trial)
        if reason is None and self._wrapped_pruner is not None and self._wrapped_pruner.prune(study, trial):
            reason = {"rule": "wrapped", "signal": type(self._wrapped_pruner).__name__, "step": trial.last_step}
        return self._record(study, trial, reason)

    def _judge(self, study: optuna.study.Study, trial: FrozenTrial) -> dict | None:
        """The reason to prune ``trial`` on the measure, or ``None``."""
        measures = get_measures(trial)
        judged = self._gate(study, measures)
        if judged is None:
            return None
        step, completed = judged
        if self.measure not in measures[step]:
            raise ValueError(
                f"measure {self.measure!r} was not stored at step {step} of trial {trial.number} "
                f"(stored: {sorted(measures[step])}); pass measures=[{self.measure!r}] to report_measures"
            )
        value = measures[step][self.measure]
        if math.isnan(value):
            return None if undefined_not_diverged(self.measure, value, measures[step]) else self._nan_reason(self.measure, step, value)
        stored = [stored_measure(t, step, self.measure) for t in completed]
        others = [v for v in stored if v is not None and not math.isnan(v)]
        if len(others) < self._n_min_trials:
            return None
        threshold = percentile_threshold(others, percentile=self._percentile, higher_is_better=self._higher_is_better)
        if not (value < threshold if self._higher_is_better else value > threshold):
            return None
        return {"rule": "percentile", "signal": self.measure, "step": step, "value": value, "threshold": threshold,
                "higher_is_better": self._higher_is_better, "percentile": self._percentile}
