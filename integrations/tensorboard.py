"""Sink: a :class:`probe.Report` -> a TensorBoard ``SummaryWriter`` at one step.

What is written (tags):

- ``probe/<name>``: each network measure in ``measures`` (headline names such as
  ``E_L2_BE`` or any aggregate name such as ``ER_L2_t6_BE``), one scalar each;
- ``probe_<q>_<variant>/<unfolding>/<layer>``: per-layer quantity ``q`` (``S, C, ER,
  spec, fro, SQ``) of the ``in``/``out`` unfolding, e.g. ``probe_SQ_BE/in/conv1.weight``.
  TensorBoard groups tags by their first path component, so each quantity is its own
  collapsible group; :func:`add_layout` adds a custom-scalars layout with one multi-line
  chart per quantity × variant × unfolding (all layers in one chart; readable for 50 layers);
- ``probe_spectrum/<layer>/<unfolding>``: a histogram of the singular values ``s`` (BE);
- ``probe_heatmap``: optionally, an image of layers × quantities (needs matplotlib).

Any ``SummaryWriter`` works: ``torch.utils.tensorboard`` or ``tensorboardX`` (the
writers that Lightning's ``TensorBoardLogger`` uses).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from probe.aggregate import HEADLINE_NAMES, VARIANTS, check_measure_name
from probe.quantities import QUANTITIES
from probe.report import Report
from probe.unfold import UNFOLDINGS

LAYER_QUANTITIES = (*QUANTITIES, "SQ")
"""Per-layer quantities that can be written: ``S, C, ER, spec, fro, SQ``."""

NETWORK_PREFIX = "probe/"
HEATMAP_TAG = "probe_heatmap"

def check_measure_names(measures: Iterable[str], *, argument: str = "measures") -> tuple[str, ...]:
    """Validate network-measure names; return them as a tuple.

    Parameters
    ----------
    measures:
        Headline names (``probe.HEADLINE_NAMES``) or aggregate names
        ``{ER|SQ|spec|fro}_{mean|L2|p|wmean|wp}_{t0..t7}_{BE|AE}``.
    argument:
        The argument name used in the error message.

    Returns
    -------
    tuple of str
        The names, in the given order.
    """
    if isinstance(measures, str):
        raise TypeError(f"{argument} must be a sequence of names, got the string {measures!r}; wrap it in a list")
    names = tuple(measures)
    for name in names:
        check_measure_name(name, argument=argument)
    if len(set(names)) != len(names):
        raise ValueError(f"{argument} has duplicate names: {list(names)}")
    return names


@dataclass(frozen=True)
class LogOptions:
    """What :func:`write_report` writes besides the network scalars.

    Parameters
    ----------
    layer_quantities:
        Per-layer quantities to write as scalars, a subset of ``S, C, ER, spec, fro, SQ``
        (default: all six); ``()`` writes no per-layer scalars.
    variants:
        ``"BE"`` (before EVBMF) and/or ``"AE"`` (after); default both.
    histograms:
        Write a histogram of each unfolding's singular values (default ``True``).
    heatmap:
        Write one ``layers × quantities`` image per call (default ``False``; needs matplotlib).
    """

    layer_quantities: tuple[str, ...] = LAYER_QUANTITIES
    variants: tuple[str, ...] = VARIANTS
    histograms: bool = True
    heatmap: bool = False

    def __post_init__(self) -> None:
        for argument, given, allowed in (
            ("layer_quantities", self.layer_quantities, LAYER_QUANTITIES),
            ("variants", self.variants, VARIANTS),
        ):
            if isinstance(given, str):
                raise TypeError(f"LogOptions({argument}=...) must be a sequence, got the string {given!r}")
            unknown = [q for q in given if q not in allowed]
            if unknown:
                raise ValueError(f"LogOptions({argument}=...): unknown {unknown}; choose from {allowed}")
            object.__setattr__(self, argument, tuple(given))
        if self.layer_quantities and not self.variants:
            raise ValueError("LogOptions(variants=()) writes no per-layer scalars; also pass layer_quantities=()")


def layer_tag(quantity: str, variant: str, unfolding: str, layer: str) -> str:
    """Tag of one per-layer scalar, e.g. ``probe_SQ_BE/in/conv1.weight``."""
    return f"probe_{quantity}_{variant}/{unfolding}/{layer}"


def spectrum_tag(layer: str, unfolding: str) -> str:
    """Tag of one singular-value histogram, e.g. ``probe_spectrum/conv1.weight/in``."""
    return f"probe_spectrum/{layer}/{unfolding}"


def layout(measures: Iterable[str] = HEADLINE_NAMES, options: LogOptions = LogOptions()) -> dict[str, dict[str, list]]:
    """The custom-scalars layout: network charts, then one multi-line chart per layer quantity.

    Returns
    -------
    dict
        ``{category: {chart title: ["Multiline", [tag regex, ...]]}}`` as
        ``SummaryWriter.add_custom_scalars`` expects.
    """
    result: dict[str, dict[str, list]] = {}
    names = check_measure_names(measures)
    if names:
        result["probe network"] = {name: ["Multiline", [f"^{re.escape(NETWORK_PREFIX + name)}$"]] for name in names}
    for variant in options.variants:
        charts = {}
        for quantity in options.layer_quantities:
            for unfolding in UNFOLDINGS:
                regex = "^" + re.escape(f"probe_{quantity}_{variant}/{unfolding}/")
                charts[f"{quantity}_{variant} {unfolding} (all layers)"] = ["Multiline", [regex]]
        if charts:
            result[f"probe layers {variant}"] = charts
    return result


def add_layout(writer: Any, measures: Iterable[str] = HEADLINE_NAMES, options: LogOptions = LogOptions()) -> None:
    """Write the custom-scalars layout of :func:`layout` once per writer (run).

    Parameters
    ----------
    writer:
        A ``SummaryWriter``.
    measures, options:
        As passed to :func:`write_report`.
    """
    charts = layout(measures, options)
    if charts:
        writer.add_custom_scalars(charts)


def write_report(
    writer: Any,
    report: Report,
    step: int,
    *,
    measures: Iterable[str] = HEADLINE_NAMES,
    options: LogOptions = LogOptions(),
) -> None:
    """Write ``report`` to ``writer`` at ``step`` (tags in the module docstring).

    Parameters
    ----------
    writer:
        A ``SummaryWriter`` (``torch.utils.tensorboard`` or ``tensorboardX``).
    report:
        What ``probe.measure`` returned.
    step:
        The global step (x axis), e.g. the epoch or the optimizer step count.
    measures:
        Network measures written as ``probe/<name>`` (default the eight headline ones).
    options:
        Per-layer scalars, histograms, heatmap (:class:`LogOptions`).
    """
    for name in check_measure_names(measures):
        writer.add_scalar(NETWORK_PREFIX + name, report.value(name), step)
    for layer in report.layers:
        for unfolding_name, unfolding in layer.unfoldings.items():
            for variant in options.variants:
                values = getattr(unfolding, variant)
                for quantity in options.layer_quantities:
                    writer.add_scalar(layer_tag(quantity, variant, unfolding_name, layer.name), values[quantity], step)
            if options.histograms and unfolding.s.size and np.isfinite(unfolding.s).all():
                writer.add_histogram(spectrum_tag(layer.name, unfolding_name), unfolding.s, step, bins="auto")
    if options.heatmap:
        writer.add_image(HEATMAP_TAG, heatmap_image(report, options), step, dataformats="HWC")


def heatmap_columns(report: Report, options: LogOptions = LogOptions()) -> tuple[list[str], np.ndarray]:
    """The heatmap's data.

    Parameters
    ----------
    report:
        What ``probe.measure`` returned.
    options:
        Its ``layer_quantities`` and ``variants`` choose the columns.

    Returns
    -------
    (list of str, ndarray)
        Column names ``{unfolding}_{quantity}_{variant}`` and a ``layers × columns`` array.
    """
    keys = [(u, q, v) for v in options.variants for q in options.layer_quantities for u in UNFOLDINGS]
    rows = [[getattr(layer.unfoldings[u], v)[q] for u, q, v in keys] for layer in report.layers]
    return [f"{u}_{q}_{v}" for u, q, v in keys], np.array(rows, dtype=np.float64).reshape(len(rows), len(keys))


def heatmap_image(report: Report, options: LogOptions = LogOptions()) -> np.ndarray:
    """Render layers (rows) × quantities (columns of :func:`heatmap_columns`) as an image.

    Each column is scaled to its own range over the layers (min → 0, max → 1), so the
    colour says how a layer compares with the others on that quantity; non-finite
    cells are grey. Uses matplotlib's Agg canvas directly (no pyplot: safe off the main thread).

    Returns
    -------
    ndarray
        RGB ``uint8`` array of shape ``(height, width, 3)``.
    """
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the probe heatmap needs matplotlib: pip install matplotlib (or LogOptions(heatmap=False))") from error
    columns, table = heatmap_columns(report, options)
    if not columns:
        raise ValueError("LogOptions(heatmap=True) needs at least one layer quantity and one variant")
    scaled = np.full(table.shape, np.nan)
    for j in range(table.shape[1]):
        column = table[:, j]
        finite = np.isfinite(column)
        if finite.any():
            low, high = column[finite].min(), column[finite].max()
            scaled[finite, j] = (column[finite] - low) / (high - low) if high > low else 0.5
    rows = len(report.layers)
    figure = Figure(figsize=(2.0 + 0.32 * len(columns), 1.2 + 0.22 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="#bbbbbb")
    image = axes.imshow(np.ma.masked_invalid(scaled), aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    axes.set_yticks(range(rows), [layer.name for layer in report.layers], fontsize=7)
    figure.colorbar(image, ax=axes, label="per-column min → max", fraction=0.04)
    figure.tight_layout()
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def network_metrics(report: Report, measures: Iterable[str] = HEADLINE_NAMES) -> dict[str, float]:
    """The network scalars as a metrics dict (what non-TensorBoard loggers and monitors get).

    Parameters
    ----------
    report:
        What ``probe.measure`` returned.
    measures:
        Network measure names (default the eight headline ones).

    Returns
    -------
    dict
        ``{"probe/<name>": value}`` in the order of ``measures``.
    """
    return {NETWORK_PREFIX + name: float(report.value(name)) for name in check_measure_names(measures)}


__all__ = [
    "LAYER_QUANTITIES",
    "LogOptions",
    "add_layout",
    "check_measure_names",
    "heatmap_columns",
    "heatmap_image",
    "layer_tag",
    "layout",
    "network_metrics",
    "spectrum_tag",
    "write_report",
]
