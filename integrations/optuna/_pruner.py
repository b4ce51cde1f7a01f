"""``MeasurePruner``: prune trials whose network measure at a step says they will end poorly."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import norm, rankdata

from integrations.optuna._measures import check_measure_name, get_measures, stored_measure

MODES = ("percentile", "learned")
DIRECTIONS = ("maximize", "minimize")
NAN_POLICIES = ("prune", "ignore")


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation of paired values, over the pairs where both are finite.

    Returns NaN when fewer than two such pairs remain or either side is constant.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def correlation_lower_bound(rho: float, n: int, *, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound of ``|rho|``, a Spearman correlation over ``n`` pairs.

    Fisher ``z = atanh|rho|`` with the Bonett–Wright standard error
    ``sqrt((1 + rho²/2) / (n - 3))``; returns 0 when the bound is below 0, NaN for ``n < 4``
    or a NaN ``rho``.
    """
    if n < 4 or math.isnan(rho):
        return math.nan
    z = math.atanh(min(abs(rho), 1.0 - 1e-12))
    se = math.sqrt((1.0 + rho * rho / 2.0) / (n - 3))
    return max(0.0, math.tanh(z - float(norm.ppf(confidence)) * se))


def is_poor(value: float, others: Sequence[float], *, percentile: float, higher_is_better: bool) -> bool:
    """Whether ``value`` falls short of the ``percentile``-th best of ``others`` (NaNs ignored).

    As in Optuna's ``PercentilePruner``: ``percentile=25`` keeps the top 25 %; 50 is the median.
    """
    q = 100.0 - percentile if higher_is_better else percentile
    threshold = float(np.nanpercentile(np.asarray(others, dtype=float), q))
    return value < threshold if higher_is_better else value > threshold


