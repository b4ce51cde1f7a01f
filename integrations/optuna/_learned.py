"""``LearnedMeasurePruner``: the recommended default — learns from every trial of the study
(pruned and unfinished ones included) which signal ranks the later objective, then promotes
trials through successive-halving rungs on that signal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from integrations.optuna._base import MeasureBasedPruner
from integrations.optuna._common import check_int, undefined_not_diverged
from integrations.optuna._measures import check_measure_name, get_measures
from integrations.optuna._trust import (
    correlation_lower_bound,
    holm,
    look_size,
    percentile_threshold,
    rank_correlation,
    trust_p_value,
)
from probe.aggregate import HEADLINE_NAMES

OBJECTIVE = "objective"
"""The name of the candidate signal made of the objective's own ``trial.report`` values."""
FINAL = None
"""Horizon of a signal that ranks the completed trials' final values."""
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Signal(NamedTuple):
    """A candidate trusted at a step: a measure (or ``"objective"``) and its sign."""

    name: str
    higher_is_better: bool
    rho: float
    """Spearman correlation of the signal at the step with the objective at ``horizon``."""
    n: int
    """Trials it was estimated on (the look's sample: pruned and completed trials alike)."""
    lower_bound: float
    """Lower confidence bound of ``|rho|`` at the level of the test that trusted it."""
    horizon: int | None = FINAL
    """The later step whose objective it ranks (``None``: the final value); when not final,
    the objective there is trusted in turn (a chain ending at the final value)."""
    source: str = "study"
    """``"study"`` (this study's own trials) or ``"prior"`` (carried from ``prior=``, not refuted here)."""


class _History(NamedTuple):
    """A finished trial as the pruner reads it (fixed once finished, so cached)."""

    number: int
    values: dict[int, np.ndarray]
    """step -> candidate values (NaN where missing or undefined)."""
    objective: dict[int, float]
    """step -> reported objective value."""
    final: float
    """The final value; NaN unless completed."""


