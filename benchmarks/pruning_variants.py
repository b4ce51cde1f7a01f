"""Variants of ``LearnedMeasurePruner`` tried in issue 25's rounds, replayed as ``pruning.py`` replays a pruner.

Each variant changes one part of the default, ``LearnedMeasurePruner()``: its trust test
(how the looks spend α, how Holm's test shares a look's α, ``trust_threshold``), the share a
rung keeps (from ρ's lower bound, a half, a share growing with the step), where it judges
(the first trusted step of each rung's interval, ``reduction_factor=2``) or which trusted
signal prunes (every one of them must). Each is replayed with the default on the recorded
families (``benchmarks/data``: family, train200, mnist, mlp, transformer, recurrent, mixer, conv1d, gnn)
through ``integrations.optuna.replay_study`` as in ``pruning.py``: ``--orders`` random
orders (``pruning.draw``), studies of 20 trials and of every run. Printed: a markdown table,
one row per variant and two columns per family (N = 20, N = all) of mean regret (pp of the
drawn runs' best final test accuracy, bold above 0.10) / epochs consumed (share of no pruning).

    .venv/bin/python benchmarks/pruning_variants.py --workers 2        # the table in RESULTS.md
    .venv/bin/python benchmarks/pruning_variants.py --only "keep"      # the rows whose label holds "keep"
    .venv/bin/python benchmarks/pruning_variants.py --quick            # smoke test, seconds
"""

from __future__ import annotations

import argparse
import math
import statistics
import warnings
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial
from pruning import DATA, draw, load_runs, map_tasks

from integrations.optuna import LearnedMeasurePruner, RecordedRun, replay_study
from integrations.optuna._learned import OBJECTIVE, Signal, _History
from integrations.optuna._trust import correlation_lower_bound, rank_correlation, trust_p_value

FAMILIES = ("family", "family_train200", "family_mnist", "family_mlp", "family_transformer", "family_recurrent",
            "family_mixer", "family_conv1d", "family_gnn")
"""The default ``--data``: these tables of ``benchmarks/data``, in this column order."""
TRIALS: tuple[int, None] = (20, None)
"""Runs per study: 20, and every run (``None``)."""
_NORMAL = NormalDist()
Reason = dict[str, Any] | None


# --- the trust test ------------------------------------------------------------------------