class MeasurePruner(BasePruner):
    """Pruner on a network measure stored by :func:`report_measures`, optionally with an objective pruner.

    At the latest step with stored measures, the trial's ``measure`` is compared with the
    values that completed trials had at the same step (completed only, as in Optuna's
    pruners):

    - ``mode="percentile"``: like Optuna's ``PercentilePruner`` on the measure, with a fixed
      ``direction`` (``"maximize"``: higher is better — the paper's finding for ``E_*`` and
      ``SQ_*`` against test accuracy; when unsure for your setting, use learned mode).
    - ``mode="learned"``: the direction is learned. From completed trials, the Spearman
      correlation ``rho`` between the measure at this step and the final objective is
      estimated; the measure prunes (percentile rule, direction = sign of ``rho`` times the
      study's) only when at least ``n_trust_trials`` pairs make ``|rho|`` exceed
      ``trust_threshold`` with the given ``confidence`` (a lower confidence bound, so few
      trials need a stronger correlation and noise is not trusted by chance); otherwise
      it abstains.

    A trial is pruned when the measure says so **or** ``wrapped_pruner`` (e.g. a
    ``MedianPruner`` on ``trial.report`` values) does (hybrid).

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
    left out of the percentile and the correlation. A stored step lacking ``measure``
    for the trial being judged raises ``ValueError`` (store it with ``names=``).

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
                pruner=MeasurePruner(mode="learned", n_startup_trials=5, n_warmup_steps=1),
            )
            study.optimize(objective, n_trials=30)

    Parameters
    ----------
    measure:
        Network measure to judge by: one of ``probe.HEADLINE_NAMES`` or an aggregate name
        such as ``ER_L2_t6_BE``. Default ``"E_L2_BE"``.
    mode:
        ``"percentile"`` (default) or ``"learned"``.
    percentile:
        Share of the best trials kept, in percent, 0–100 (Optuna's convention); default 50
        (the median rule).
    direction:
        ``"maximize"`` or ``"minimize"``: whether a higher measure is better. Percentile
        mode only (default ``"maximize"``); must be ``None`` in learned mode.
    trust_threshold:
        Learned mode: the smallest ``|rho|`` (0–1) trusted; default 0.5.
    confidence:
        Learned mode: one-sided confidence (0–1, exclusive) that ``|rho|`` exceeds
        ``trust_threshold``; default 0.95 (see :func:`correlation_lower_bound`).
    n_trust_trials:
        Learned mode: the fewest completed trials with the measure at the step and a
        finite objective needed to estimate ``rho``; default 10 (at least 4).
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
        mode: str = "percentile",
        percentile: float = 50.0,
        direction: str | None = None,
        trust_threshold: float = 0.5,
        confidence: float = 0.95,
        n_trust_trials: int = 10,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        interval_steps: int = 1,
        n_min_trials: int = 1,
        nan_policy: str = "prune",
        wrapped_pruner: BasePruner | None = None,
    ) -> None:
        check_measure_name(measure)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be between 0 and 100 inclusive, got percentile={percentile!r}")
        if mode == "learned" and direction is not None:
            raise ValueError(f"direction is learned in mode='learned'; leave it None, got direction={direction!r}")
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS} or None, got direction={direction!r}")
        if not 0.0 <= trust_threshold <= 1.0:
            raise ValueError(f"trust_threshold must be between 0 and 1, got trust_threshold={trust_threshold!r}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be strictly between 0 and 1, got confidence={confidence!r}")
        if n_trust_trials < 4:
            raise ValueError(f"n_trust_trials must be at least 4, got n_trust_trials={n_trust_trials!r}")
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials cannot be negative, got n_startup_trials={n_startup_trials!r}")
        if n_warmup_steps < 0:
            raise ValueError(f"n_warmup_steps cannot be negative, got n_warmup_steps={n_warmup_steps!r}")
        if interval_steps < 1:
            raise ValueError(f"interval_steps must be at least 1, got interval_steps={interval_steps!r}")
        if n_min_trials < 1:
            raise ValueError(f"n_min_trials must be at least 1, got n_min_trials={n_min_trials!r}")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got nan_policy={nan_policy!r}")
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise ValueError(f"wrapped_pruner must be an optuna BasePruner or None, got {wrapped_pruner!r}")
        self.measure = measure
        self.mode = mode
        self._percentile = percentile
        self._direction = direction or "maximize"
        self._trust_threshold = trust_threshold
        self._confidence = confidence
        self._n_trust_trials = n_trust_trials
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps
        self._interval_steps = interval_steps
        self._n_min_trials = n_min_trials
        self._nan_policy = nan_policy
        self._wrapped_pruner = wrapped_pruner

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Whether to prune ``trial``: its measure is poor, or ``wrapped_pruner`` says so."""
        if len(study.directions) > 1:
            raise ValueError(
                f"MeasurePruner cannot prune multi-objective study {study.study_name!r} "
                f"({len(study.directions)} directions): Optuna's pruning supports single-objective studies only"
            )
        if self._prune_by_measure(study, trial):
            return True
        return self._wrapped_pruner is not None and self._wrapped_pruner.prune(study, trial)

    def _prune_by_measure(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        measures = get_measures(trial)
        if not measures:
            return False
        step = max(measures)
        if step < self._n_warmup_steps:
            return False
        if not self._is_first_in_interval(step, measures):
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed or len(completed) < self._n_startup_trials:
            return False
        if self.measure not in measures[step]:
            raise ValueError(
                f"measure {self.measure!r} was not stored at step {step} of trial {trial.number} "
                f"(stored: {sorted(measures[step])}); pass names=[{self.measure!r}] to report_measures"
            )
        value = measures[step][self.measure]
        if math.isnan(value):
            return self._nan_policy == "prune"
        sign = self._sign(study, completed, step)
        if sign == 0:
            return False
        others = [stored_measure(t, step, self.measure) for t in completed]
        others = [v for v in others if v is not None and not math.isnan(v)]
        if len(others) < self._n_min_trials:
            return False
        return is_poor(value, others, percentile=self._percentile, higher_is_better=sign > 0)

    def _is_first_in_interval(self, step: int, measures: dict[int, dict[str, float]]) -> bool:
        lowest = (step - self._n_warmup_steps) // self._interval_steps * self._interval_steps + self._n_warmup_steps
        previous = max((s for s in measures if s != step), default=-1)
        return previous < lowest

    def _sign(self, study: optuna.study.Study, completed: list[FrozenTrial], step: int) -> int:
        """+1: higher measure is better; -1: lower is better; 0: not trusted (learned mode)."""
        if self.mode == "percentile":
            return 1 if self._direction == "maximize" else -1
        pairs = [(stored_measure(t, step, self.measure), t.value) for t in completed]
        pairs = [(m, v) for m, v in pairs if m is not None and v is not None and math.isfinite(m) and math.isfinite(v)]
        if len(pairs) < self._n_trust_trials:
            return 0
        rho = rank_correlation(*zip(*pairs))
        if not correlation_lower_bound(rho, len(pairs), confidence=self._confidence) >= self._trust_threshold:
            return 0
        maximize = study.direction == StudyDirection.MAXIMIZE
        return 1 if (rho > 0) == maximize else -1
