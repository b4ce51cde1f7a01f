"""Do the measures predict? Rank correlation of each headline measure, epoch by epoch, with
the family's final test accuracy and final generalisation gap (SPEC §5; paper: Spearman ≈ 0.9
by epoch 5 of 70 and ≈ 0.95 by epoch 10 for E and SQ, Adam on CIFAR-10).

Reads the table written by ``benchmarks/family.py`` and prints markdown tables (pasted into
``benchmarks/RESULTS.md``); writes the paper-style plots to ``benchmarks/figures/``. The
correlations and plots are ``probe report``'s (``probe.replay.analysis``, ``probe.replay.plots``).

    .venv/bin/python benchmarks/measures.py
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pandas as pd

import probe

HERE = Path(__file__).parent
DEFAULT_DATA = HERE / "data" / "family.csv"
DEFAULT_FIGURES = HERE / "figures"
BASELINES = ("val_acc", "test_acc")
"""Same-epoch accuracies, for comparison: what an objective pruner sees (val) and an oracle (test)."""
TARGETS = {"final_test_acc": "final test accuracy", "final_gap": "final gap (test − train accuracy)"}


def with_final_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus each run's final-epoch ``final_test_acc`` and ``final_gap`` (test − train accuracy, SPEC §6)."""
    last = frame.loc[frame.groupby("run_id")["epoch"].idxmax()].set_index("run_id")
    final_test = frame["run_id"].map(last["test_acc"])
    final_gap = frame["run_id"].map(last["test_acc"] - last["train_acc"])
    return frame.assign(final_test_acc=final_test, final_gap=final_gap)


def family_correlations(frame: pd.DataFrame, *, targets: list[str], by: tuple[str, ...] = ()) -> pd.DataFrame:
    """``probe report``'s correlations (all three coefficients) of every measure and baseline with ``targets``.

    A coefficient needs the measure defined for at least half of the runs of its group (else NaN):
    a correlation over the few runs where EVBMF already keeps components is a selected subsample.
    """
    from probe.replay.analysis import correlations

    runs = frame.groupby(list(by))["run_id"].nunique().min() if by else frame["run_id"].nunique()
    return correlations(frame, measures=[*recorded_measures(frame), *BASELINES], targets=targets, by=by,
                        min_count=max(3, (runs + 1) // 2))


def correlation_table(frame: pd.DataFrame, *, target: str, method: str, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """``method`` coefficient per epoch (rows) and column (measures, then baselines), with the final ``target``."""
    result = family_correlations(frame, targets=[target], by=by)
    return result.pivot_table(index=[*by, "epoch"], columns="measure", values=method, dropna=False)[
        [*recorded_measures(frame), *BASELINES]
    ]


def recorded_measures(frame: pd.DataFrame) -> list[str]:
    """The headline measures, and WeightWatcher's α/α̂ where the family recorded them."""
    return [*probe.HEADLINE_NAMES, *(name for name in ("alpha_mean_BE", "alphahat_mean_BE") if name in frame)]


def _markdown(table: pd.DataFrame, *, index: str) -> str:
    header = f"| {index} | " + " | ".join(table.columns) + " |"
    rule = "|---:" * (len(table.columns) + 1) + "|"
    body = [f"| {i} | " + " | ".join("—" if math.isnan(v) else f"{v:+.2f}" for v in row) + " |"
            for i, row in zip(table.index, table.to_numpy())]
    return "\n".join([header, rule, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="family table (default: %(default)s)")
    parser.add_argument("--figures", type=Path, default=DEFAULT_FIGURES, help="folder for the plots (default: %(default)s)")
    parser.add_argument("--method", choices=("spearman", "kendall", "pearson"), default="spearman", help="default: %(default)s")
    parser.add_argument("--early-share", type=float, default=0.15,
                        help="'early' = at most this share of the training epochs (default: %(default)s)")
    args = parser.parse_args(argv)

    frame = with_final_outcomes(pd.read_csv(args.data, dtype={"channel_code": str}))
    epochs = int(frame["epoch"].max())
    early = math.floor(args.early_share * epochs)
    runs = frame["run_id"].nunique()
    final = frame[frame["epoch"] == epochs]["final_test_acc"]
    shown = sorted({0, 1, 2, early, 5, epochs // 2, epochs} & set(range(epochs + 1)))
    print(f"{runs} runs, {epochs} epochs; final test accuracy {final.min():.3f}–{final.max():.3f} "
          f"(median {final.median():.3f}); {args.method} correlation of the measure at epoch e with the final outcome "
          f"(val_acc, test_acc: the same-epoch accuracies, for comparison)\n")
    tables = {}
    for target, label in TARGETS.items():
        tables[target] = correlation_table(frame, target=target, method=args.method)
        print(f"#### {args.method.capitalize()} with {label}\n")
        print(_markdown(tables[target].loc[shown], index="epoch"), "\n")

    for column in (c for c in ("optimizer", "channel_code") if c in frame):
        within = correlation_table(frame, target="final_test_acc", method=args.method, by=(column,))
        print(f"#### {args.method.capitalize()} with final test accuracy at epoch {early}, within each {column}\n")
        print(_markdown(within.xs(early, level="epoch"), index=column), "\n")

    counts = frame[frame["epoch"] == early][recorded_measures(frame)].notna().sum()
    print(f"Runs with a defined measure at epoch {early} (AE measures are NaN while EVBMF keeps <= 1 component "
          f"per layer): " + ", ".join(f"{name} {count}" for name, count in counts.items()) + "\n")
    measures = tables["final_test_acc"].loc[1:early, recorded_measures(frame)]
    best_epoch, best_name = measures.stack().idxmax()
    rho = measures.loc[best_epoch, best_name]
    strongest_epoch, strongest_name = measures.abs().stack().idxmax()
    print(f"Target ({args.method} >= +0.8 with final test accuracy at <= {args.early_share:.0%} of the epochs, "
          f"i.e. epoch 1..{early}): best {best_name} at epoch {best_epoch}: {rho:+.2f} -> "
          f"{'met' if rho >= 0.8 else 'missed'}; strongest either sign: {strongest_name} at epoch {strongest_epoch}: "
          f"{measures.loc[strongest_epoch, strongest_name]:+.2f}")
    print("figures:", *(os.fspath(path) for path in plot_figures(frame, args.figures, method=args.method)))


def plot_figures(frame: pd.DataFrame, folder: Path, *, method: str) -> list[Path]:
    """Paper-style plots (``probe report``'s): coefficient vs epoch, all runs and per optimizer, per target."""
    from probe.replay.plots import plot_correlation_by_epoch

    paths = []
    for by in ((), ("optimizer",)):
        result = family_correlations(frame, targets=list(TARGETS), by=by)
        for target in TARGETS:
            name = f"family_{target}_{method}{'_by_optimizer' if by else ''}.png"
            paths.append(plot_correlation_by_epoch(result, folder / name, target=target, method=method, by=by))
    return paths


if __name__ == "__main__":
    main()