class TrustTest(LearnedMeasurePruner):
    """The default with another trust test: the looks spend ``α/(j(j+1))`` instead of ``α/2^j``
    (``spend="harmonic"``), and/or Holm's test gives the objective ``objective_share`` of each
    look's α, the measures sharing the rest equally (weighted Holm). With neither, it decides
    as the default (Holm's test is weighted Holm with equal weights)."""

    def __init__(self, *, spend: str = "geometric", objective_share: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spend = spend
        self._objective_share = objective_share

    def _look_level(self, look: int, horizons: int) -> float:
        alpha = (1.0 - self._confidence) / horizons
        return alpha / 2.0 ** look if self._spend == "geometric" else alpha / (look * (look + 1))

    def _look(self, values: np.ndarray, targets: np.ndarray, alpha: float, maximize: bool,
              horizon: int | None) -> list[Signal]:
        """Weighted Holm: candidates in order of p-value / weight, each rejected while its
        p-value ≤ ``alpha`` · its weight / the weights not yet rejected."""
        names = self._candidates
        if self._objective_share is None or OBJECTIVE not in names:
            weights = [1.0 / len(names)] * len(names)
        else:
            weights = [self._objective_share if name == OBJECTIVE else (1.0 - self._objective_share) / (len(names) - 1)
                       for name in names]
        estimates = []
        for index, name in enumerate(names):
            column = values[:, index]
            n = int(np.isfinite(column).sum())
            rho = rank_correlation(column, targets) if n >= self._n_trust_trials else math.nan
            either_sign = name != OBJECTIVE
            estimates.append((name, rho, n, trust_p_value(rho, n, self._trust_threshold, either_sign=either_sign),
                              either_sign))
        signals, remaining = [], 1.0
        for index in sorted(range(len(estimates)), key=lambda i: estimates[i][3] / weights[i]):
            name, rho, n, p_value, either_sign = estimates[index]
            level = alpha * weights[index] / remaining
            if p_value > level:
                break
            signals.append(Signal(name, (rho > 0) == maximize, rho, n,
                                  correlation_lower_bound(rho, n, confidence=1.0 - level / (2.0 if either_sign else 1.0)),
                                  horizon))
            remaining -= weights[index]
        return signals


# --- the promotion rule ----------------------------------------------------------------------

class KeepFromRho(LearnedMeasurePruner):
    """A rung keeps the smallest share (never under ``1/η``) that cuts the best of its ``n``
    with chance at most ``miss``, under a Gaussian copula at ρ's 90 % lower bound."""

    def __init__(self, *, miss: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._miss = miss

    def _keep(self, n: int, signal: Signal, histories: list[_History], step: int) -> int:
        bound = correlation_lower_bound(signal.rho, signal.n, confidence=0.9)
        bound = 0.0 if math.isnan(bound) else bound
        top = _NORMAL.inv_cdf(n / (n + 1.0))  # the best of n's normal score
        # the share of the n above the best one's signal value at its `miss` quantile
        share = 1.0 - _NORMAL.cdf(bound * top + _NORMAL.inv_cdf(self._miss) * math.sqrt(max(1e-12, 1 - bound * bound)))
        return max(1, math.ceil(n * min(1.0, max(1.0 / self._eta, share))))


class RungsOnly(LearnedMeasurePruner):
    """Base of the variants judged at rungs only: unlike the default, a trial at a trusted step
    between rungs is not pruned either when its signals are NaN."""

    def _promote(self, measures: dict[str, float], trial: FrozenTrial, histories: list[_History],
                 trusted: list[Signal], step: int, previous: int) -> Reason:
        return super()._promote(measures, trial, histories, trusted, step, previous) if self._is_rung(step) else None


class KeepTop(RungsOnly):
    """The first rung keeps the top ``1/first``, later rungs the top ``1/later``."""

    def __init__(self, *, first: float, later: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._first, self._later = first, later

    def _keep(self, n: int, signal: Signal, histories: list[_History], step: int) -> int:
        return max(1, math.ceil(n / (self._first if step == max(1, self._n_warmup_steps) else self._later)))


class KeepSpent(RungsOnly):
    """Rung ``s`` keeps the top ``max(1/η, s / the longest finished run's last step)``."""

    def _keep(self, n: int, signal: Signal, histories: list[_History], step: int) -> int:
        last = max((max(h.objective, default=0) for h in histories), default=0)
        share = max(1.0 / self._eta, step / last) if last else 1.0 / self._eta
        return max(1, math.ceil(n / (1.0 / share)))  # not n * share: ⌈·⌉ can round that otherwise


class FirstTrusted(LearnedMeasurePruner):
    """Judged once per rung's interval ``[r, η·r)``: at its first step with a trusted signal,
    which need not be the rung."""

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        self._study = study
        return super().prune(study, trial)

    def _judges(self, histories: list[_History], step: int, previous: int) -> bool:
        return True

    def _promote(self, measures: dict[str, float], trial: FrozenTrial, histories: list[_History],
                 trusted: list[Signal], step: int, previous: int) -> Reason:
        start = max(1, self._n_warmup_steps)
        while start * self._eta <= step:
            start *= self._eta
        if any(self._trusted(self._study, histories, earlier) for earlier in range(start, step)):
            return None  # the interval was judged at an earlier trusted step
        return super()._promote(measures, trial, histories, trusted, step, previous)


class EveryTrusted(LearnedMeasurePruner):
    """Prune only when every trusted signal that the trial has a finite value for would (the
    default asks the best of them only)."""

    def _promote(self, measures: dict[str, float], trial: FrozenTrial, histories: list[_History],
                 trusted: list[Signal], step: int, previous: int) -> Reason:
        reasons = []
        for signal in trusted:
            reason = super()._promote(measures, trial, histories, [signal], step, previous)
            if reason is not None:
                reasons.append(reason)  # pruned by this signal, or its value is NaN
                continue
            value = trial.intermediate_values.get(step) if signal.name == OBJECTIVE else measures.get(signal.name)
            if value is not None and math.isfinite(value):
                return None  # kept by this signal
        return reasons[0] if reasons else None


DEFAULT = "default (frozen in round four)"
VARIANTS: dict[str, Callable[[], BasePruner]] = {
    DEFAULT: LearnedMeasurePruner,
    "looks spend α/(j(j+1)) instead of α/2^j": lambda: TrustTest(spend="harmonic"),
    "weighted Holm: the objective gets half of each look's α": lambda: TrustTest(objective_share=0.5),
    "the two together": lambda: TrustTest(spend="harmonic", objective_share=0.5),
    "`trust_threshold=0.1`": lambda: TrustTest(trust_threshold=0.1),
    "`trust_threshold=0.1`, weighted Holm": lambda: TrustTest(objective_share=0.5, trust_threshold=0.1),
    "`trust_threshold=0`": lambda: TrustTest(trust_threshold=0.0),
    "`trust_threshold=0`, weighted Holm": lambda: TrustTest(objective_share=0.5, trust_threshold=0.0),
    "`trust_threshold=0`, weighted Holm, α/(j(j+1))":
        lambda: TrustTest(spend="harmonic", objective_share=0.5, trust_threshold=0.0),
    "keep share from ρ: P(best of n cut) ≤ 5 % under a Gaussian copula at ρ's 90 % lower bound, never under ⅓":
        KeepFromRho,
    "the same at ≤ 10 %": lambda: KeepFromRho(miss=0.10),
    "keep share from ρ, `trust_threshold=0.1`": lambda: KeepFromRho(trust_threshold=0.1),
    "keep share from ρ, `trust_threshold=0`": lambda: KeepFromRho(trust_threshold=0.0),
    "shift: judged at the first trusted step of each rung's interval": FirstTrusted,
    "`reduction_factor=2` (rungs 1, 2, 4, 8, 16; half kept)": lambda: LearnedMeasurePruner(reduction_factor=2),
    "`keep=0.5`: half kept at rungs 1, 3, 9": lambda: LearnedMeasurePruner(keep=0.5),
    "keep a third at rung 1, half at later rungs": lambda: KeepTop(first=3, later=2.0),
    "keep max(⅓, s / longest run) at rung s": KeepSpent,
    "prune only outside every trusted signal's top third": EveryTrusted,
}
"""Label (as in RESULTS.md) -> a fresh pruner per study."""
QUICK = (DEFAULT, "`trust_threshold=0`, weighted Holm, α/(j(j+1))")
"""``--quick``'s variants (unless ``--only``: the first two matching)."""


# --- replaying -----------------------------------------------------------------------------

_STATE: dict[str, tuple[list[RecordedRun], int]] = {}
"""Per worker process: family -> (runs, epochs), set by :func:`_init`."""


def _init(families: dict[str, tuple[list[RecordedRun], int]]) -> None:
    _STATE.update(families)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")


def _study(task: tuple[str, int | None, str, int]) -> tuple[float, float]:
    """One replayed study: (family, trials or ``None`` for every run, variant, order seed) ->
    (epochs consumed as a share of no pruning, regret in pp)."""
    family, trials, label, seed = task
    runs, epochs = _STATE[family]
    n = len(runs) if trials is None else trials
    ordered = [runs[i] for i in draw(len(runs), n, seed)]
    pruned_at = replay_study(ordered, pruner=VARIANTS[label](), study_name=f"order-{seed}")
    consumed = sum(epochs if step is None else step for step in pruned_at)
    found = max(run.value for run, step in zip(ordered, pruned_at) if step is None)
    return consumed / (n * epochs), 100.0 * (max(run.value for run in ordered) - found)


def benchmark(paths: list[Path], labels: list[str], *, orders: int, workers: int,
              quick: bool = False) -> dict[tuple[str, str, int | None], tuple[float, float]]:
    """(variant, family, trials) -> (mean regret in pp, mean epochs share) over ``orders``
    orders; ``quick``: about 24 runs per family."""
    families = {path.stem: load_runs(path) for path in paths}
    if quick:
        families = {family: (runs[:: max(1, len(runs) // 24)], epochs) for family, (runs, epochs) in families.items()}
    for family, (runs, _) in families.items():
        if len(runs) < TRIALS[0]:
            raise ValueError(f"{family} has {len(runs)} runs, fewer than a study of {TRIALS[0]} trials")
    tasks = [(family, trials, label, seed) for label in labels for family in families for trials in TRIALS
             for seed in range(orders)]
    results = map_tasks(_study, tasks, workers=workers, initializer=_init, initargs=(families,))
    table = {}
    for label in labels:
        for family in families:
            for trials in TRIALS:
                rows = [result for task, result in zip(tasks, results) if task[:3] == (family, trials, label)]
                table[label, family, trials] = (statistics.fmean(r[1] for r in rows), statistics.fmean(r[0] for r in rows))
    return table


def markdown(table: dict[tuple[str, str, int | None], tuple[float, float]], labels: list[str], families: list[str]) -> str:
    """One row per variant: ``regret / epochs %`` per family and N, regret above 0.10 pp in bold."""
    def cell(regret: float, share: float) -> str:
        return f"{f'**{regret:.2f}**' if regret > 0.10 else f'{regret:.2f}'} / {100 * share:.1f} %"

    columns = [f"{family.removeprefix('family_')} {'all' if trials is None else trials}"
               for family in families for trials in TRIALS]
    lines = ["| variant | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cell(*table[label, family, trials])
                                                  for family in families for trials in TRIALS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", default=None,
                        help="family tables, in column order (default: " + ", ".join(FAMILIES) + " in benchmarks/data)")
    parser.add_argument("--only", default=None, metavar="TEXT", help="only the variants whose label contains TEXT")
    parser.add_argument("--orders", type=int, default=10, help="random trial orders per variant, family and N (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="processes replaying studies (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 variants, 2 orders, 24 of the mixer family's runs")
    args = parser.parse_args(argv)
    labels = [label for label in VARIANTS if args.only is None or args.only in label]
    paths = args.data or [DATA / f"{family}.csv" for family in FAMILIES]
    if args.quick:
        labels = labels[:2] if args.only is not None else list(QUICK)
        paths = args.data or [DATA / "family_mixer.csv"]
        args.orders = 2
    if not labels:
        parser.error(f"no variant's label contains {args.only!r}")
    table = benchmark(paths, labels, orders=args.orders, workers=args.workers, quick=args.quick)
    print(f"Regret pp / epochs share, {args.orders} orders:\n")
    print(markdown(table, labels, [path.stem for path in paths]))


if __name__ == "__main__":
    main()
