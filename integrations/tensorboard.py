"""Sink: a :class:`probe.Report` -> a TensorBoard ``SummaryWriter`` at one step.

What is written by default — readable at 50+ layers (8 scalar tags and 2 images per run):

- ``probe/<name>``: each network measure in ``measures`` (the eight headline names such as
  ``E_L2_BE``, or any aggregate name such as ``ER_L2_t6_BE``), one scalar each. An
  undefined value (NaN: an AE measure while EVBMF keeps nothing in any layer, or
  non-finite weights) is not written — the chart has a gap there — and the text tag
  ``probe/undefined`` says which measures are missing at that step and why;
- ``probe_heatmap/<q>``: one image per per-layer quantity ``q`` (default ``SQ, ER``; also
  ``S, C, spec, fro``): layers (rows) × the epochs logged so far (columns) with one panel per variant ×
  unfolding, one colour bar, a title and an epoch axis. Undefined cells (AE where EVBMF
  kept nothing, NaN, ``C = ∞``) are grey, never a colour. The latest image holds the
  whole history of the writer (since it was created; a resumed run starts a new one).

Opt-in through :class:`LogOptions`:

- ``probe_layer_<q>/<layer>/<variant>_<unfolding>`` per-layer scalars (e.g.
  ``probe_layer_SQ/conv1.weight/BE_in``; undefined values are not written), with a
  custom-scalars chart per quantity × variant × unfolding from :func:`add_layout`;
- ``probe_spectrum/<layer>/<unfolding>``: a histogram of the singular values ``s`` (BE).

x axis: pass the same ``step`` as your own epoch-level metrics. The project's convention
(the Lightning callback, :class:`integrations.loop.ProbeHook`, the demo) is Lightning's:
epoch-level values are logged at the index of the epoch's last optimizer step, i.e.
``optimizer steps taken so far - 1``, so that runs of all three kinds line up in one logdir.

Any ``SummaryWriter`` works: ``torch.utils.tensorboard`` or ``tensorboardX`` (the
writers that Lightning's ``TensorBoardLogger`` uses). One :class:`ReportWriter` per writer
keeps what spans steps (the layout written once, the heatmaps' history); tags and titles
come from ``_tb_layout``, the images from ``_heatmap``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from integrations._heatmap import LayerHistory, defined, heatmap_image, shown
from integrations._tb_layout import (
    NETWORK_PREFIX,
    UNDEFINED_TAG,
    heatmap_tag,
    layer_tag,
    layout,
    measure_description,
    spectrum_tag,
)
from probe.aggregate import HEADLINE_NAMES, VARIANTS, check_measure_names
from probe.quantities import QUANTITIES
from probe.report import Report

LAYER_QUANTITIES = (*QUANTITIES, "SQ")
"""Per-layer quantities that can be written: ``S, C, ER, spec, fro, SQ``."""
HEATMAP_QUANTITIES = ("SQ", "ER")
"""The default heatmaps: stable quality and effective rank, the paper's per-layer quantities
(behind the headline ``SQ`` and ``E``); each image costs about as much as measuring a small
network (``benchmarks/tensorboard_cost.py``), so the others are opt-in."""


def _quantities(argument: str, given: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(given, str):
        raise TypeError(f"LogOptions({argument}=...) must be a sequence, got the string {given!r}")
    unknown = [q for q in given if q not in allowed]  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"LogOptions({argument}=...): unknown {unknown}; choose from {allowed}")
    return tuple(given)  # type: ignore[arg-type]


@dataclass(frozen=True)
class LogOptions:
    """What :func:`write_report` writes besides the network scalars.

    Parameters
    ----------
    heatmaps:
        Per-layer quantities drawn as a layers × epochs image, one image each (default
        ``SQ, ER``; any of ``S, C, ER, spec, fro, SQ``); ``()`` draws none. Needs matplotlib
        (its Pillow draws them). Drawing and encoding take tens of milliseconds per image,
        on the thread that logs (``benchmarks/tensorboard_cost.py``).
    layer_quantities:
        Per-layer quantities also written as scalars, one tag per layer × unfolding ×
        variant (default ``()``: 24 tags per layer for all six, so opt in for small models).
    variants:
        ``"BE"`` (before EVBMF) and/or ``"AE"`` (after) for heatmaps and per-layer scalars;
        default both.
    histograms:
        Write a histogram of each unfolding's singular values, two cards per layer
        (default ``False``).
    """

    heatmaps: tuple[str, ...] = HEATMAP_QUANTITIES
    layer_quantities: tuple[str, ...] = ()
    variants: tuple[str, ...] = VARIANTS
    histograms: bool = False

    def __post_init__(self) -> None:
        for argument, allowed in (("heatmaps", LAYER_QUANTITIES), ("layer_quantities", LAYER_QUANTITIES), ("variants", VARIANTS)):
            object.__setattr__(self, argument, _quantities(argument, getattr(self, argument), allowed))
        if (self.layer_quantities or self.heatmaps) and not self.variants:
            raise ValueError("LogOptions(variants=()) leaves nothing per layer to write; also pass heatmaps=() and layer_quantities=()")


class ReportWriter:
    """Write :class:`probe.Report` s to one ``SummaryWriter``, one step at a time.

    It owns what spans steps: the custom-scalars layout (written with the first report)
    and the per-layer history the heatmaps draw (every report written through it).

    Parameters
    ----------
    writer:
        A ``SummaryWriter`` (``torch.utils.tensorboard`` or ``tensorboardX``); yours to close.
    measures:
        Network measures written as ``probe/<name>`` (default the eight headline ones).
    options:
        Heatmaps, per-layer scalars, histograms (:class:`LogOptions`).
    """

    def __init__(self, writer: Any, *, measures: Iterable[str] = HEADLINE_NAMES, options: LogOptions = LogOptions()) -> None:
        self.writer = writer
        self.measures = check_measure_names(measures)
        self.options = options
        self.history = LayerHistory()
        self._layout_written = False
        self._described: set[str] = set()

    def write(self, report: Report, step: int, *, epoch: int | None = None) -> None:
        """Write ``report`` at ``step`` (tags in the module docstring).

        Parameters
        ----------
        report:
            What ``probe.measure`` returned.
        step:
            The x axis: the step your epoch-level metrics use (convention: ``optimizer
            steps so far - 1``, as Lightning logs them; see the module docstring).
        epoch:
            The epoch the report belongs to: labels the heatmaps' columns (default: ``step``).
        """
        if not self._layout_written:
            charts = layout(self.measures, self.options.layer_quantities, self.options.variants)
            if charts:
                self.writer.add_custom_scalars(charts)
            self._layout_written = True
        self._network(report, step)
        self._layers(report, step)
        if self.options.heatmaps:
            self.history.add(report, step if epoch is None else epoch, labelled_by_epoch=epoch is not None)
            for quantity in self.options.heatmaps:
                image = heatmap_image(self.history, quantity, self.options.variants)
                self.writer.add_image(heatmap_tag(quantity), image, step, dataformats="HWC")

    def _network(self, report: Report, step: int) -> None:
        undefined = []
        for name in self.measures:
            value = report.value(name)
            if not math.isfinite(value):
                undefined.append(name)
            elif name in self._described:
                self.writer.add_scalar(NETWORK_PREFIX + name, value, step)
            else:
                self._first_scalar(NETWORK_PREFIX + name, value, step, measure_description(name))
                self._described.add(name)
        if undefined:
            self.writer.add_text(UNDEFINED_TAG, _undefined_note(report, undefined), step)

    def _first_scalar(self, tag: str, value: float, step: int, description: str) -> None:
        """A tag's first value, after a copy that carries the description TensorBoard shows on its
        card (torch's writer; others get the value alone).

        The copy is a tensor-style summary, the only kind whose metadata TensorBoard's default
        (Rust) data server keeps; the ordinary value written next at the same step replaces it
        there, and readers of scalar events (``EventAccumulator.Scalars``) see one value per step.
        """
        file_writer = getattr(self.writer, "_get_file_writer", None)
        if type(self.writer).__module__.startswith("torch.utils.tensorboard") and file_writer is not None:
            from torch.utils.tensorboard.summary import scalar

            summary = scalar(tag, value, new_style=True)
            summary.value[0].metadata.summary_description = description
            file_writer().add_summary(summary, step)
        self.writer.add_scalar(tag, value, step)

    def _layers(self, report: Report, step: int) -> None:
        options = self.options
        for layer in report.layers:
            for unfolding_name, unfolding in layer.unfoldings.items():
                for variant in options.variants if options.layer_quantities else ():
                    values = getattr(unfolding, variant)
                    for quantity in options.layer_quantities:
                        if shown(defined(unfolding, variant), values[quantity]):
                            self.writer.add_scalar(layer_tag(quantity, variant, unfolding_name, layer.name), values[quantity], step)
                if options.histograms and unfolding.s.size and np.isfinite(unfolding.s).all():
                    self.writer.add_histogram(spectrum_tag(layer.name, unfolding_name), unfolding.s, step, bins="auto")


def _undefined_note(report: Report, names: list[str]) -> str:
    """One line per undefined measure, saying what happened (``Report.why_undefined``)."""
    lines = [f"- {name}: {report.why_undefined(name)}" for name in names]
    return "Not plotted at this step (undefined):\n" + "\n".join(lines)


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
        ``{"probe/<name>": value}`` in the order of ``measures`` (NaN where undefined).
    """
    return {NETWORK_PREFIX + name: float(report.value(name)) for name in check_measure_names(measures)}


__all__ = ["HEATMAP_QUANTITIES", "LAYER_QUANTITIES", "LogOptions", "ReportWriter", "heatmap_tag", "layer_tag", "spectrum_tag"]