class LearnedMeasurePruner(MeasureBasedPruner):
    """The recommended default: prune on whichever signal *this study* has shown to rank its
    later objective — no measure to choose, no sign to know — promoting trials through
    successive-halving rungs once a signal is trusted. Nothing prunes untrusted, the
    objective included: until a signal is trusted, trials run on (``percentile=`` adds
    Optuna's percentile rule on the objective meanwhile, cheaper where the early objective
    ranks well, and costly where it misleads — e.g. a loss plateau that some runs leave late).

    **Evidence** comes from every finished trial (completed *and* pruned), as far as it ran:
    a trial that reached step ``s′ > s`` tells how its step-``s`` values rank against its
    objective at ``s′``. Candidates: every measure in ``measures`` (either sign) and the
    objective's own ``trial.report`` value at ``s`` (the study's direction).

    **Trust** (:meth:`trusted`), at a step ``s``: the *horizons* of ``s`` are the final
    value and the rungs after ``s`` (``H`` of them). At each horizon with at least
    ``n_trust_trials`` finished trials having both the step-``s`` candidates and the
    horizon's objective, the test takes one *look* at a fixed sample: the first ``g`` such
    trials by number, ``g`` on the grid ``⌈n_trust_trials · 1.5^(j−1)⌉`` (j = 1, 2, …; the
    largest available), so that a look's outcome does not change until the next grid size.
    What is tested, per candidate: H₀ "the Spearman ρ of the candidate at ``s`` with the
    objective at the horizon is ≤ ``trust_threshold``" (for a measure ``|ρ|``: its sign is
    chosen from the data and the p-value doubled; the objective must rank its later values
    the same way), by the Fisher-z (Bonett–Wright) normal approximation, with Holm's
    step-down over the candidates at level ``α_j = (1 − confidence) / H / 2^j``. Summed
    over every look and horizon, the chance that a candidate whose H₀ holds is ever trusted
    at step ``s`` is at most ``1 − confidence`` (up to the normal approximation; a union
    bound, so conservative). The bound is per step, not across steps. A horizon before the
    final value counts only when the objective *there* is trusted in turn (the same test
    at that step): trust is a chain ending at the final value, so at least
    ``n_trust_trials`` completed trials are needed, but the earlier links are estimated on
    every trial that got that far, pruned ones included. The pruner's own selection keeps
    a useless signal useless among the survivors, so the bound holds in a pruned study too
    (selection on another signal correlated with it is the one case it does not cover).

    **Judge**, at the trial's latest step ``s`` from ``n_warmup_steps`` on, once
    ``n_startup_trials`` trials have completed:

    1. *Promotion rule*, when a signal is trusted at ``s`` and ``s`` is a rung
       (``max(1, n_warmup_steps) · reduction_factor^k``): the trusted signal with the best confidence
       bound that the trial has a value for ranks it among every finished trial's value at ``s`` (as asynchronous successive
       halving); it runs on when in the top ``max(1, ⌈n · keep⌉)`` (``keep`` defaults to
       ``1 / reduction_factor``), else it is pruned (rule ``"learned"``). Between rungs a
       trusted step prunes nothing.
    2. *Fallback* (opt-in, ``percentile=``), with nothing trusted at ``s``: the objective's
       best value so far against the ``percentile``-th best of the completed trials' values
       at ``s`` (Optuna's ``PercentilePruner``; rule ``"fallback"``) — unless the finished
       trials *refute* it (at least ``n_trust_trials`` of them show Spearman ρ below
       ``trust_threshold`` between its value at ``s`` and the objective at the furthest
       horizon). Without it (default) nothing is pruned at an untrusted step. A measure
       never prunes untrusted.
    3. *NaN*: a trial whose every usable signal at ``s`` is NaN is pruned with
       ``nan_policy="prune"`` (default). Other trials' NaN or missing values are left out.

    **Prior** (opt-in): ``prior=`` an earlier :class:`optuna.Study` on the same task (any
    storage: ``optuna.load_study(...)``); the signals trusted there at a step (by the same
    test on its trials) are trusted here from the first trial (``source="prior"``) until
    this study's own finished trials refute them (ρ with the prior's sign below
    ``trust_threshold`` over at least ``n_trust_trials``), and confirmed when this
    study's own test trusts them.

    Why a trial was pruned (rule, signal, value, threshold, ``rho``, ``n``, step) is stored
    in its system attribute ``probe:pruned`` (:func:`pruning_reason`), the settings in the
    study's ``probe:pruner`` (:func:`pruner_settings`).

    Example:

        .. code-block:: python

            import optuna

            from integrations.optuna import LearnedMeasurePruner, report_measures


            def objective(trial):
                quality = trial.suggest_float("x", 0.0, 1.0)
                for epoch in range(10):
                    # in real use: report_measures(trial, probe.measure(model), epoch)
                    report_measures(trial, {"F_p_BE": -quality + epoch / 100}, epoch, measures=["F_p_BE"])
                    trial.report(quality * epoch / 10, epoch)  # the objective's own curve
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                return quality


            study = optuna.create_study(direction="maximize", pruner=LearnedMeasurePruner(measures=["F_p_BE"]))
            study.optimize(objective, n_trials=40)

    Parameters
    ----------
    measures:
        Candidate measures (names stored by ``report_measures``); default ``probe.HEADLINE_NAMES``.
    objective:
        Whether the objective's ``trial.report`` values are a candidate (and, with
        ``percentile``, the fallback's signal); default ``True``. With ``False`` only measures
        can earn trust.
    percentile:
        Turns on the fallback at untrusted steps: the share of the best completed trials kept,
        in percent (Optuna's convention: 75 prunes the bottom quarter). Default ``None``: no
        fallback (the safe choice where the early objective can mislead; see docs/hpo.md).
    reduction_factor:
        The promotion rule's η: rungs at ``max(1, n_warmup_steps) · η^k``; default 3.
    keep:
        The share of a rung's trials that runs on (0 < keep ≤ 1); default ``1 / reduction_factor``.
        ``keep=0.5`` guards against late bloomers (a run at the median halfway through its
        schedule and best at the end) for more epochs; see docs/hpo.md.
    trust_threshold:
        The ``|rho|`` a candidate must exceed (0 ≤ value < 1); default 0.2.
    confidence:
        ``1 −`` the bound on trusting a candidate with ``|rho| ≤ trust_threshold`` at a
        step, over all looks (0–1, exclusive); default 0.95.
    n_trust_trials:
        Fewest trials in a look (≥ 4); default 8.
    n_startup_trials:
        No pruning until this many trials have completed; default 3.
    n_warmup_steps:
        No pruning before this step; the first rung; default 1.
    interval_steps:
        The fallback judges at most once per this many steps; default 1.
    nan_policy:
        ``"prune"`` (default) or ``"ignore"``: what a trial with only NaN signals gets.
    prior:
        An earlier study whose trusted signals start trusted here (see above); default none.
    """

    def __init__(
        self,
        *,
        measures: Sequence[str] = HEADLINE_NAMES,
        objective: bool = True,
        percentile: float | None = None,
        reduction_factor: int = 3,
        keep: float | None = None,
        trust_threshold: float = 0.2,
        confidence: float = 0.95,
        n_trust_trials: int = 8,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 1,
        interval_steps: int = 1,
        nan_policy: str = "prune",
        prior: optuna.Study | None = None,
    ) -> None:
        if isinstance(measures, str):
            raise ValueError(f"measures must be a sequence of measure names, got measures={measures!r}")
        measures = tuple(check_measure_name(name, argument="measures") for name in measures)
        if len(set(measures)) != len(measures):
            raise ValueError(f"measures must not repeat a name, got measures={list(measures)!r}")
        if not measures and not objective:
            raise ValueError("measures=() with objective=False leaves nothing to judge by")
        if percentile is not None and (isinstance(percentile, bool) or not isinstance(percentile, (int, float))
                                       or not 0.0 <= percentile <= 100.0):
            raise ValueError(f"percentile must be None or between 0 and 100 inclusive, got percentile={percentile!r}")
        check_int("reduction_factor", reduction_factor, 2)
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0):
            raise ValueError(f"keep must be None or a share in (0, 1], got keep={keep!r}")
        if not 0.0 <= trust_threshold < 1.0:
            raise ValueError(f"trust_threshold must be in [0, 1), got trust_threshold={trust_threshold!r}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be strictly between 0 and 1, got confidence={confidence!r}")
        check_int("n_trust_trials", n_trust_trials, 4)
        if prior is not None and not isinstance(prior, optuna.Study):
            raise ValueError(f"prior must be an optuna.Study (e.g. optuna.load_study(...)) or None, got prior={prior!r}")
        super().__init__(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps,
                         interval_steps=interval_steps, nan_policy=nan_policy)
        self.measures = measures
        self._objective = bool(objective)
        self._percentile = percentile
        self._eta = reduction_factor
        self._keep_share = 1.0 / reduction_factor if keep is None else float(keep)
        self._trust_threshold = trust_threshold
        self._confidence = confidence
        self._n_trust_trials = n_trust_trials
        self._prior = prior
        self._settings.update({
            "measures": list(measures), "objective": self._objective, "percentile": percentile,
            "reduction_factor": reduction_factor, "keep": keep, "trust_threshold": trust_threshold,
            "confidence": confidence,
            "n_trust_trials": n_trust_trials,
            "prior": None if prior is None else prior.study_name,
        })
        self._prior_trust: dict[int, list[Signal]] | None = None

    @property
    def stored_measures(self) -> tuple[str, ...]:
        """The measures this pruner reads (``report_measures`` stores them by default)."""
        return self.measures

    @property
    def _candidates(self) -> tuple[str, ...]:
        return (*self.measures, OBJECTIVE) if self._objective else self.measures

    def _is_rung(self, step: int) -> bool:
        return self._crosses_rung(step - 1, step)

    def _crosses_rung(self, previous: int, step: int) -> bool:
        """Whether a trial reporting ``step`` after ``previous`` has reached a rung it had not
        (``step`` a rung itself where steps are consecutive; else the first step past one, as
        with every second epoch or global steps 99, 199, …)."""
        rung = max(1, self._n_warmup_steps)
        reached = None
        while rung <= step:
            reached, rung = rung, rung * self._eta
        return reached is not None and reached > previous

    def _rungs_after(self, step: int, last: int) -> list[int]:
        """The rungs in ``(step, last]``, furthest first."""
        rung, rungs = max(1, self._n_warmup_steps), []
        while rung <= last:
            if rung > step:
                rungs.append(rung)
            rung *= self._eta
        return rungs[::-1]

    # --- reading the study ------------------------------------------------------------

    def _finished(self, study: optuna.study.Study) -> list[_History]:
        """Every finished trial of ``study`` as a :class:`_History` (parsed once, then cached)."""
        cache: dict[int, _History] = self._per_study(study, "histories", dict)
        trials = study.get_trials(deepcopy=False, states=_FINISHED)
        for trial in trials:
            if trial.number not in cache:
                cache[trial.number] = self._history(trial)
        return [cache[t.number] for t in trials]

    def _history(self, trial: FrozenTrial) -> _History:
        measures = get_measures(trial)
        steps = set(measures) | set(trial.intermediate_values)
        values = {}
        for step in steps:
            row = [measures.get(step, {}).get(name, math.nan) for name in self.measures]
            if self._objective:
                row.append(trial.intermediate_values.get(step, math.nan))
            values[step] = np.array(row, dtype=float)
        final = trial.value if trial.state == TrialState.COMPLETE and trial.value is not None else math.nan
        return _History(trial.number, values, {s: float(v) for s, v in trial.intermediate_values.items()}, float(final))

    # --- trust ---------------------------------------------------------------------------

    def trusted(self, study: optuna.study.Study, step: int) -> list[Signal]:
        """The candidates trusted at ``step``, best first: by the study's own finished trials,
        then those carried from ``prior=`` that this study has not refuted."""
        with self._lock:
            return self._trusted(study, self._finished(study), step)

    def _trusted(self, study: optuna.study.Study, histories: list[_History], step: int) -> list[Signal]:
        cache: dict[int, tuple[int, list[Signal]]] = self._per_study(study, "trust", dict)  # per step
        cached = cache.get(step)
        if cached is not None and cached[0] == len(histories):
            return cached[1]
        maximize = study.direction == StudyDirection.MAXIMIZE
        counted: list[Any] = self._per_study(study, "memo", lambda: [-1, {}])  # _test's memo, and for how many histories
        if counted[0] != len(histories):
            counted[:] = [len(histories), {}]
        memo: dict[int, list[Signal]] = counted[1]
        own = self._test(histories, step, maximize, memo)
        names = {s.name for s in own}
        carried = [s for s in self._prior_signals(maximize).get(step, [])
                   if s.name not in names and not self._refuted(histories, step, s.name, s.higher_is_better, maximize)]
        signals = own + [s._replace(source="prior") for s in carried]
        cache[step] = (len(histories), signals)
        return signals

    def _prior_signals(self, maximize: bool) -> dict[int, list[Signal]]:
        """What ``prior=`` trusted, per step (computed once)."""
        if self._prior is None:
            return {}
        if self._prior_trust is None:
            histories = [self._history(t) for t in self._prior.get_trials(deepcopy=False, states=_FINISHED)]
            steps = sorted({s for h in histories for s in h.values})
            prior_max = self._prior.direction == StudyDirection.MAXIMIZE
            memo: dict[int, list[Signal]] = {}
            self._prior_trust = {s: self._test(histories, s, prior_max, memo) for s in steps}
        return self._prior_trust

    def _sample(self, histories: list[_History], step: int, horizon: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The candidates at ``step`` and the objective at ``horizon``, over the trials having both."""
        rows, targets = [], []
        for h in histories:
            target = h.final if horizon is FINAL else h.objective.get(horizon, math.nan)
            if step in h.values and math.isfinite(target):
                rows.append(h.values[step])
                targets.append(target)
        return np.array(rows, dtype=float).reshape(len(rows), len(self._candidates)), np.array(targets, dtype=float)

    def _horizons(self, histories: list[_History], step: int) -> list[int | None]:
        """The final value and the rungs after ``step`` up to the longest run, furthest first."""
        last = max((max(h.objective, default=-1) for h in histories), default=-1)
        return [FINAL, *self._rungs_after(step, last)]

    def _furthest(self, histories: list[_History], step: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample at the furthest horizon with at least ``n_trust_trials`` trials (maybe empty)."""
        for horizon in self._horizons(histories, step):
            values, targets = self._sample(histories, step, horizon)
            if len(targets) >= self._n_trust_trials:
                return values, targets
        return np.empty((0, len(self._candidates))), np.empty(0)

    def _test(self, histories: list[_History], step: int, maximize: bool, memo: dict[int, list[Signal]]) -> list[Signal]:
        """This study's trust test at ``step`` (class docstring): one look per horizon with
        enough trials, chained through the objective at later rungs."""
        if step in memo:
            return memo[step]
        memo[step] = []
        horizons = self._horizons(histories, step)
        best: dict[str, Signal] = {}
        for horizon in horizons:
            values, targets = self._sample(histories, step, horizon)
            size, look = look_size(len(targets), self._n_trust_trials)
            if not look:
                continue
            if horizon is not FINAL and not any(s.name == OBJECTIVE for s in self._test(histories, horizon, maximize, memo)):
                continue  # a chain must end at the final value
            for signal in self._look(values[:size], targets[:size], self._look_level(look, len(horizons)),
                                     maximize, horizon):
                if signal.name not in best or signal.lower_bound > best[signal.name].lower_bound:
                    best[signal.name] = signal
        memo[step] = sorted(best.values(), key=lambda signal: -signal.lower_bound)
        return memo[step]

    def _look_level(self, look: int, horizons: int) -> float:
        """The family-wise level ``α_j = (1 − confidence) / H / 2^j`` of look ``j`` at one of ``H`` horizons."""
        return (1.0 - self._confidence) / horizons / 2.0 ** look

    def _look(self, values: np.ndarray, targets: np.ndarray, alpha: float, maximize: bool,
              horizon: int | None) -> list[Signal]:
        """Holm's test of every candidate on one look's sample at family-wise level ``alpha``."""
        estimates = []
        for index, name in enumerate(self._candidates):
            column = values[:, index]
            n = int(np.isfinite(column).sum())
            rho = rank_correlation(column, targets) if n >= self._n_trust_trials else math.nan
            either_sign = name != OBJECTIVE  # the objective must rank its own later values the same way
            estimates.append((name, rho, n, trust_p_value(rho, n, self._trust_threshold, either_sign=either_sign),
                              either_sign))
        rejected = holm([e[3] for e in estimates], alpha=alpha)
        signals = []
        ordered = sorted(range(len(estimates)), key=lambda i: estimates[i][3])
        for rank, index in enumerate(ordered):
            name, rho, n, _, either_sign = estimates[index]
            if rejected[index]:
                level = alpha / (len(estimates) - rank) / (2.0 if either_sign else 1.0)
                signals.append(Signal(name, (rho > 0) == maximize, rho, n,
                                      correlation_lower_bound(rho, n, confidence=1.0 - level), horizon))
        return signals

    def _refuted(self, histories: list[_History], step: int, name: str, higher_is_better: bool, maximize: bool) -> bool:
        """Whether the finished trials contradict ``name`` with its sign at ``step``: at least
        ``n_trust_trials`` of them at the furthest horizon, and its signed Spearman below ``trust_threshold``."""
        values, targets = self._furthest(histories, step)
        column = values[:, self._candidates.index(name)] if len(targets) else np.empty(0)
        if int(np.isfinite(column).sum()) < self._n_trust_trials:
            return False
        rho = rank_correlation(column, targets)
        signed = rho if higher_is_better == maximize else -rho
        return not signed >= self._trust_threshold

    # --- judging -------------------------------------------------------------------------

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Whether to prune ``trial`` (see the class docstring for how it decides)."""
        with self._lock:
            return self._prune(study, trial)

    def _prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        self._start(study)
        measures = get_measures(trial)
        steps = set(measures) | (set(trial.intermediate_values) if self._objective else set())
        if not steps or max(steps) < self._n_warmup_steps:
            return False
        step = max(steps)
        histories = self._finished(study)
        if sum(math.isfinite(h.final) for h in histories) < max(1, self._n_startup_trials):
            return False
        trusted = self._trusted(study, histories, step)
        if trusted:
            previous = max((s for s in steps if s < step), default=-1)
            reason = self._promote(measures.get(step, {}), trial, histories, trusted, step, previous)
        elif self._percentile is not None and self._gate(study, steps) is not None:
            reason = self._fallback(study, trial, histories, step)
        else:
            reason = None
        return self._record(study, trial, reason)

    def _promote(self, measures: dict[str, float], trial: FrozenTrial, histories: list[_History],
                 trusted: list[Signal], step: int, previous: int) -> dict[str, Any] | None:
        """The promotion rule at a rung (``previous``: the trial's step before ``step``), on the
        best trusted signal the trial has a value for."""
        own = [(signal, trial.intermediate_values.get(step) if signal.name == OBJECTIVE else measures.get(signal.name))
               for signal in trusted]
        usable = [(signal, value) for signal, value in own  # an undefined AE measure judges nothing
                  if value is not None and not undefined_not_diverged(signal.name, value, measures)]
        if not usable:
            return None
        finite = [(signal, value) for signal, value in usable if math.isfinite(value)]
        if not finite:
            return self._nan_reason(usable[0][0].name, step)
        signal, value = finite[0]
        if not self._judges(histories, step, previous):
            return None
        index = self._candidates.index(signal.name)
        others = np.array([h.values[step][index] for h in histories if step in h.values], dtype=float)
        population = np.append(others[np.isfinite(others)], value)
        sign = 1.0 if signal.higher_is_better else -1.0
        keep = self._keep(len(population), signal, histories, step)
        threshold = float(sign * np.sort(sign * population)[::-1][keep - 1])
        if not sign * value < sign * threshold:
            return None
        return {"rule": "learned", "signal": signal.name, "step": step, "value": float(value), "threshold": threshold,
                "higher_is_better": signal.higher_is_better, "keep": keep, "of": len(population),
                "rho": signal.rho, "n": signal.n, "horizon": "final" if signal.horizon is FINAL else signal.horizon,
                "source": signal.source}

    def _judges(self, histories: list[_History], step: int, previous: int) -> bool:
        """Whether the promotion rule judges a trial with a finite trusted value at ``step``
        (its step before: ``previous``): at the first step at or past each rung."""
        return self._crosses_rung(previous, step)

    def _keep(self, n: int, signal: Signal, histories: list[_History], step: int) -> int:
        """How many of the ``n`` values at ``step`` (the trial's included) run on: ``max(1, ⌈n · keep⌉)``."""
        return max(1, math.ceil(n / (1.0 / self._keep_share)))  # n / (1/keep): exact for keep = 1/η

    def _fallback(self, study: optuna.study.Study, trial: FrozenTrial, histories: list[_History], step: int) -> dict[str, Any] | None:
        """The percentile rule on the objective (when ``percentile`` is set), unless the finished
        trials refute it at ``step``."""
        if self._percentile is None or not self._objective or step not in trial.intermediate_values:  # for mypy too
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        if self._refuted(histories, step, OBJECTIVE, maximize, maximize):
            return None
        so_far = np.array([v for s, v in trial.intermediate_values.items() if s <= step], dtype=float)
        if np.isnan(so_far).all():
            return self._nan_reason(OBJECTIVE, step)
        value = float(np.nanmax(so_far) if maximize else np.nanmin(so_far))
        others = [h.objective[step] for h in histories if math.isfinite(h.final) and step in h.objective]
        others = [v for v in others if math.isfinite(v)]
        if not others:
            return None
        threshold = percentile_threshold(others, percentile=self._percentile, higher_is_better=maximize)
        if not (value < threshold if maximize else value > threshold):
            return None
        return {"rule": "fallback", "signal": OBJECTIVE, "step": step, "value": value, "threshold": threshold,
                "higher_is_better": maximize, "percentile": self._percentile}
