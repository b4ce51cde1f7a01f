"""Per-layer spectrum plots of a ``Report``: the log-log ESD with WeightWatcher's fitted tail (SPEC §10).

One panel per distinct unfolding (a linear layer's ``in`` and ``out`` are one matrix, one
panel): the empirical complementary CDF ``P(Λ ≥ λ)`` of ``λ = s²`` on log-log axes, the
fitted power law over the tail (``λ ≥ x_min``, a straight line of slope ``1 − α``) and
``x_min`` as a vertical line. Needs matplotlib (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probe.powerlaw import THRESHOLD

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from probe.report import Report, Unfolding


def plot_spectra(report: Report, path: str | os.PathLike[str], *, title: str = "", ncols: int = 4) -> Path:
    """Write :func:`spectra_figure` to the image file ``path`` (parents created; ``.png`` added
    where it has no extension, as matplotlib does) and return the path written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    spectra_figure(report, title=title, ncols=ncols).savefig(path, dpi=100)
    return path


def spectra_figure(report: Report, *, title: str = "", ncols: int = 4) -> Figure:
    """One log-log ESD panel per distinct unfolding of ``report``, in probing order.

    Parameters
    ----------
    report:
        What ``probe.measure`` returned.
    title:
        Shown above the panels (e.g. the checkpoint's name).
    ncols:
        Panels per row.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(f"{layer.name} {u}" if _distinct(layer.unfoldings) else layer.name, unfolding)
              for layer in report.layers for u, unfolding in layer.unfoldings.items()
              if u == "in" or _distinct(layer.unfoldings)]
    if not panels:
        raise ValueError("the report has no layers to plot")
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    figure = Figure(figsize=(3.4 * ncols, 2.9 * nrows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for axis, (name, unfolding) in zip(axes, panels):
        _panel(axis, name, unfolding)
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(f"{title + ': ' if title else ''}ESD of λ = s² per unfolding, power-law tail fitted "
                    "as WeightWatcher does (red; dotted: x_min)", fontsize=10)
    return figure


def _distinct(unfoldings: dict[str, Unfolding]) -> bool:
    a, b = unfoldings["in"], unfoldings["out"]
    return (a.rows, a.cols) != (b.rows, b.cols) or not np.array_equal(a.s, b.s, equal_nan=True)


def _panel(axis: Axes, name: str, unfolding: Unfolding) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lam = np.sort(np.square(unfolding.s[np.isfinite(unfolding.s)]))
    lam = lam[lam > THRESHOLD]
    axis.set_title(name, fontsize=8)
    axis.grid(alpha=0.3, which="both", linewidth=0.5)
    if lam.size == 0:
        axis.text(0.5, 0.5, "no eigenvalue > 1e-5\n(non-finite or all-zero)", ha="center", va="center",
                  transform=axis.transAxes, fontsize=8)
        return
    ccdf = 1.0 - np.arange(lam.size) / lam.size  # P(Λ ≥ λ_i)
    axis.loglog(lam, ccdf, marker=".", markersize=3, linestyle="none", color="tab:blue", label="ESD (CCDF)")
    fit = unfolding.power_law
    if math.isfinite(fit.alpha):
        share = fit.tail / lam.size
        x = np.geomspace(fit.xmin, lam[-1], 50)
        axis.loglog(x, share * (x / fit.xmin) ** (1.0 - fit.alpha), color="tab:red", linewidth=1.5)
        axis.axvline(fit.xmin, color="tab:red", linestyle=":", linewidth=1)
        label = f"α={fit.alpha:.2f}  α̂={fit.alphahat:.2f}\ntail {fit.tail} of {lam.size}, KS {fit.ks:.3f}"
    else:
        label = f"α undefined ({lam.size} eigenvalues > 1e-5;\nthe fit needs 8 with spread)"
    axis.text(0.03, 0.04, label, transform=axis.transAxes, fontsize=7, va="bottom",
              bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    axis.set_xlabel("λ", fontsize=8)
    axis.set_ylabel("P(Λ ≥ λ)", fontsize=8)
    axis.tick_params(labelsize=7)
    # ticks at 1, 2, 5 × 10ᵏ as plain numbers (labelled within a decade), at 10ᵏ alone over more than two decades: no overlap
    for ax, low, high in ((axis.xaxis, lam[0], lam[-1]), (axis.yaxis, ccdf[-1], 1.0)):
        ax.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if high <= 100 * low else (1.0,), numticks=12))
        ax.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.set_minor_formatter(NullFormatter())
