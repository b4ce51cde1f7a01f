"""Does pruning pay? Replay Optuna studies over recorded families and compare every pruner.

Each study runs ``--trials N`` configurations of a family table (``benchmarks/data/*.csv``,
written by ``family.py``), drawn without replacement in a random order (one order per seed;
default: every configuration once), through
``integrations.optuna.replay_study``: a trial replays its run epoch by epoch as a training
objective would — ``report_measures`` (the eight headline measures), ``trial.report``
(validation accuracy), ``trial.should_prune()``. A pruned trial has consumed the epochs it
trained; a completed one returns its final test accuracy.

Compared, with the same settings on every family (chosen on the two digits families, before
the MNIST family was benchmarked): Optuna's ``MedianPruner``, ``PercentilePruner``,
``SuccessiveHalvingPruner``, ``HyperbandPruner``, ``WilcoxonPruner`` and
``PatientPruner(MedianPruner)`` at a few settings each; a *hindsight bound* (successive
halving on each rung's best signal chosen on all of the family's runs: not a pruner anyone
could run, the least a rule of that shape costs when it knows what to trust); the earlier measure setups
(``MeasurePruner`` percentile rule on ``E_L2_BE`` and ``F_p_BE``, single-measure learned
rule, hybrid); a no-pruning and a random-pruning baseline; the previous default
(``percentile=75``, its fallback on the objective on), the recommended default,
``LearnedMeasurePruner()``, and its late-bloomer guard ``keep=0.5``. For each: epochs consumed as a share of no pruning, and regret =
the best final test accuracy among the study's N runs (what no pruning finds) minus the best
found (percentage points), mean ± standard deviation (and worst) over the orders.

    .venv/bin/python benchmarks/pruning.py --workers 2                 # every family: tables, Pareto plots
    .venv/bin/python benchmarks/pruning.py --trials 20 --workers 2     # studies of 20 trials each
    .venv/bin/python benchmarks/pruning.py --data benchmarks/data/family.csv --json
    .venv/bin/python benchmarks/pruning.py --quick                     # smoke test, seconds
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import optuna
import pandas as pd
import scipy.stats
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PatientPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
    WilcoxonPruner,
)
from optuna.trial import TrialState

import probe
from integrations.optuna import (
    LearnedMeasurePruner,
    MeasurePruner,
    RecordedRun,
    get_measures,
    replay_study,
)

DATA = Path(__file__).parent / "data"
FIGURES = Path(__file__).parent / "figures"
DEFAULT = "default: LearnedMeasurePruner()"
PRIOR = "prior="
PRUNED_PRIOR = "a study pruned by the default of"
HINDSIGHT = "hindsight bound"
PREVIOUS = "previous: LearnedMeasurePruner(percentile=75), fallback on the objective"
KEEP_HALF = "LearnedMeasurePruner(keep=0.5), the late-bloomer guard"
T = TypeVar("T")
R = TypeVar("R")
STARTUP = 5
"""Completed trials before any pruner with a startup setting prunes (Optuna's default)."""


def load_runs(path: Path) -> tuple[list[RecordedRun], int]:
    """The family table as recorded runs (epochs ``1..E``; epoch 0, before training, is not
    replayed; validation accuracy as the intermediate values, final test accuracy as the value) and ``E``."""
    frame = pd.read_csv(path, dtype={"channel_code": str})
    frame = frame[frame["epoch"] > 0]
    epochs = int(frame["epoch"].max())
    runs = []
    for run_id, group in frame.groupby("run_id", sort=True):
        group = group.set_index("epoch").sort_index()
        if list(group.index) != list(range(1, epochs + 1)):
            raise ValueError(f"{path}: run {run_id!r} lacks epochs (has {list(group.index)})")
        runs.append(RecordedRun(
            measures={e: {name: float(group.at[e, name]) for name in probe.HEADLINE_NAMES} for e in group.index},
            value=float(group.at[epochs, "test_acc"]),
            intermediate_values={e: float(group.at[e, "val_acc"]) for e in group.index},
        ))
    return runs, epochs


def families() -> list[Path]:
    """The family tables in ``benchmarks/data`` (``*_powerlaw.csv``, the MLP runs re-recorded with α, left out)."""
    return sorted(p for p in DATA.glob("*.csv") if not p.stem.endswith("_powerlaw"))


class RandomPruner(BasePruner):
    """Baseline: at step ``step``, prune each trial with probability ``share`` (seeded by trial number)."""

    def __init__(self, *, step: int, share: float, seed: int = 0) -> None:
        self._step, self._share, self._seed = step, share, seed

    def prune(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step != self._step:
            return False
        return bool(np.random.default_rng((self._seed, trial.number)).random() < self._share)


class HalvingOnSignal(BasePruner):
    """Successive halving on fixed signals: at rung ``r`` (1, η, η², …), once ``startup`` trials
    have completed, a trial runs on when its signal ranks in the top ``⌈n/η⌉`` of every trial
    that reached ``r`` (itself included), else it is pruned; a trial without a finite value runs on.

    ``signals``: rung -> (name, higher is better), ``"objective"`` for ``trial.report``'s value."""

    def __init__(self, signals: dict[int, tuple[str, bool]], *, eta: int = 3, startup: int = 3) -> None:
        self._signals, self._eta, self._startup = signals, eta, startup

    @staticmethod
    def _value(trial: optuna.trial.FrozenTrial, step: int, name: str) -> float:
        value = trial.intermediate_values.get(step) if name == "objective" else get_measures(trial).get(step, {}).get(name)
        return np.nan if value is None else float(value)

    def prune(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step not in self._signals:
            return False
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if sum(t.state == TrialState.COMPLETE for t in finished) < self._startup:
            return False
        name, higher = self._signals[step]
        sign = 1.0 if higher else -1.0
        own = sign * self._value(trial, step, name)
        if not np.isfinite(own):
            return False
        population = np.array([sign * self._value(t, step, name) for t in finished] + [own])
        population = np.sort(population[np.isfinite(population)])[::-1]
        return bool(own < population[max(1, math.ceil(len(population) / self._eta)) - 1])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ over the pairs where both are finite (NaN with fewer than 3, or where
    either side is constant there)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(scipy.stats.spearmanr(x, y)[0])


def hindsight_signals(runs: list[RecordedRun], epochs: int, *, eta: int = 3) -> dict[int, tuple[str, bool]]:
    """Per rung (1, η, η², … < ``epochs``), the signal — the objective's value or a headline measure —
    whose value there has the largest ``|Spearman ρ|`` with the final value over *all* of the family's
    runs (among those finite in ≥ 90 % of the runs), with the sign of that ρ: what a pruner could
    only know in hindsight."""
    finals = [run.value for run in runs]
    signals, rung = {}, 1
    while rung < epochs:
        candidates = {"objective": [run.intermediate_values[rung] for run in runs]}
        candidates.update({name: [run.measures[rung][name] for run in runs] for name in probe.HEADLINE_NAMES})
        rhos = {name: _spearman(np.array(values), np.array(finals)) for name, values in candidates.items()
                if np.isfinite(values).mean() >= 0.9}
        name = max((n for n in rhos if np.isfinite(rhos[n])), key=lambda n: abs(rhos[n]))
        signals[rung] = (name, bool(rhos[name] > 0))
        rung *= eta
    return signals


Setup = tuple[str, str | None, Callable[[], BasePruner]]
"""(name, measure or None, factory of a fresh pruner per study)."""


def setups(epochs: int, *, quick: bool = False, prior_runs: int = 0) -> list[Setup]:
    """The compared setups. Warm-ups are in epochs (the same on every family); only the
    resources of SuccessiveHalving/Hyperband follow the family's length, as Optuna's do.
    With ``prior_runs``, also the default with ``prior=`` a study of that many runs the
    order did not draw, unpruned or pruned by the default (built per order in :func:`_study`)."""
    def median(warmup: int) -> Callable[[], MedianPruner]:
        return lambda: MedianPruner(n_startup_trials=STARTUP, n_warmup_steps=warmup)

    rows: list[Setup] = [
        (DEFAULT, None, LearnedMeasurePruner),
        ("none", None, NopPruner),
        (PREVIOUS, None, lambda: LearnedMeasurePruner(percentile=75.0)),
        (KEEP_HALF, None, lambda: LearnedMeasurePruner(keep=0.5)),
        *([(f"{PRIOR} an unpruned study of {prior_runs} other runs (the default's settings)", None, LearnedMeasurePruner),
           (f"{PRIOR} {PRUNED_PRIOR} {prior_runs} other runs (the default's settings)", None, LearnedMeasurePruner)]
          if prior_runs else []),
        ("random 50% at epoch 3 (chance baseline)", None, lambda: RandomPruner(step=3, share=0.5)),
        (f"{HINDSIGHT}: successive halving (min 1, η=3) on each rung's best signal, chosen on all runs", None,
         NopPruner),
        ("median (warmup 1)", None, median(1)),
    ]
    if quick:
        return rows + [("hyperband (min 1, η=3)", None, lambda: HyperbandPruner(min_resource=1, max_resource=epochs))]
    for warmup in (3, 5):
        rows.append((f"median (warmup {warmup})", None, median(warmup)))
    for keep, warmup in ((75, 1), (75, 3), (90, 3), (25, 3)):
        rows.append((f"percentile {keep} (warmup {warmup})", None,
                     lambda keep=keep, warmup=warmup: PercentilePruner(keep, n_startup_trials=STARTUP, n_warmup_steps=warmup)))
    for eta in (2, 3, 4):
        rows.append((f"successive halving (min 1, η={eta})", None,
                     lambda eta=eta: SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)))
    for minimum, eta in ((1, 3), (3, 3)):
        rows.append((f"hyperband (min {minimum}, η={eta})", None,
                     lambda minimum=minimum, eta=eta: HyperbandPruner(min_resource=minimum, max_resource=epochs, reduction_factor=eta)))
    for threshold in (0.1, 0.01):
        rows.append((f"wilcoxon (p {threshold:g})", None, lambda threshold=threshold: WilcoxonPruner(p_threshold=threshold)))
    for patience, warmup in ((1, 1), (1, 3)):
        rows.append((f"patient {patience} + median (warmup {warmup})", None,
                     lambda patience=patience, warmup=warmup: PatientPruner(median(warmup)(), patience=patience)))
    for measure in ("E_L2_BE", "F_p_BE"):
        rows.append(("measure percentile 75 (each epoch ≥ 3)", measure,
                     lambda measure=measure: MeasurePruner(measure=measure, percentile=75,
                                                           n_startup_trials=STARTUP, n_warmup_steps=3)))
        rows.append(("measure percentile 50 (epoch 3 only)", measure,
                     lambda measure=measure: MeasurePruner(measure=measure, n_startup_trials=STARTUP, n_warmup_steps=3,
                                                           interval_steps=epochs)))
    rows.append(("measure learned, one measure (ρ > 0.5, epoch 3 only)", "F_p_BE",
                 lambda: LearnedMeasurePruner(measures=["F_p_BE"], objective=False, trust_threshold=0.5,
                                              n_warmup_steps=3, interval_steps=epochs)))
    rows.append(("hybrid: measure percentile 50 (epoch 3 only) + median (warmup 3)", "F_p_BE",
                 lambda: MeasurePruner(measure="F_p_BE", n_startup_trials=STARTUP, n_warmup_steps=3, interval_steps=epochs,
                                       wrapped_pruner=median(3)())))
    return rows


Family = tuple[list[RecordedRun], int, int, bool, int]
"""(runs, epochs, trials per study, quick, prior runs)."""
_STATE: dict[str, Family] = {}
"""Per worker process: family name -> its :data:`Family`, set by :func:`_init`."""
_HINDSIGHT: dict[str, dict[int, tuple[str, bool]]] = {}
"""Per worker process: family name -> its :func:`hindsight_signals` (computed once)."""


def _init(families: dict[str, Family]) -> None:
    _STATE.update(families)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    _asymptotic_wilcoxon()


def _asymptotic_wilcoxon() -> None:
    """Make ``WilcoxonPruner``'s test use scipy's normal approximation.

    Accuracies on a few hundred images tie often; for tied or zero differences scipy ≥ 1.13
    answers ``wilcoxon(method="auto")`` with a 9,999-resample permutation test — seconds per
    ``should_prune``, minutes per replayed study. scipy < 1.13 used the normal approximation
    there (the behaviour ``WilcoxonPruner`` was written against), and so does this benchmark.
    """
    import optuna.pruners._wilcoxon as module

    module.ss = types.SimpleNamespace(wilcoxon=functools.partial(scipy.stats.wilcoxon, method="asymptotic"))


def draw(n_runs: int, trials: int, seed: int) -> np.ndarray:
    """The run indices of order ``seed``: ``trials`` of ``n_runs``, without replacement, in study order."""
    return np.random.default_rng(seed).permutation(n_runs)[:trials]


def earlier_study(runs: list[RecordedRun], trials: int, prior_runs: int, seed: int, *,
                  pruned: bool = False) -> optuna.Study:
    """The ``prior=`` of order ``seed``: an in-memory study of ``prior_runs`` runs that order
    did not draw (the next ones of its permutation), unpruned or, with ``pruned``, pruned by
    the default (a user's previous study run with it)."""
    others = np.random.default_rng(seed).permutation(len(runs))[trials:trials + prior_runs]
    study = optuna.create_study(direction="maximize", pruner=LearnedMeasurePruner() if pruned else NopPruner())
    replay_study([runs[i] for i in others], study=study)
    return study


def _study(task: tuple[str, int, int]) -> tuple[int, float, float]:
    """One replayed study: (family, setup index, order seed) -> (epochs consumed, best final value
    found, best final value among the drawn runs)."""
    family, index, seed = task
    runs, epochs, trials, quick, prior_runs = _STATE[family]
    ordered = [runs[i] for i in draw(len(runs), trials, seed)]
    name, _, make = setups(epochs, quick=quick, prior_runs=prior_runs)[index]
    if name.startswith(PRIOR):
        earlier = earlier_study(runs, trials, prior_runs, seed, pruned=PRUNED_PRIOR in name)
        pruner: BasePruner = LearnedMeasurePruner(prior=earlier)
    elif name.startswith(HINDSIGHT):
        if family not in _HINDSIGHT:
            _HINDSIGHT[family] = hindsight_signals(runs, epochs)
        pruner = HalvingOnSignal(_HINDSIGHT[family])
    else:
        pruner = make()
    pruned_at = replay_study(ordered, pruner=pruner, study_name=f"order-{seed}")
    consumed = sum(epochs if step is None else step for step in pruned_at)
    found = max(run.value for run, step in zip(ordered, pruned_at) if step is None)
    return consumed, found, max(run.value for run in ordered)


def map_tasks(function: Callable[[T], R], tasks: list[T], *, workers: int,
              initializer: Callable[..., None], initargs: tuple) -> list[R]:
    """``function`` over ``tasks``, in order: on ``workers`` spawned processes, each first set up by
    ``initializer(*initargs)``, or in this process (set up the same way) when ``workers`` is 1."""
    if workers <= 1:
        initializer(*initargs)
        return list(map(function, tasks))
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers, initializer=initializer, initargs=initargs) as pool:
        return pool.map(function, tasks, chunksize=max(1, len(tasks) // (8 * workers)))


def benchmark(paths: list[Path], *, orders: int, workers: int, trials: int | None = None,
              quick: bool = False, prior_runs: int = 0, only: str | None = None) -> list[dict]:
    """Replay every setup on every family, ``trials`` runs per study (default: all); one record
    per (family, setup)."""
    families: dict[str, Family] = {}
    for path in paths:
        runs, epochs = load_runs(path)
        if quick:
            runs = runs[:: max(1, len(runs) // 24)]
        n = len(runs) if trials is None else trials
        if not 2 <= n <= len(runs):
            raise ValueError(f"--trials must be between 2 and the family's {len(runs)} runs ({path}), got {trials}")
        if prior_runs and n + prior_runs > len(runs):
            raise ValueError(f"--prior-runs {prior_runs} + --trials {n} exceed the family's {len(runs)} runs ({path})")
        families[path.stem] = (runs, epochs, n, quick, prior_runs)
    tasks = [(family, index, seed) for family, (_, epochs, _, _, _) in families.items()
             for index, setup in enumerate(setups(epochs, quick=quick, prior_runs=prior_runs))
             if only is None or only in setup[0] for seed in range(orders)]
    results = map_tasks(_study, tasks, workers=workers, initializer=_init, initargs=(families,))
    records = []
    for family, (runs, epochs, n, _, _) in families.items():
        best, full = max(run.value for run in runs), n * epochs
        for index, (name, measure, _) in enumerate(setups(epochs, quick=quick, prior_runs=prior_runs)):
            outcomes = [result for task, result in zip(tasks, results) if task[:2] == (family, index)]
            if not outcomes:
                continue
            shares = [consumed / full for consumed, _, _ in outcomes]
            regrets = [100.0 * (drawn - found) for _, found, drawn in outcomes]
            records.append({
                "family": family, "runs": len(runs), "trials": n, "epochs": epochs, "best": best,
                "pruner": name, "measure": measure,
                "epochs_share": statistics.fmean(shares), "epochs_share_std": statistics.pstdev(shares),
                "regret_pp": statistics.fmean(regrets), "regret_pp_std": statistics.pstdev(regrets),
                "regret_pp_max": max(regrets), "orders": orders,
            })
    return records


def is_optuna(record: dict) -> bool:
    """An Optuna pruner setup (not ours, not a baseline)."""
    return record["measure"] is None and not record["pruner"].startswith(
        (DEFAULT, PRIOR, HINDSIGHT, PREVIOUS, KEEP_HALF, "none", "random"))


def verdict(records: list[dict]) -> list[str]:
    """The targets (issue 25), per family: the default at ≤ 0.10 pp mean regret with ≤ 35 % of the epochs,
    and no Optuna setup within 0.02 pp of its regret with fewer epochs."""
    lines = []
    for family in dict.fromkeys(r["family"] for r in records):
        rows = [r for r in records if r["family"] == family]
        default = next((r for r in rows if r["pruner"] == DEFAULT), None)
        if default is None:
            continue
        budget = default["regret_pp"] <= 0.10 and default["epochs_share"] <= 0.35
        better = [r for r in rows if is_optuna(r) and r["regret_pp"] <= default["regret_pp"] + 0.02
                  and r["epochs_share"] < default["epochs_share"]]
        lines.append(
            f"- {family} (N = {default['trials']}): default {default['regret_pp']:.2f} pp at {default['epochs_share']:.1%} of the epochs — "
            f"≤ 0.10 pp with ≤ 35%: {'met' if budget else 'MISSED'}; Optuna setups as good (±0.02 pp) with fewer epochs: "
            + ("none" if not better else ", ".join(f"{r['pruner']} ({r['regret_pp']:.2f} pp, {r['epochs_share']:.1%})"
                                                  for r in sorted(better, key=lambda r: r["epochs_share"]))))
    return lines


def pareto_plot(records: list[dict], path: Path) -> None:
    """Regret versus epochs, one point per setup, the Optuna setups' Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = records[0]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    kinds = {"Optuna pruners": (is_optuna, "tab:blue", "o"),
             "measure setups (one chosen measure)": (lambda r: r["measure"] is not None, "tab:orange", "s"),
             "baselines": (lambda r: r["pruner"].startswith(("none", "random")), "grey", "x"),
             "hindsight bound (not a usable pruner)": (lambda r: r["pruner"].startswith(HINDSIGHT), "black", "D"),
             DEFAULT: (lambda r: r["pruner"] == DEFAULT, "tab:red", "*"),
             "previous: percentile=75": (lambda r: r["pruner"] == PREVIOUS, "tab:pink", "*"),
             "keep=0.5": (lambda r: r["pruner"] == KEEP_HALF, "tab:brown", "*"),
             "the default with prior=": (lambda r: r["pruner"].startswith(PRIOR), "tab:purple", "P")}
    for label, (keep, color, marker) in kinds.items():
        rows = [r for r in records if keep(r)]
        ax.scatter([100 * r["epochs_share"] for r in rows], [r["regret_pp"] for r in rows], c=color, marker=marker,
                   s=220 if marker == "*" else 40, label=label, zorder=3)
    front, lowest = [], float("inf")
    for r in sorted((r for r in records if is_optuna(r)), key=lambda r: (r["epochs_share"], r["regret_pp"])):
        if r["regret_pp"] < lowest:
            front.append(r)
            lowest = r["regret_pp"]
    ax.step([100 * r["epochs_share"] for r in front], [r["regret_pp"] for r in front], where="post", c="tab:blue",
            alpha=0.5, label="Optuna Pareto front")
    for r in front:
        ax.annotate(r["pruner"], (100 * r["epochs_share"], r["regret_pp"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points", color="tab:blue")
    ax.axhline(0.10, ls=":", c="k", lw=0.8)
    ax.axvline(35, ls=":", c="k", lw=0.8)
    ax.set_xlabel("epochs consumed (% of no pruning)")
    ax.set_ylabel("regret, mean over orders (pp of the drawn runs' best)")
    ax.set_title(f"{first['family']}: studies of {first['trials']} of {first['runs']} runs × {first['epochs']} epochs, "
                 f"{first['orders']} orders")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _trials(text: str) -> int | None:
    """``--trials``: a count, or ``all`` (``None``)."""
    return None if text == "all" else int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", default=None,
                        help="family tables (default: every benchmarks/data/*.csv but *_powerlaw.csv)")
    parser.add_argument("--trials", type=_trials, default=None, metavar="N",
                        help="runs per study, drawn without replacement for each order ('all', the default: every run)")
    parser.add_argument("--prior-runs", type=int, default=0, metavar="K",
                        help="also the default with prior= a study of K runs each order did not draw "
                             "(two rows: that study unpruned, and pruned by the default)")
    parser.add_argument("--only", default=None, metavar="TEXT", help="only the setups whose name contains TEXT")
    parser.add_argument("--orders", type=int, default=30, help="random trial orders (studies per setup; default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="processes replaying studies (default: %(default)s)")
    parser.add_argument("--figures", type=Path, default=FIGURES, help="Pareto plots go here (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print a JSON list (one record per family and setup), no plots")
    parser.add_argument("--quick", action="store_true", help="smoke test: 24 runs per family, 8 setups, 2 orders, no plots")
    args = parser.parse_args(argv)
    paths = args.data or families()
    if args.quick:
        args.orders = 2
    records = benchmark(paths, orders=args.orders, workers=args.workers, trials=args.trials, quick=args.quick,
                        prior_runs=args.prior_runs, only=args.only)
    if args.json:
        print(json.dumps(records, indent=1))
        return
    for family in dict.fromkeys(r["family"] for r in records):
        rows = [r for r in records if r["family"] == family]
        first = rows[0]
        print(f"\n### {family}, N = {first['trials']}: studies of {first['trials']} of {first['runs']} recorded runs × "
              f"{first['epochs']} epochs (family best final test accuracy {first['best']:.2%}); {first['orders']} random orders\n")
        print("| pruner | measure | epochs (share of no pruning) | regret (pp), mean ± sd | regret max (pp) |")
        print("|---|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['pruner']} | {r['measure'] or ''} | {r['epochs_share']:.1%} ± {r['epochs_share_std']:.1%} | "
                  f"{r['regret_pp']:.2f} ± {r['regret_pp_std']:.2f} | {r['regret_pp_max']:.2f} |")
        if not args.quick and args.only is None:
            suffix = "" if first["trials"] == first["runs"] else f"_n{first['trials']}"
            figure = args.figures / f"pruning_{family}{suffix}.png"
            pareto_plot(rows, figure)
            print(f"\nPareto plot: {figure}")
    print("\nTargets:")
    print("\n".join(verdict(records)))


if __name__ == "__main__":
    main()
