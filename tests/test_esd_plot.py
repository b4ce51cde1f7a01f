"""Per-layer ESD plots (probe.esd_plot) and ``probe measure --plot``: what is drawn, not pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probe
from probe.cli import main
from probe.esd_plot import spectra_figure

pytest.importorskip("matplotlib")


def _report() -> probe.Report:
    torch.manual_seed(0)
    state = {"fc.weight": torch.randn(64, 256), "head.weight": torch.randn(4, 64), "conv.weight": torch.randn(16, 3, 3, 3)}
    return probe.measure(state)


def test_one_panel_per_distinct_unfolding_with_the_fitted_tail():
    report = _report()
    figure = spectra_figure(report, title="t")
    axes = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["fc.weight", "head.weight", "conv.weight in", "conv.weight out"]
    fit = report.layers[0].unfoldings["in"].power_law
    assert math.isfinite(fit.alpha)
    points, line = axes[0].get_lines()[:2]
    lam = np.sort(report.layers[0].unfoldings["in"].s ** 2)
    np.testing.assert_allclose(points.get_xdata(), lam)  # the ESD: every eigenvalue
    np.testing.assert_allclose(points.get_ydata(), 1 - np.arange(64) / 64)  # its CCDF
    x, y = np.log(line.get_xdata()), np.log(line.get_ydata())
    assert np.polyfit(x, y, 1)[0] == pytest.approx(1 - fit.alpha)  # slope 1 − α over the tail
    assert line.get_xdata()[0] == pytest.approx(fit.xmin) and line.get_ydata()[0] == pytest.approx(fit.tail / 64)
    assert f"α={fit.alpha:.2f}" in " ".join(t.get_text() for t in axes[0].texts)
    head = " ".join(t.get_text() for t in axes[1].texts)  # 4 eigenvalues: no fit, said so
    assert "undefined" in head and len(axes[1].get_lines()) == 1


def test_measure_plot_writes_the_png(tmp_path, capsys):
    torch.save({"fc.weight": torch.randn(32, 64)}, tmp_path / "m.pt")
    out = tmp_path / "plots" / "esd.png"
    assert main(["measure", str(tmp_path / "m.pt"), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_measure_plot_without_an_extension_names_the_png_it_wrote(tmp_path, capsys):
    torch.save({"fc.weight": torch.randn(32, 64)}, tmp_path / "m.pt")
    assert main(["measure", str(tmp_path / "m.pt"), "--plot", str(tmp_path / "esd")]) == 0
    assert (tmp_path / "esd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'esd.png'}" in out and "epoch None" not in out
