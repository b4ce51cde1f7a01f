"""Do the measures predict? Rank correlation of each headline measure, epoch by epoch, with
the family's final test accuracy and final generalisation gap (SPEC §5; paper: Spearman ≈ 0.9
by epoch 5 of 70 and ≈ 0.95 by epoch 10 for E and SQ, Adam on CIFAR-10).

Reads the table written by ``benchmarks/family.py`` and prints markdown tables (pasted into
``benchmarks/RESULTS.md``); writes the paper-style plot to ``benchmarks/figures/``.

    .venv/bin/python benchmarks/measures.py
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

import probe

HERE = Path(__file__).parent
DEFAULT_DATA = HERE / "data" / "family.csv"
DEFAULT_FIGURE = HERE / "figures" / "family_correlation.png"
BASELINES = ("val_acc", "test_acc")
"""Same-epoch accuracies, for comparison: what an objective pruner sees (val) and an oracle (test)."""
TARGETS = {"test_acc": "final test accuracy", "gap": "final gap (test − train accuracy)"}


def final_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run: final-epoch ``test_acc`` and ``gap = test_acc − train_acc`` (SPEC §6), indexed by ``run_id``."""
    last = frame.loc[frame.groupby("run_id")["epoch"].idxmax()].set_index("run_id")
    return pd.DataFrame({"test_acc": last["test_acc"], "gap": last["test_acc"] - last["train_acc"]})


def correlation_by_epoch(frame: pd.DataFrame, *, target: str, columns: list[str], method: str = "spearman") -> pd.DataFrame:
    """Correlation of each column at every epoch with the run's final ``target``.

    Parameters
    ----------
    frame:
        The family table (one row per run and epoch).
    target:
        ``"test_acc"`` or ``"gap"`` (final values, see :func:`final_outcomes`).
    columns:
        Per-epoch columns to correlate (measures, accuracies).
    method:
        ``"spearman"`` (default), ``"kendall"`` or ``"pearson"``; pairs with a NaN are dropped.

    Returns
    -------
    DataFrame
        Index ``epoch``, one column per entry of ``columns`` (NaN where fewer than 3 pairs).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got target={target!r}")
    final = final_outcomes(frame)[target]
    rows = {}
    for epoch, group in frame.groupby("epoch"):
        outcome = final.loc[group["run_id"]].to_numpy()
        rows[epoch] = {
            column: _correlate(group[column].to_numpy(), outcome, method) for column in columns
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("epoch")


def _correlate(x, y, method: str) -> float:
    pairs = pd.DataFrame({"x": x, "y": y}).replace([math.inf, -math.inf], math.nan).dropna()
    if len(pairs) < 3 or pairs["x"].nunique() < 2 or pairs["y"].nunique() < 2:
        return math.nan
    return float(pairs["x"].corr(pairs["y"], method=method))


def _markdown(table: pd.DataFrame, *, index: str) -> str:
    header = f"| {index} | " + " | ".join(table.columns) + " |"
    rule = "|---:" * (len(table.columns) + 1) + "|"
    body = [f"| {i} | " + " | ".join("—" if math.isnan(v) else f"{v:+.2f}" for v in row) + " |"
            for i, row in zip(table.index, table.to_numpy())]
    return "\n".join([header, rule, *body])


def plot(tables: dict[str, pd.DataFrame], path: Path, *, method: str, subtitle: str) -> None:
    """Paper-style figure: correlation vs epoch, one panel per target, one line per measure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4), sharey=True)
    colors = {"E": "C0", "SQ": "C1", "S": "C2", "F": "C3"}
    for ax, (target, table) in zip(axes, tables.items()):
        for name in probe.HEADLINE_NAMES:
            stem, _, variant = name.split("_")
            ax.plot(table.index, table[name], color=colors[stem], linestyle="-" if variant == "BE" else "--",
                    marker="o" if variant == "BE" else None, markersize=3, label=name)
        ax.plot(table.index, table["val_acc"], color="grey", linestyle=":", label="val_acc (same epoch)")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(f"vs {TARGETS[target]}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{method.capitalize()} correlation")
    axes[0].set_ylim(-1, 1)
    axes[-1].legend(fontsize=7, ncol=2, loc="lower right")
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="family table (default: %(default)s)")
    parser.add_argument("--figure", type=Path, default=DEFAULT_FIGURE, help="plot to write (default: %(default)s)")
    parser.add_argument("--method", choices=("spearman", "kendall", "pearson"), default="spearman", help="default: %(default)s")
    parser.add_argument("--early-share", type=float, default=0.15,
                        help="'early' = at most this share of the training epochs (default: %(default)s)")
    args = parser.parse_args(argv)

    frame = pd.read_csv(args.data, dtype={"channel_code": str})
    epochs = int(frame["epoch"].max())
    early = int(math.floor(args.early_share * epochs))
    runs = frame["run_id"].nunique()
    final = final_outcomes(frame)
    columns = [*probe.HEADLINE_NAMES, *BASELINES]
    shown = sorted({0, 1, 2, early, 5, epochs // 2, epochs} & set(range(epochs + 1)))
    print(f"{runs} runs, {epochs} epochs; final test accuracy {final['test_acc'].min():.3f}–{final['test_acc'].max():.3f} "
          f"(median {final['test_acc'].median():.3f}); {args.method} correlation, measure at epoch e vs final outcome\n")
    tables = {}
    for target, label in TARGETS.items():
        table = correlation_by_epoch(frame, target=target, columns=columns, method=args.method)
        tables[target] = table
        print(f"### {args.method.capitalize()} with {label}\n")
        print(_markdown(table.loc[shown], index="epoch"), "\n")

    by_optimizer = {
        name: correlation_by_epoch(group, target="test_acc", columns=columns, method=args.method).loc[early]
        for name, group in frame.groupby("optimizer")
    }
    print(f"### {args.method.capitalize()} with final test accuracy at epoch {early}, within each optimizer\n")
    print(_markdown(pd.DataFrame(by_optimizer).T, index="optimizer"), "\n")

    measures = tables["test_acc"].loc[1:early, list(probe.HEADLINE_NAMES)]
    best_epoch, best_name = measures.stack().idxmax()
    rho = measures.loc[best_epoch, best_name]
    strongest_epoch, strongest_name = measures.abs().stack().idxmax()
    print(f"Target ({args.method} >= +0.8 with final test accuracy at <= {args.early_share:.0%} of the epochs, "
          f"i.e. epoch 1..{early}): best {best_name} at epoch {best_epoch}: {rho:+.2f} -> "
          f"{'met' if rho >= 0.8 else 'missed'}; strongest either sign: {strongest_name} at epoch {strongest_epoch}: "
          f"{measures.loc[strongest_epoch, strongest_name]:+.2f}")
    plot(tables, args.figure, method=args.method,
         subtitle=f"{runs} GenProb-style runs on digits ({epochs} epochs); measure at epoch e vs final outcome")
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
