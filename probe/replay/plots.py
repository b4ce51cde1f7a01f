"""Paper-style PNG plots (Agg, no pyplot state): correlation against epoch per measure
(Fig. 5c/d) and measure-against-target scatter panels at one epoch (Fig. 5a/b).

Each plot says how many models stand behind it and how many were left out for a NaN
(e.g. an AE measure where EVBMF kept nothing); legends sit outside the data."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probe.replay.confidence import correlation_interval

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

_BASE_COLOURS = {"E_L2": "tab:blue", "SQ_p": "tab:red", "S_p": "tab:green", "F_p": "tab:purple"}
_TITLES = {"test_acc": "test accuracy", "gap": "generalisation gap\n(test acc − train acc)",
           "pearson": "Pearson r", "spearman": "Spearman ρ", "kendall": "Kendall τ"}


def title(name: str) -> str:
    """What a target or coefficient column is, for an axis label (the gap says how it is computed)."""
    return _TITLES.get(name, name)


def measure_label(name: str) -> str:
    """Short label: ``E_L2_BE`` → ``E (BE)``, aggregates unchanged."""
    base, _, variant = name.rpartition("_")
    return f"{base.split('_')[0]} ({variant})" if base in _BASE_COLOURS else name


def _style(name: str, index: int) -> dict[str, object]:
    base, _, variant = name.rpartition("_")
    colour = _BASE_COLOURS.get(base, f"C{index % 10}")
    return {"color": colour, "linestyle": "--" if variant == "AE" else "-", "marker": "s" if variant == "AE" else "o"}


def _left_out(count: int, total: int | None = None) -> str:
    return f", {count}{f' of {total}' if total else ''} NaN left out" if count else ""


def plot_correlation_by_epoch(
    correlations: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    target: str = "test_acc",
    method: str = "spearman",
    by: Sequence[str] = ("dataset",),
) -> Path:
    """Write :func:`correlation_figure` to the PNG file ``path`` and return ``path``."""
    return _save(correlation_figure(correlations, target=target, method=method, by=by), path)


def correlation_figure(
    correlations: pd.DataFrame,
    *,
    target: str = "test_acc",
    method: str = "spearman",
    by: Sequence[str] = ("dataset",),
) -> Figure:
    """One line per measure: the ``method`` coefficient with ``target`` against epoch, with its
    95% confidence band (Fisher z, :mod:`probe.replay.confidence`, from the ``n`` models
    behind each point), and under it the number of models behind each epoch.

    Parameters
    ----------
    correlations:
        The output of ``analysis.correlations`` (its ``models`` and ``n`` columns give the
        bars and, per measure, how many models were left out for a NaN, shown in the legend).
    target, method:
        Which target column and coefficient to draw.
    by:
        Grouping columns of ``correlations``; one panel per group.

    Returns
    -------
    Figure
        A matplotlib ``Figure`` (Agg canvas, no pyplot state); the legend sits outside the panels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = correlations[correlations["target"] == target]
    groups = list(rows.groupby(list(by), dropna=False, sort=True)) if by else [((), rows)]
    ncols = max(1, min(3, len(groups)))
    nrows = math.ceil(max(len(groups), 1) / ncols)
    figure = Figure(figsize=(4.6 * ncols + 2.2, 4.4 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(2 * nrows, ncols, squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 1] * nrows})
    for index in range(len(groups), nrows * ncols):
        grid[2 * (index // ncols), index % ncols].set_visible(False)
        grid[2 * (index // ncols) + 1, index % ncols].set_visible(False)
    handles: dict[str, object] = {}
    for index, (key, group) in enumerate(groups):
        axis, counts = grid[2 * (index // ncols), index % ncols], grid[2 * (index // ncols) + 1, index % ncols]
        notes = []  # with several panels the legend names each measure once; each panel counts its own NaN
        for number, (measure, series) in enumerate(group.groupby("measure", sort=False)):
            series = series.sort_values("epoch")
            total = int(series["models"].sum())
            left_out = _left_out(total - int(series["n"].sum()), total)
            label = measure_label(measure) + (left_out if len(groups) == 1 else "")
            if left_out and len(groups) > 1:
                notes.append(f"{measure_label(measure)}{left_out[1:]}")
            (line,) = axis.plot(series["epoch"], series[method], label=label, **_style(measure, number))
            low, high = correlation_interval(series[method].to_numpy(), series["n"].to_numpy(), method)
            _band(axis, series["epoch"].to_numpy(), low, high, line)
            handles.setdefault(label, line)
        if notes:
            axis.text(0.02, 0.02, "\n".join(notes), transform=axis.transAxes, fontsize=6.5, va="bottom",
                      bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        axis.axhline(0.0, color="0.6", linewidth=0.8)
        axis.set_ylim(-1.05, 1.05)
        axis.set_ylabel(f"{title(method)} with {title(target)}", fontsize=9)
        keys = key if isinstance(key, tuple) else (key,)
        axis.set_title(", ".join(f"{c}={v}" for c, v in zip(by, keys)) or "all checkpoints", fontsize=10)
        axis.grid(alpha=0.3)
        models = group.groupby("epoch")["models"].max()
        counts.bar(models.index, models.to_numpy(), color="0.6", width=0.8)
        counts.set_ylabel("models", fontsize=9)
        counts.set_xlabel("epoch")
        counts.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs and models only
        counts.yaxis.set_major_locator(MaxNLocator(integer=True))
        counts.set_ylim(0, max(1, int(models.max()) if len(models) else 1) * 1.15)
        counts.grid(alpha=0.3, axis="y")
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8,  # type: ignore[call-overload]
                      title="measure (dashed: AE)\nband: 95% interval (Fisher z;\nfilled BE, outlined AE)", title_fontsize=8)
    return figure


def plot_scatter(
    table: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    epoch: int,
    measures: Sequence[str],
    target: str = "test_acc",
    color_by: str = "optimizer",
) -> Path:
    """Write :func:`scatter_figure` to the PNG file ``path`` and return ``path``."""
    return _save(scatter_figure(table, epoch=epoch, measures=measures, target=target, color_by=color_by), path)


def scatter_figure(
    table: pd.DataFrame,
    *,
    epoch: int,
    measures: Sequence[str],
    target: str = "test_acc",
    color_by: str = "optimizer",
) -> Figure:
    """One panel per measure: each checkpoint of ``epoch`` as a point (measure, target).

    Parameters
    ----------
    table:
        One row per checkpoint with ``epoch``, the measures, the target and ``color_by``.
    epoch:
        The epoch to show.
    measures:
        Measure columns, one panel each; the panel title gives Spearman's ρ, the number
        of points drawn and how many were left out for a NaN. Every panel shares the y
        range of all the epoch's targets, whichever points a panel leaves out.
    target:
        The y axis (default ``test_acc``).
    color_by:
        Column whose values colour the points (ignored if absent or empty).

    Returns
    -------
    Figure
        A matplotlib ``Figure`` (Agg canvas, no pyplot state); the legend sits outside the panels.
    """
    from scipy import stats

    rows = table[table["epoch"] == epoch]
    colours = rows[color_by].fillna("").astype(str) if color_by in rows.columns else None
    categories = sorted(colours.unique()) if colours is not None else [""]
    figure, axes = _grid(len(measures), ncols=4, size=(3.6, 3.3))
    ylim = _shared_limits(rows[target].to_numpy(np.float64))  # every panel: the epoch's whole target range
    handles = {}
    for axis, measure in zip(axes, measures):
        x, y = rows[measure].to_numpy(np.float64), rows[target].to_numpy(np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        for index, category in enumerate(categories):
            pick = ok & ((colours == category).to_numpy() if colours is not None else True)
            handles[category] = axis.scatter(x[pick], y[pick], s=14, alpha=0.8, color=f"C{index % 10}")
        rho = stats.spearmanr(x[ok], y[ok])[0] if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0 else math.nan
        axis.set_title(f"{measure_label(measure)}: ρ={rho:.2f}, n={int(ok.sum())}{_left_out(int((~ok).sum()))}", fontsize=9)
        axis.set_xlabel(measure)
        axis.set_ylabel(title(target), fontsize=9)
        if ylim is not None:
            axis.set_ylim(*ylim)
        axis.grid(alpha=0.3)
    if colours is not None and len(categories) > 1:
        figure.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, title=color_by,
                      title_fontsize=8)
    figure.suptitle(f"epoch {epoch}: measures against {title(target).replace(chr(10), ' ')}, {len(rows)} models", fontsize=11)
    return figure


def _band(axis, x: np.ndarray, low: np.ndarray, high: np.ndarray, line) -> None:
    """A solid line's band is filled; a dashed (AE) line's is outlined dashed, so overlapping bands stay apart."""
    if line.get_linestyle() == "--":
        axis.fill_between(x, low, high, facecolor="none", edgecolor=line.get_color(), linestyle="--", linewidth=0.7, alpha=0.7)
    else:
        axis.fill_between(x, low, high, color=line.get_color(), alpha=0.12, linewidth=0)


def _shared_limits(values: np.ndarray) -> tuple[float, float] | None:
    """Axis limits covering every finite value with a 5% margin (``None`` if there is none):
    panels that drop different NaN points still share one scale."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    low, high = float(finite.min()), float(finite.max())
    margin = 0.05 * (high - low) or 0.05 * max(abs(high), 1.0)
    return low - margin, high + margin


def _grid(count: int, *, ncols: int, size: tuple[float, float]) -> tuple[Figure, list]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    figure = Figure(figsize=(size[0] * ncols + 1.2, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
