"""``LearnedMeasurePruner``: the recommended default — learns from the study which measures
(and with what sign) rank the final objective, and falls back on the objective's own values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from integrations.optuna._common import (
    NAN_POLICIES,
    check_choice,
    check_int,
    check_single_objective,
    record_pruned,
    record_settings,
    step_to_judge,
)
from integrations.optuna._measures import (
    check_measure_name,
    get_measures,
    stored_measure,
)
from integrations.optuna._trust import (
    correlation_lower_bound,
    holm,
    percentile_threshold,
    rank_correlation,
    trust_p_value,
)
from probe.aggregate import HEADLINE_NAMES

OBJECTIVE = "objective"
"""The name of the candidate signal made of the objective's own ``trial.report`` values."""


class Signal(NamedTuple):
    """A candidate that earned trust at a step: a measure (or ``"objective"``) and its sign."""

    name: str
    higher_is_better: bool
    rho: float
    """Spearman correlation of the signal at the step with the final objective (completed trials)."""
    n: int
    """Completed trials it was estimated on."""
    lower_bound: float
    """Lower confidence bound of ``|rho|`` at the Holm-adjusted level that trusted it."""


class LearnedMeasurePruner(BasePruner):
    """The recommended default: prune on whichever signal *this study* has shown to rank its
    final objective — no measure to choose, no sign to know.

    How it decides, at each step ``s`` (the latest with stored measures or a reported value)
    from ``n_warmup_steps`` on, once ``n_startup_trials`` trials have completed:

    1. **Candidates**: every measure in ``measures`` (the eight headline ones by default),
       either sign, and the objective's own ``trial.report`` value (higher is better in the
       study's direction: the sign Optuna's pruners assume).
    2. **Trust**: over the completed trials with a finite value at ``s``, the Spearman
       correlation ``rho`` of each candidate with the final objective is tested against
       ``|rho| <= trust_threshold`` (Fisher z; a measure's p-value is doubled because its
       sign is chosen from the data). Holm's step-down procedure over all candidates keeps
       the chance of trusting any useless candidate at this step below ``1 - confidence``;
       fewer than ``n_trust_trials`` pairs never earn trust.
    3. **Judge**: the trial is pruned when **every** trusted candidate it has a finite
       value for ranks it worse than the ``percentile``-th best of the completed trials'
       values at ``s`` (Optuna's ``PercentilePruner`` rule, with the learned sign; the
       default 75 prunes the bottom quarter). The objective is judged, as Optuna's pruners
       do, by the trial's best value so far.
    4. **Fallback**: with nothing trusted, the objective alone is judged by the same rule —
       ``PercentilePruner``'s decisions — unless at least ``n_trust_trials`` completed
       trials show its value at ``s`` ranking the final objective below
       ``trust_threshold`` (early epochs often do): then the trial runs on. A measure that
       has not earned trust in this study never prunes.
    5. **NaN**: a trial whose every usable signal at ``s`` is NaN (diverged weights or
       objective) is pruned with ``nan_policy="prune"`` (default). Other trials' NaN or
       missing values are left out.

    Holm bounds the error of one look; the pruner looks at every step and after every
    completed trial, so with few trials a chance correlation can still earn trust for a
    while (raise ``n_trust_trials`` or ``confidence`` to make that rarer).

    Why a trial was pruned (rule, signal, value, threshold, ``rho``, step) is stored in its
    system attribute ``probe:pruned`` (:func:`pruning_reason`); the settings in the study's
    ``probe:pruner`` (:func:`pruner_settings`). :meth:`trusted` shows the ranking at a step.

    Worked example (maximize; 20 completed trials; step 3; defaults): ``F_p_BE`` at step 3
    has ``rho = +0.80`` with the final objective over the 20, ``SQ_p_BE`` ``-0.75``, the
    objective's own step-3 value ``+0.30``, the other measures ``|rho| < 0.3``. For
    ``F_p_BE``, z = (atanh 0.80 − atanh 0.30) / sqrt((1 + 0.80²/2) / 17) = 0.79 / 0.28 = 2.83,
    two-sided p = 0.0046 ≤ 0.05 / 9 (Holm's first level, 9 candidates): trusted. For
    ``SQ_p_BE``, z = 2.42, p = 0.016 > 0.05 / 8: not trusted, and Holm stops there. A new
    trial whose step-3 ``F_p_BE`` lies in the bottom quarter of the 20 completed trials'
    step-3 values is pruned, whatever its objective says. With 8 completed trials nothing
    can be trusted yet: the trial's best objective value so far is compared with the
    bottom quarter of the 8 trials' step-3 values, as ``PercentilePruner(75)`` would.

    Example:

        .. code-block:: python

            import optuna

            from integrations.optuna import LearnedMeasurePruner, report_measures


            def objective(trial):
                quality = trial.suggest_float("x", 0.0, 1.0)
                for epoch in range(10):
                    # in real use: report_measures(trial, probe.measure(model), epoch)
                    report_measures(trial, {"F_p_BE": -quality + epoch / 100}, epoch, names=["F_p_BE"])
                    trial.report(quality * epoch / 10, epoch)  # the objective's own curve
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                return quality


            study = optuna.create_study(direction="maximize", pruner=LearnedMeasurePruner(measures=["F_p_BE"]))
            study.optimize(objective, n_trials=40)

    Parameters
    ----------
    measures:
        Candidate measures (names stored by ``report_measures``: the headline names or
        aggregates such as ``ER_L2_t6_BE``); default ``probe.HEADLINE_NAMES``.
    objective:
        Whether the objective's ``trial.report`` values are a candidate and the fallback;
        default ``True``. With ``False`` the pruner abstains until a measure earns trust.
    percentile:
        Share of the best completed trials kept at a step, in percent, 0–100 (Optuna's
        convention); default 75 (prune the bottom quarter).
    trust_threshold:
        The ``|rho|`` a candidate must exceed (0 ≤ value < 1); default 0.3.
    confidence:
        Family-wise confidence of the trust test (0–1, exclusive); default 0.95.
    n_trust_trials:
        Fewest completed trials with the candidate at the step to test it; default 10 (≥ 4).
    n_startup_trials:
        No pruning until this many trials have completed; default 5.
    n_warmup_steps:
        No pruning before this step; default 1.
    interval_steps:
        Judge at most once per this many steps, counted from ``n_warmup_steps``; default 1.
    nan_policy:
        ``"prune"`` (default) or ``"ignore"``: what a trial with only NaN signals gets.
    """

    def __init__(
        self,
        *,
        measures: Sequence[str] = HEADLINE_NAMES,
        objective: bool = True,
        percentile: float = 75.0,
        trust_threshold: float = 0.3,
        confidence: float = 0.95,
        n_trust_trials: int = 10,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 1,
        interval_steps: int = 1,
        nan_policy: str = "prune",
    ) -> None:
        if isinstance(measures, str):
            raise ValueError(f"measures must be a sequence of measure names, got measures={measures!r}")
        measures = tuple(check_measure_name(name, argument="measures") for name in measures)
        if len(set(measures)) != len(measures):
            raise ValueError(f"measures must not repeat a name, got measures={list(measures)!r}")
        if not measures and not objective:
            raise ValueError("measures=() with objective=False leaves nothing to judge by")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be between 0 and 100 inclusive, got percentile={percentile!r}")
        if not 0.0 <= trust_threshold < 1.0:
            raise ValueError(f"trust_threshold must be in [0, 1), got trust_threshold={trust_threshold!r}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be strictly between 0 and 1, got confidence={confidence!r}")
        check_int("n_trust_trials", n_trust_trials, 4)
        check_int("n_startup_trials", n_startup_trials, 0)
        check_int("n_warmup_steps", n_warmup_steps, 0)
        check_int("interval_steps", interval_steps, 1)
        check_choice("nan_policy", nan_policy, NAN_POLICIES)
        self.measures = measures
        self._objective = bool(objective)
        self._percentile = percentile
        self._trust_threshold = trust_threshold
        self._confidence = confidence
        self._n_trust_trials = n_trust_trials
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps
        self._interval_steps = interval_steps
        self._nan_policy = nan_policy
        self._settings = {
            "class": type(self).__name__, "measures": list(measures), "objective": self._objective,
            "percentile": percentile, "trust_threshold": trust_threshold, "confidence": confidence,
            "n_trust_trials": n_trust_trials, "n_startup_trials": n_startup_trials,
            "n_warmup_steps": n_warmup_steps, "interval_steps": interval_steps, "nan_policy": nan_policy,
        }
        self._recorded: set[tuple[int, int]] = set()
        self._cache: dict[tuple[int, int, int], tuple[tuple[int, ...], list[Signal]]] = {}

    @property
    def _candidates(self) -> tuple[str, ...]:
        return (*self.measures, OBJECTIVE) if self._objective else self.measures

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Whether to prune ``trial`` (see the class docstring for how it decides)."""
        check_single_objective(study, self)
        record_settings(study, self._settings, self._recorded)
        measures = get_measures(trial)
        steps = set(measures) | (set(trial.intermediate_values) if self._objective else set())
        judged = step_to_judge(study, steps, n_startup_trials=self._n_startup_trials,
                               n_warmup_steps=self._n_warmup_steps, interval_steps=self._interval_steps)
        if judged is None:
            return False
        step, completed = judged
        reason = self._judge(study, trial, completed, step)
        if reason is not None:
            record_pruned(study, trial, reason)
        return reason is not None

    def trusted(self, study: optuna.study.Study, step: int) -> list[Signal]:
        """The candidates trusted at ``step`` by the study's completed trials, best first."""
        return self._trusted(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), step)

    def _judge(self, study: optuna.study.Study, trial: FrozenTrial, completed: list[FrozenTrial], step: int) -> dict | None:
        trusted = self._trusted(study, completed, step)
        maximize = study.direction == StudyDirection.MAXIMIZE
        fallback = [] if trusted or not self._objective or self._objective_refuted(completed, step) else [
            Signal(OBJECTIVE, maximize, math.nan, 0, math.nan)]
        own = [(signal, self._own_value(trial, signal, step)) for signal in trusted + fallback]
        usable = [(signal, value) for signal, value in own if value is not None]
        if not usable:
            return None
        finite = [(signal, value) for signal, value in usable if math.isfinite(value)]
        if not finite:
            signal, value = usable[0]
            return {"rule": "nan", "signal": signal.name, "step": step, "value": value} if self._nan_policy == "prune" else None
        verdicts = [self._verdict(signal, value, completed, step) for signal, value in finite]
        return verdicts[0] if all(verdict is not None for verdict in verdicts) else None

    def _objective_refuted(self, completed: list[FrozenTrial], step: int) -> bool:
        """Whether the completed trials contradict the objective at ``step``: at least
        ``n_trust_trials`` pairs, and its Spearman with the final value below ``trust_threshold``."""
        pairs = [(t.intermediate_values.get(step), t.value) for t in completed]
        pairs = [(v, final) for v, final in pairs if v is not None and final is not None]
        if len(pairs) < self._n_trust_trials:
            return False
        rho = rank_correlation(*zip(*pairs))
        return not rho >= self._trust_threshold

    def _verdict(self, signal: Signal, value: float, completed: list[FrozenTrial], step: int) -> dict | None:
        values = [self._value(t, signal.name, step) for t in completed]
        others = [v for v in values if v is not None and math.isfinite(v)]
        if not others:
            return None
        threshold = percentile_threshold(others, percentile=self._percentile, higher_is_better=signal.higher_is_better)
        if not (value < threshold if signal.higher_is_better else value > threshold):
            return None
        return {"rule": "learned" if signal.n else "fallback", "signal": signal.name, "step": step, "value": value,
                "threshold": threshold, "higher_is_better": signal.higher_is_better, "percentile": self._percentile,
                "rho": signal.rho, "n": signal.n}

    def _own_value(self, trial: FrozenTrial, signal: Signal, step: int) -> float | None:
        """The judged trial's value: a measure at ``step``; the objective's best so far (as Optuna's pruners)."""
        if signal.name != OBJECTIVE:
            return stored_measure(trial, step, signal.name)
        if step not in trial.intermediate_values:
            return None
        values = np.array([v for s, v in trial.intermediate_values.items() if s <= step], dtype=float)
        if np.isnan(values).all():
            return math.nan
        return float(np.nanmax(values) if signal.higher_is_better else np.nanmin(values))

    def _value(self, trial: FrozenTrial, name: str, step: int) -> float | None:
        if name == OBJECTIVE:
            value = trial.intermediate_values.get(step)
            return None if value is None else float(value)
        return stored_measure(trial, step, name)

    def _trusted(self, study: optuna.study.Study, completed: list[FrozenTrial], step: int) -> list[Signal]:
        """Holm's trust test of every candidate at ``step`` (cached until another trial completes)."""
        key = (id(study._storage), study._study_id, step)
        numbers = tuple(t.number for t in completed)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == numbers:
            return cached[1]
        finals = np.array([math.nan if t.value is None else t.value for t in completed], dtype=float)
        maximize = study.direction == StudyDirection.MAXIMIZE
        estimates = []
        for name in self._candidates:
            values = np.array([math.nan if (v := self._value(t, name, step)) is None else v for t in completed], dtype=float)
            n = int((np.isfinite(values) & np.isfinite(finals)).sum())
            rho = rank_correlation(values, finals) if n >= self._n_trust_trials else math.nan
            either_sign = name != OBJECTIVE
            p = trust_p_value(rho, n, self._trust_threshold, either_sign=either_sign)
            estimates.append((name, rho, n, p, either_sign))
        alpha = 1.0 - self._confidence
        rejected = holm([p for *_, p, _ in estimates], alpha=alpha)
        signals = []
        ordered = sorted(range(len(estimates)), key=lambda i: estimates[i][3])
        for rank, index in enumerate(ordered):
            name, rho, n, p, either_sign = estimates[index]
            if not rejected[index]:
                continue
            level = alpha / (len(estimates) - rank) / (2.0 if either_sign else 1.0)
            signals.append(Signal(name, (rho > 0) == maximize, rho, n, correlation_lower_bound(rho, n, confidence=1.0 - level)))
        signals.sort(key=lambda signal: -signal.lower_bound)
        self._cache[key] = (numbers, signals)
        return signals
