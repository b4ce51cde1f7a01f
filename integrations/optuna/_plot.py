"""``plot_measure_history``: a stored measure against the step for every trial (matplotlib)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

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

    Completed trials are drawn as solid lines coloured by their final objective (a colour bar
    names it); pruned trials as grey dashed lines ending in a red ``x`` at the step where they
    stopped. Steps where the measure is NaN (undefined) are left as gaps, and the title says how
    many. Running and failed trials are left out.

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
    from matplotlib.colors import Normalize

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
    values = [float(value_of(t)) for t, _ in completed]
    norm = Normalize(min(values, default=0.0), max(values, default=1.0))
    for (_, points), value in zip(completed, values):
        steps, ys = zip(*points)
        ax.plot(steps, ys, marker=".", markersize=4, linewidth=1.2, color=colors(norm(value)), zorder=3)
    for _, points in pruned:
        steps, ys = zip(*points)
        ax.plot(steps, ys, marker=".", markersize=3, linewidth=0.8, linestyle="--", color=PRUNED_COLOR, zorder=2)
        ax.plot(steps[-1], ys[-1], marker="x", markersize=7, color=PRUNED_MARK, linestyle="none", zorder=4)

    if completed:
        bar = ax.figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colors), ax=ax)
        bar.set_label(f"{target_name} (completed trials)")
    if pruned:
        ax.plot([], [], linestyle="--", color=PRUNED_COLOR, marker="x", markeredgecolor=PRUNED_MARK,
                label="pruned trial (x: where it stopped)")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False, borderaxespad=0.0)
    undefined = sum(math.isnan(y) for _, points in curves for _, y in points)
    ax.set_title(
        f"{measure} per step: {len(completed)} completed, {len(pruned)} pruned trials"
        + (f"; {undefined} undefined (NaN) values not drawn" if undefined else ""),
        loc="left",
    )
    ax.set_xlabel("Step (epoch)")
    ax.set_ylabel(measure)
    ax.grid(alpha=0.3)
    return ax
