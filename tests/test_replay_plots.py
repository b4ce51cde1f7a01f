"""probe.replay.plots: what a reader sees in the report's PNGs (counts, NaNs, gap, legends clear of data)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from probe.replay.analysis import correlations
from probe.replay.plots import correlation_figure, scatter_figure


def _table() -> pd.DataFrame:
    """8 models at epoch 0, 5 at epoch 1 (3 pruned); E_L2_AE is NaN for 2 models at epoch 0."""
    rng = np.random.default_rng(0)
    rows = []
    for epoch, models in ((0, 8), (1, 5)):
        for m in range(models):
            test = 0.5 + 0.05 * m + rng.normal(0, 0.01)
            rows.append({"dataset": "D", "optimizer": ("SGD", "AdaM")[m % 2], "epoch": epoch, "test_acc": test,
                         "gap": test - (test + 0.02 * m), "E_L2_BE": 0.1 * m + epoch,
                         "E_L2_AE": math.nan if (epoch == 0 and m < 2) else 0.2 * m})
    return pd.DataFrame(rows)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legend_clear_of_axes(figure) -> None:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    box = legend.get_window_extent(renderer)
    for axis in figure.axes:
        if axis.get_visible():
            assert not _overlaps(box, axis.get_window_extent(renderer)), axis.get_title()


def test_correlations_count_models_and_pairs() -> None:
    result = correlations(_table(), measures=["E_L2_BE", "E_L2_AE"], targets=["test_acc"])
    counts = result.set_index(["epoch", "measure"])[["models", "n"]]
    assert counts.loc[(0, "E_L2_BE")].tolist() == [8, 8]
    assert counts.loc[(0, "E_L2_AE")].tolist() == [8, 6]  # two NaNs left out
    assert counts.loc[(1, "E_L2_AE")].tolist() == [5, 5]


def test_correlation_plot_shows_models_per_epoch_nan_counts_and_the_gaps_sign() -> None:
    result = correlations(_table(), measures=["E_L2_BE", "E_L2_AE"], targets=["test_acc", "gap"])
    figure = correlation_figure(result, target="gap")
    lines, bars = [axis for axis in figure.axes if axis.get_visible()]
    assert "test acc − train acc" in lines.get_ylabel()
    assert [patch.get_height() for patch in bars.patches] == [8, 5]  # models per epoch
    assert bars.get_ylabel() == "models"
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["E (BE)", "E (AE), 2 of 13 NaN left out"]
    _legend_clear_of_axes(figure)


def test_scatter_titles_count_points_drawn_and_left_out() -> None:
    figure = scatter_figure(_table(), epoch=0, measures=["E_L2_BE", "E_L2_AE"], target="test_acc")
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[0].endswith("n=8") and titles[1].endswith("n=6, 2 NaN left out")
    drawn = sum(len(collection.get_offsets()) for collection in figure.axes[1].collections)
    assert drawn == 6
    assert "8 models" in figure.get_suptitle()
    _legend_clear_of_axes(figure)


@pytest.mark.parametrize("groups", [1, 4])
def test_several_groups_keep_the_legend_outside(groups: int) -> None:
    table = pd.concat([_table().assign(dataset=f"D{g}") for g in range(groups)])
    figure = correlation_figure(correlations(table, measures=["E_L2_BE", "E_L2_AE"], targets=["test_acc"]))
    assert len([axis for axis in figure.axes if axis.get_visible()]) == 2 * groups
    _legend_clear_of_axes(figure)
