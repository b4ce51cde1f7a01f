"""The report's plots: Fisher-z bands on correlation-by-epoch, one y range across scatter panels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from probe.replay.analysis import correlations
from probe.replay.confidence import correlation_interval
from probe.replay.plots import correlation_figure, scatter_figure
from tests.test_replay_plots import _table


def test_interval_by_hand():
    low, high = correlation_interval(np.array([0.5]), np.array([28]), "pearson")  # se = 1/√25 = 0.2
    z, q = math.atanh(0.5), 1.959963984540054
    assert (low[0], high[0]) == pytest.approx((math.tanh(z - q * 0.2), math.tanh(z + q * 0.2)))
    low, high = correlation_interval(np.array([0.5]), np.array([28]), "spearman")
    assert high[0] - low[0] > math.tanh(z + q * 0.2) - math.tanh(z - q * 0.2)  # Spearman's se is √1.06 wider
    low, high = correlation_interval(np.array([0.9, 0.2, math.nan]), np.array([3, 4, 10]), "kendall")
    assert np.isnan(low).all() and np.isnan(high).all()  # n ≤ 4 for Kendall; NaN r
    with pytest.raises(ValueError, match="method"):
        correlation_interval(np.array([0.1]), np.array([9]), "cosine")


def test_correlation_plot_draws_a_band_around_each_point():
    result = correlations(_table(), measures=["E_L2_BE", "E_L2_AE"], targets=["test_acc"])
    figure = correlation_figure(result, target="test_acc")
    axis = next(a for a in figure.axes if a.get_visible())
    bands = axis.collections
    assert len(bands) == 2  # one per measure
    for band, measure in zip(bands, ["E_L2_BE", "E_L2_AE"]):
        rows = result[(result["measure"] == measure) & (result["target"] == "test_acc")].sort_values("epoch")
        vertices = band.get_paths()[0].vertices
        for epoch, r, n in zip(rows["epoch"], rows["spearman"], rows["n"]):
            at = vertices[np.isclose(vertices[:, 0], epoch), 1]
            low, high = correlation_interval(np.array([r]), np.array([n]), "spearman")
            if np.isnan(low[0]):  # |r| = 1: no band there
                assert abs(r) == 1.0
                continue
            assert at.min() == pytest.approx(low[0]) and at.max() == pytest.approx(high[0])
            assert at.min() <= r <= at.max()
    assert "95% interval" in figure.legends[0].get_title().get_text()


def test_scatter_panels_share_the_targets_y_range():
    table = _table()
    figure = scatter_figure(table, epoch=0, measures=["E_L2_BE", "E_L2_AE"])
    axes = [a for a in figure.axes if a.get_visible()]
    limits = {a.get_ylim() for a in axes}
    assert len(limits) == 1  # the AE panel drops two NaN points, yet keeps the same scale
    low, high = limits.pop()
    targets = table.loc[table["epoch"] == 0, "test_acc"]
    assert low < targets.min() and targets.max() < high


def test_a_perfect_correlation_has_no_band():
    """Fisher's z is infinite at |r| = 1: no interval, rather than one shrunk to the point."""
    low, high = correlation_interval(np.array([1.0, -1.0, 0.8]), np.array([4, 4, 4]), "spearman")
    assert np.isnan(low[:2]).all() and np.isnan(high[:2]).all() and low[2] < 0.8 < high[2]
