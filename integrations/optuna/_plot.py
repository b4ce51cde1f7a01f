"""``plot_measure_history``: a stored measure against the step for every trial (matplotlib)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from integrations.optuna._measures import get_measures
from probe.aggregate import check_measure_name

if TYPE_CHECKING:
    import matplotlib.axes
    import optuna

log = logging.getLogger(__name__)

PRUNED_COLOR = "0.6"
PRUNED_MARK = "tab:red"


def _objective(trial: FrozenTrial) -> float:
    assert trial.value is not None  # a completed single-objective trial
    return trial.value


def plot_measure_history(
    study: optuna.Study,
    *,
    measure: str = "E_L2_BE",
    target: Callable[[FrozenTrial], float] | None = None,
    target_name: str = "Objective Value",
    cmap: str = "viridis",
    ax: matplotlib.axes.Axes | None = None,
) -> matplotlib.axes.Axes:
    """Plot ``measure`` against the step for every completed and pruned trial, in the style of
    ``optuna.visualization.matplotlib``.

    Completed trials are drawn as solid lines coloured by the *rank* of their final objective
    among the completed trials (lowest first), so that one outlier cannot squeeze every other
    trial into one colour; the colour bar's ticks give the objective at the minimum, the
    quartiles and the maximum. Pruned trials are grey dashed lines ending in a red ``x`` at the
    step where they stopped. Steps where the measure is NaN (undefined) are left as gaps, and
    the title's second line says how many. Running and failed trials are left out.

    Parameters
    ----------
    study:
        A study whose trials stored measures with :func:`report_measures`.
    measure:
        The measure to plot, as stored (default ``"E_L2_BE"``).
    target:
        The value that colours a completed trial (default: ``trial.value``); needed for
        multi-objective studies.
    target_name:
        The colour bar's label.
    cmap:
        A matplotlib colormap name.
    ax:
        The axes to draw into (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes
        The axes, titled with the measure and the numbers of trials drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    check_measure_name(measure)
    if target is None and len(study.directions) > 1:
        raise ValueError(f"study {study.study_name!r} has several objectives: pass target= to choose the colour")
    value_of = target or _objective
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 5), layout="constrained")

    curves = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        points = sorted((step, values[measure]) for step, values in get_measures(trial).items() if measure in values)
        if points:
            curves.append((trial, points))
    if not curves:
        log.warning("no completed or pruned trial of study %r stored %r", study.study_name, measure)
    completed = [(t, p) for t, p in curves if t.state == TrialState.COMPLETE]
    pruned = [(t, p) for t, p in curves if t.state == TrialState.PRUNED]

    colors = plt.get_cmap(cmap)
    values = np.array([float(value_of(t)) for t, _ in completed])
    for (_, points), position in zip(completed, rank_positions(values)):
        steps, ys = zip(*points)
        ax.plot(steps, ys, marker=".", markersize=4, linewidth=1.2, color=colors(position), zorder=3)
    stopped_undefined = 0
    for _, points in pruned:
        steps, ys = zip(*points)
        ax.plot(steps, ys, marker=".", markersize=3, linewidth=0.8, linestyle="--", color=PRUNED_COLOR, zorder=2)
        if math.isfinite(ys[-1]):
            ax.plot(steps[-1], ys[-1], marker="x", markersize=7, color=PRUNED_MARK, linestyle="none", zorder=4)
        else:  # stopped on an undefined value: a hollow triangle on the bottom edge, at its step (no value to mark)
            stopped_undefined += 1
            ax.plot(steps[-1], 0.0, marker="v", markersize=8, markerfacecolor="none", markeredgecolor=PRUNED_MARK,
                    linestyle="none", zorder=4, transform=ax.get_xaxis_transform(), clip_on=False)

    if completed:
        bar = ax.figure.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0.0, 1.0), cmap=colors), ax=ax)
        ticks = np.linspace(0.0, 1.0, 5) if len(values) > 1 else np.array([0.5])
        bar.set_ticks(ticks.tolist(), labels=[f"{v:.4g}" for v in np.quantile(values, ticks if len(values) > 1 else [0.5])])
        bar.set_label(f"{target_name} (completed trials, by rank)")
    if pruned:
        ax.plot([], [], linestyle="--", color=PRUNED_COLOR, marker="x", markeredgecolor=PRUNED_MARK,
                label="pruned trial (x: where it stopped)")
        if stopped_undefined:
            ax.plot([], [], linestyle="none", marker="v", markerfacecolor="none", markeredgecolor=PRUNED_MARK,
                    label="pruned at an undefined (NaN) value: its step, on the bottom edge")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False, borderaxespad=0.0)
    undefined = sum(not math.isfinite(y) for _, points in curves for _, y in points)
    ax.set_title(  # two short lines: a one-line title ran into the colour bar
        f"{measure} per step\n{len(completed)} completed, {len(pruned)} pruned trials"
        + (f"; {undefined} undefined (NaN) values not drawn" if undefined else ""),
        loc="left", fontsize=10,
    )
    ax.set_xlabel("Step (epoch)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole steps only
    ax.set_ylabel(measure)
    ax.grid(alpha=0.3)
    return ax


def rank_positions(values: np.ndarray) -> np.ndarray:
    """Each value's rank among ``values`` scaled to [0, 1] (ties share their mean rank; one value: 0.5).

    Rank ``r`` of ``n`` maps to ``r/(n − 1)``: the same place as ``np.quantile``'s linear
    interpolation puts that value, so the colour bar's quantile ticks line up with the lines.
    """
    n = len(values)
    if n < 2:
        return np.full(n, 0.5)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=np.float64)
    _, inverse = np.unique(values, return_inverse=True)
    ranks = np.bincount(inverse, ranks) / np.bincount(inverse)  # mean rank of each distinct value
    return ranks[inverse] / (n - 1)
