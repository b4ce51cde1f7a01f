"""Does pruning pay? Replay Optuna studies over the recorded family and compare pruners.

Each study runs every recorded configuration of ``benchmarks/data/family.csv`` once, in a
random order (one order per seed); a trial replays its run epoch by epoch exactly as a
training objective would: ``report_measures`` (the eight headline measures), then
``trial.report`` (validation accuracy), then ``trial.should_prune()``. A pruned trial has
consumed the epochs it trained; a completed one returns its final test accuracy.

For each pruner: epochs consumed as a share of no pruning, and regret = the family's best
final test accuracy minus the best found (percentage points), mean ± standard deviation
over the orders.

    .venv/bin/python benchmarks/pruning.py            # markdown table
    .venv/bin/python benchmarks/pruning.py --json     # the same numbers as JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, PercentilePruner
from optuna.trial import TrialState

import probe
from integrations.optuna import MeasurePruner, report_measures

DEFAULT_DATA = Path(__file__).parent / "data" / "family.csv"
WARMUP = 3
"""Measure pruners and the percentile sweep on validation accuracy judge from this epoch on
(15 % of the 20 recorded epochs)."""


@dataclass(frozen=True)
class Run:
    """One recorded training run, as a trial sees it."""

    measures: dict[int, dict[str, float]]  # epoch -> headline measures
    val_acc: dict[int, float]  # epoch -> validation accuracy (what trial.report gets)
    test_acc: float  # final test accuracy: the trial's value when it completes


def load_runs(path: Path) -> tuple[list[Run], int]:
    """The family table as runs (epochs ``1..E``; epoch 0, before training, is not replayed) and ``E``."""
    frame = pd.read_csv(path, dtype={"channel_code": str})
    frame = frame[frame["epoch"] > 0]
    epochs = int(frame["epoch"].max())
    runs = []
    for _, group in frame.groupby("run_id", sort=True):
        group = group.set_index("epoch").sort_index()
        if list(group.index) != list(range(1, epochs + 1)):
            raise ValueError(f"{path}: run {group['run_id'].iloc[0]!r} lacks epochs (has {list(group.index)})")
        runs.append(Run(
            measures={e: {name: float(group.at[e, name]) for name in probe.HEADLINE_NAMES} for e in group.index},
            val_acc={e: float(group.at[e, "val_acc"]) for e in group.index},
            test_acc=float(group.at[epochs, "test_acc"]),
        ))
    return runs, epochs


class RandomPruner(BasePruner):
    """Baseline: at step ``step``, prune each trial with probability ``share`` (seeded by trial number)."""

    def __init__(self, *, step: int, share: float, seed: int = 0) -> None:
        self._step, self._share, self._seed = step, share, seed

    def prune(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step != self._step:
            return False
        return bool(np.random.default_rng((self._seed, trial.number)).random() < self._share)


def pruners(epochs: int, measure: str) -> dict[str, Callable[[], BasePruner]]:
    """The compared pruner configurations, by name (factories: one fresh pruner per study).

    Objective pruners judge validation accuracy, measure pruners ``measure``; the percentile
    sweeps (``p`` = share of trials kept, Optuna's convention; 50 is the median rule) judge
    at every epoch from ``WARMUP`` on, so the two signals are compared on equal terms.
    """
    def on_val(percentile: float, warmup: int = WARMUP) -> PercentilePruner:
        return PercentilePruner(percentile, n_startup_trials=5, n_warmup_steps=warmup)

    def by_measure(**options) -> MeasurePruner:
        return MeasurePruner(measure=measure, n_startup_trials=5, n_warmup_steps=WARMUP, **options)

    configurations: dict[str, Callable[[], BasePruner]] = {
        "none": NopPruner,
        f"random 50% at epoch {WARMUP} (chance baseline)": lambda: RandomPruner(step=WARMUP, share=0.5),
        "median (warmup 1)": lambda: MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        "hyperband (min 1, η=3)": lambda: HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3),
    }
    for p in (75.0, 50.0, 25.0):
        name = f"median (warmup {WARMUP})" if p == 50 else f"val-acc percentile {p:g} (warmup {WARMUP})"
        configurations[name] = lambda p=p: MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP) if p == 50 else on_val(p)
    for p in (75.0, 50.0, 25.0):
        configurations[f"measure percentile {p:g} (each epoch ≥ {WARMUP})"] = (
            lambda p=p: by_measure(mode="percentile", direction="maximize", percentile=p))
    configurations.update({
        f"measure percentile 50 (epoch {WARMUP} only)":
            lambda: by_measure(mode="percentile", direction="maximize", interval_steps=epochs),
        f"measure learned (ρ ≥ 0.6, epoch {WARMUP} only)": lambda: by_measure(mode="learned", interval_steps=epochs),
        f"hybrid: learned + median (warmup {WARMUP})":
            lambda: by_measure(mode="learned", interval_steps=epochs,
                               wrapped_pruner=MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP)),
    })
    return configurations


def replay(runs: list[Run], order: np.ndarray, pruner: BasePruner, *, name: str) -> tuple[int, float]:
    """One study over ``runs`` in ``order``; returns (epochs consumed, best final test accuracy found).

    Like ``integrations.optuna.replay_study``, with a fixed study name: Hyperband assigns
    brackets by hashing it, so a fixed name keeps the benchmark reproducible.
    """
    study = optuna.create_study(study_name=name, direction="maximize", pruner=pruner)
    consumed = 0
    for index in order:
        run, trial = runs[index], study.ask()
        for epoch in sorted(run.measures):
            report_measures(trial, run.measures[epoch], epoch)
            trial.report(run.val_acc[epoch], epoch)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                consumed += epoch
                break
        else:
            study.tell(trial, run.test_acc)
            consumed += len(run.measures)
    return consumed, study.best_value


_RUNS: tuple[list[Run], int] | None = None
"""The recorded runs and epoch count, set in each worker by :func:`_init`."""


def _init(runs: list[Run], epochs: int) -> None:
    global _RUNS
    _RUNS = (runs, epochs)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(task: tuple[str, str, int]) -> tuple[int, float]:
    """One replayed study: measure, pruner label, order seed -> (epochs consumed, best found)."""
    measure, label, seed = task
    runs, epochs = _RUNS  # type: ignore[misc]
    order = np.random.default_rng(seed).permutation(len(runs))
    return replay(runs, order, pruners(epochs, measure)[label](), name=f"order-{seed}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="family table (default: %(default)s)")
    parser.add_argument("--orders", type=int, default=30, help="random trial orders (studies per pruner; default: %(default)s)")
    parser.add_argument("--measure", default="E_L2_BE", help="measure of the measure pruners (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="processes replaying studies (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print a JSON list (one record per pruner) instead of a table")
    args = parser.parse_args(argv)
    runs, epochs = load_runs(args.data)
    best = max(run.test_acc for run in runs)
    full = len(runs) * epochs
    labels = list(pruners(epochs, args.measure))
    tasks = [(args.measure, label, seed) for label in labels for seed in range(args.orders)]
    if args.workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(runs, epochs)) as pool:
            results = pool.map(_study, tasks, chunksize=max(1, len(tasks) // (4 * args.workers)))
    else:
        _init(runs, epochs)
        results = list(map(_study, tasks))
    records = []
    for label in labels:
        outcomes = [result for task, result in zip(tasks, results) if task[1] == label]
        shares = [consumed / full for consumed, _ in outcomes]
        regrets = [100.0 * (best - found) for _, found in outcomes]
        records.append({
            "pruner": label, "measure": args.measure if label.startswith(("measure", "hybrid")) else None,
            "epochs_share": statistics.fmean(shares), "epochs_share_std": statistics.pstdev(shares),
            "regret_pp": statistics.fmean(regrets), "regret_pp_std": statistics.pstdev(regrets),
            "regret_pp_max": max(regrets), "orders": args.orders,
        })
    if args.json:
        print(json.dumps(records, indent=1))
        return
    print(f"{len(runs)} recorded runs × {epochs} epochs, family best final test accuracy {best:.2%}; "
          f"{args.orders} random orders; measure pruners on {args.measure}\n")
    print("| pruner | epochs (share of no pruning) | regret (pp), mean ± sd | regret max (pp) |")
    print("|---|---:|---:|---:|")
    for r in records:
        print(f"| {r['pruner']} | {r['epochs_share']:.1%} ± {r['epochs_share_std']:.1%} | "
              f"{r['regret_pp']:.2f} ± {r['regret_pp_std']:.2f} | {r['regret_pp_max']:.2f} |")


if __name__ == "__main__":
    main()
