"""plot_measure_history: one line per trial with the stored values, coloured by the objective, pruned ones marked."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import optuna
import pytest
from matplotlib.colors import to_rgba
from optuna.trial import TrialState

from integrations.optuna import plot_measure_history, report_measures

matplotlib.use("Agg")
optuna.logging.set_verbosity(optuna.logging.WARNING)

VALUES = [0.1, 0.4, 0.7, 1.0]


def _curve(value: float, steps: int) -> list[float]:
    return [value * (step + 1) for step in range(steps)]


def _study() -> optuna.Study:
    """Four completed trials (one with a NaN at step 1), two pruned, one running, one failed."""
    study = optuna.create_study(direction="maximize")
    for value in VALUES:
        trial = study.ask()
        for step, y in enumerate(_curve(value, 4)):
            report_measures(trial, {"E_L2_BE": math.nan if (value, step) == (0.4, 1) else y, "SQ_p_BE": -y}, step)
        study.tell(trial, value)
    for value, state in [(0.05, TrialState.PRUNED), (0.02, TrialState.PRUNED), (9.0, TrialState.FAIL)]:
        trial = study.ask()
        for step, y in enumerate(_curve(value, 2)):
            report_measures(trial, {"E_L2_BE": y}, step)
        study.tell(trial, state=state)
    report_measures(study.ask(), {"E_L2_BE": 50.0}, 0)  # running
    return study


def _drawn(ax) -> list[tuple[list[float], list[float], str, tuple, str]]:
    return [(list(line.get_xdata()), list(line.get_ydata()), line.get_linestyle(), to_rgba(line.get_color()),
             line.get_marker()) for line in ax.get_lines() if len(line.get_xdata())]


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


def test_lines_values_colours_and_pruned_marks():
    ax = plot_measure_history(_study())
    drawn = _drawn(ax)
    viridis = matplotlib.colormaps["viridis"]
    solid = [d for d in drawn if d[2] == "-"]
    assert len(solid) == len(VALUES)
    for value in VALUES:
        expected = _curve(value, 4)
        if value == 0.4:
            expected[1] = math.nan
        [line] = [d for d in solid if _same(d[1], expected)]
        assert line[0] == [0, 1, 2, 3]
        assert line[3] == pytest.approx(viridis((value - 0.1) / (1.0 - 0.1)))
    dashed = [d for d in drawn if d[2] == "--"]
    assert sorted(d[1] for d in dashed) == sorted([_curve(0.05, 2), _curve(0.02, 2)])
    assert all(d[3] == pytest.approx(to_rgba("0.6")) for d in dashed)
    marks = sorted((d[0], d[1]) for d in drawn if d[4] == "x")
    assert marks == [([1], [pytest.approx(0.04)]), ([1], [pytest.approx(0.1)])]
    assert ax.get_title(loc="left") == (
        "E_L2_BE per step\n4 completed, 2 pruned trials; 1 undefined (NaN) values not drawn"
    )
    assert ax.get_ylabel() == "E_L2_BE"
    assert ax.figure.axes[-1].get_ylabel() == "Objective Value (completed trials, by rank)"
    matplotlib.pyplot.close(ax.figure)


def test_target_measure_and_axes_are_chosen():
    fig, ax = matplotlib.pyplot.subplots()
    out = plot_measure_history(_study(), measure="SQ_p_BE", target=lambda t: -t.value, target_name="loss", ax=ax)
    assert out is ax
    drawn = _drawn(ax)
    assert sorted(d[1] for d in drawn) == sorted([[-y for y in _curve(v, 4)] for v in VALUES])
    lowest = next(d for d in drawn if _same(d[1], [-y for y in _curve(1.0, 4)]))
    assert lowest[3] == pytest.approx(matplotlib.colormaps["viridis"](0.0))  # target -1.0 is the smallest
    assert fig.axes[-1].get_ylabel() == "loss (completed trials, by rank)"
    assert "0 pruned" in ax.get_title(loc="left")  # no pruned trial stored SQ_p_BE
    matplotlib.pyplot.close(fig)


def _outlier_study() -> optuna.Study:
    """Twelve completed trials between 0.95 and 0.99 and one at 0.575 (the demo's outlier)."""
    study = optuna.create_study(direction="maximize")
    for value in [0.575, *np.linspace(0.95, 0.99, 12)]:
        trial = study.ask()
        for step in range(3):
            report_measures(trial, {"E_L2_BE": value + 0.1 * step}, step)
        study.tell(trial, float(value))
    return study


def test_one_outlier_leaves_the_other_trials_distinct_colours():
    ax = plot_measure_history(_outlier_study())
    colours = {round(d[1][0], 6): d[3] for d in _drawn(ax)}
    viridis = matplotlib.colormaps["viridis"]
    assert colours[0.575] == pytest.approx(viridis(0.0))  # the outlier: lowest rank
    others = [colours[round(v, 6)] for v in np.linspace(0.95, 0.99, 12)]
    assert len({tuple(np.round(c, 4)) for c in others}) == 12  # twelve colours, not one yellow
    assert others[0] == pytest.approx(viridis(1 / 12)) and others[-1] == pytest.approx(viridis(1.0))
    bar = ax.figure.axes[-1]
    labels = [float(t.get_text()) for t in bar.get_yticklabels()]
    assert labels == pytest.approx(np.quantile([0.575, *np.linspace(0.95, 0.99, 12)], [0, 0.25, 0.5, 0.75, 1]), abs=1e-4)
    matplotlib.pyplot.close(ax.figure)


def test_the_title_stays_clear_of_the_colour_bar():
    ax = plot_measure_history(_study())
    figure = ax.figure
    figure.set_size_inches(6.4, 4.8)  # matplotlib's default size, narrower than the function's own
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    title = ax.title if ax.title.get_text() else ax._left_title
    assert title.get_window_extent(renderer).x1 <= figure.axes[-1].get_window_extent(renderer).x0
    matplotlib.pyplot.close(figure)


def test_rank_positions_share_ties_and_handle_one_trial():
    from integrations.optuna._plot import rank_positions

    assert list(rank_positions(np.array([3.0, 1.0, 2.0, 2.0]))) == pytest.approx([1.0, 0.0, 0.5, 0.5])
    assert list(rank_positions(np.array([7.0]))) == [0.5]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="measure='E_L2'"):
        plot_measure_history(_study(), measure="E_L2")
    multi = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="pass target="):
        plot_measure_history(multi)


def test_a_trial_pruned_at_a_nan_value_gets_a_hollow_triangle_at_its_step():
    study = optuna.create_study(direction="maximize")
    for value in VALUES[:2]:
        trial = study.ask()
        report_measures(trial, {"E_L2_AE": value}, 0)
        study.tell(trial, value)
    trial = study.ask()
    report_measures(trial, {"E_L2_AE": 0.3}, 0)
    report_measures(trial, {"E_L2_AE": math.nan}, 1)
    study.tell(trial, state=TrialState.PRUNED)
    ax = plot_measure_history(study, measure="E_L2_AE")
    [triangle] = [d for d in _drawn(ax) if d[4] == "v"]
    assert triangle[0] == [1] and triangle[1] == [0.0]  # its step, at the bottom edge (axes coordinates)
    assert not [d for d in _drawn(ax) if d[4] == "x"]  # no value to put an x on
    assert any("undefined (NaN) value" in text.get_text() for text in ax.get_legend().get_texts())
    matplotlib.pyplot.close(ax.figure)
