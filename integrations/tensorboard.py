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
writers that Lightning's ``TensorBoardLogger`` uses).
"""

from __future__ import annotations

import functools
import math
import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probe.aggregate import HEADLINE_NAMES, VARIANTS, check_measure_name, parse_measure_name
from probe.quantities import QUANTITIES
from probe.report import Report, Unfolding
from probe.unfold import UNFOLDINGS

LAYER_QUANTITIES = (*QUANTITIES, "SQ")
"""Per-layer quantities that can be written: ``S, C, ER, spec, fro, SQ``."""
HEATMAP_QUANTITIES = ("SQ", "ER")
"""The default heatmaps: stable quality and effective rank, the paper's per-layer quantities
(behind the headline ``SQ`` and ``E``); each image costs about as much as measuring a small
network (``benchmarks/tensorboard_cost.py``), so the others are opt-in."""

NETWORK_PREFIX = "probe/"
UNDEFINED_TAG = "probe/undefined"
HEATMAP_PREFIX = "probe_heatmap/"

QUANTITY_TITLES = {
    "S": "normalised stable rank", "C": "condition number", "ER": "effective rank (spectral entropy)",
    "spec": "spectral norm", "fro": "Frobenius norm", "SQ": "stable quality",
}
_MEASURE_TITLES = {"SQ": "stable quality", "ER": "effective rank", "spec": "spectral norm", "fro": "Frobenius norm"}
VARIANT_TITLES = {"BE": "BE (raw weights)", "AE": "AE (after EVBMF denoising)"}
UNFOLDING_TITLES = {"in": "in-channel unfolding", "out": "out-channel unfolding"}


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


def layer_tag(quantity: str, variant: str, unfolding: str, layer: str) -> str:
    """Tag of one per-layer scalar, e.g. ``probe_layer_SQ/conv1.weight/BE_in``.

    The quantity leads (TensorBoard groups by it) and variant and unfolding end the tag,
    so they stay visible when TensorBoard shortens a long tag in the middle.
    """
    return f"probe_layer_{quantity}/{layer}/{variant}_{unfolding}"


def spectrum_tag(layer: str, unfolding: str) -> str:
    """Tag of one singular-value histogram, e.g. ``probe_spectrum/conv1.weight/in``."""
    return f"probe_spectrum/{layer}/{unfolding}"


def heatmap_tag(quantity: str) -> str:
    """Tag of one layers × epochs image, e.g. ``probe_heatmap/SQ``."""
    return HEATMAP_PREFIX + quantity


def measure_title(name: str) -> str:
    """What a network measure is, e.g. ``E_L2_BE`` → ``E_L2_BE: effective rank, L2 aggregate (t6), BE (raw weights)``."""
    parts = parse_measure_name(name)
    return f"{name}: {_MEASURE_TITLES[parts.measure]}, {parts.aggregation} aggregate ({parts.transform}), {VARIANT_TITLES[parts.variant]}"


def layout(measures: Iterable[str] = HEADLINE_NAMES, options: LogOptions = LogOptions()) -> dict[str, dict[str, list]]:
    """The custom-scalars layout: one chart per network measure, then (with per-layer
    scalars) one multi-line chart per quantity × variant × unfolding, lines = layers.

    Returns
    -------
    dict
        ``{category: {chart title: ["Multiline", [tag regex, ...]]}}`` as
        ``SummaryWriter.add_custom_scalars`` expects.
    """
    result: dict[str, dict[str, list]] = {}
    names = check_measure_names(measures)
    if names:
        result["probe network"] = {measure_title(name): ["Multiline", [f"^{re.escape(NETWORK_PREFIX + name)}$"]] for name in names}
    for variant in options.variants:
        charts = {}
        for quantity in options.layer_quantities:
            for unfolding in UNFOLDINGS:
                regex = "^" + re.escape(f"probe_layer_{quantity}/") + ".*" + re.escape(f"/{variant}_{unfolding}") + "$"
                title = f"{quantity} ({QUANTITY_TITLES[quantity]}), {UNFOLDING_TITLES[unfolding]}, {VARIANT_TITLES[variant]}: one line per layer"
                charts[title] = ["Multiline", [regex]]
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


def defined(unfolding: Unfolding, variant: str) -> bool:
    """Whether ``variant``'s quantities of ``unfolding`` exist: some non-zero, finite
    singular value (BE) or some value EVBMF kept (AE). Otherwise they are 0 = missing (SPEC §5)."""
    values = unfolding.s if variant == "BE" else unfolding.d
    return bool(values.size) and bool(np.isfinite(values).all()) and float(values.max()) > 0.0


def write_report(
    writer: Any,
    report: Report,
    step: int,
    *,
    measures: Iterable[str] = HEADLINE_NAMES,
    options: LogOptions = LogOptions(),
    epoch: int | None = None,
) -> None:
    """Write ``report`` to ``writer`` at ``step`` (tags in the module docstring).

    Parameters
    ----------
    writer:
        A ``SummaryWriter`` (``torch.utils.tensorboard`` or ``tensorboardX``).
    report:
        What ``probe.measure`` returned.
    step:
        The x axis: the step your epoch-level metrics use (convention: ``optimizer steps
        so far - 1``, as Lightning logs them; see the module docstring).
    measures:
        Network measures written as ``probe/<name>`` (default the eight headline ones).
    options:
        Heatmaps, per-layer scalars, histograms (:class:`LogOptions`).
    epoch:
        The epoch the report belongs to: labels the heatmaps' columns (default: ``step``).
    """
    undefined = []
    for name in check_measure_names(measures):
        value = report.value(name)
        if math.isfinite(value):
            writer.add_scalar(NETWORK_PREFIX + name, value, step)
        else:
            undefined.append(name)
    if undefined:
        writer.add_text(UNDEFINED_TAG, _undefined_note(report, undefined), step)
    for layer in report.layers:
        for unfolding_name, unfolding in layer.unfoldings.items():
            for variant in options.variants if options.layer_quantities else ():
                values = getattr(unfolding, variant)
                for quantity in options.layer_quantities:
                    if defined(unfolding, variant) and math.isfinite(values[quantity]):
                        writer.add_scalar(layer_tag(quantity, variant, unfolding_name, layer.name), values[quantity], step)
            if options.histograms and unfolding.s.size and np.isfinite(unfolding.s).all():
                writer.add_histogram(spectrum_tag(layer.name, unfolding_name), unfolding.s, step, bins="auto")
    if options.heatmaps:
        history = _history(writer)
        history.add(report, step if epoch is None else epoch, labelled_by_epoch=epoch is not None)
        for quantity in options.heatmaps:
            image = heatmap_image(history, quantity, options.variants)
            writer.add_image(heatmap_tag(quantity), image, step, dataformats="HWC")


def _undefined_note(report: Report, names: list[str]) -> str:
    nonfinite = any(not np.isfinite(u.s).all() for layer in report.layers for u in layer.unfoldings.values())
    why = ("some weights are not finite (NaN/Inf)" if nonfinite
           else "every entry is missing: for AE measures, EVBMF kept no component of any layer (as on freshly "
                "initialised weights; training adds structure)")
    return f"Not plotted at this step (undefined): {', '.join(names)}. Why: {why}."


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


# ---------------------------------------------------------------- layers × epochs images


@dataclass
class LayerHistory:
    """Per-layer values of every report written to one writer, for the heatmaps.

    ``columns`` maps an x label (epoch, or step) to ``{(layer, unfolding, variant, quantity): value}``,
    NaN where undefined; ``layers`` keeps the order layers first appeared in.
    """

    columns: dict[int, dict[tuple[str, str, str, str], float]] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    labelled_by_epoch: bool = True

    def add(self, report: Report, label: int, *, labelled_by_epoch: bool = True) -> None:
        """Record ``report`` as column ``label`` (replacing an earlier one with that label)."""
        column = {}
        for layer in report.layers:
            if layer.name not in self.layers:
                self.layers.append(layer.name)
            for u, unfolding in layer.unfoldings.items():
                for variant in VARIANTS:
                    ok = defined(unfolding, variant)
                    for q, value in getattr(unfolding, variant).items():
                        column[(layer.name, u, variant, q)] = value if ok and math.isfinite(value) else math.nan
        self.columns[int(label)] = column
        self.labelled_by_epoch = self.labelled_by_epoch and labelled_by_epoch

    def table(self, quantity: str, unfolding: str, variant: str) -> tuple[list[int], np.ndarray]:
        """x labels (sorted) and the ``layers × labels`` array of one quantity."""
        labels = sorted(self.columns)
        table = np.array([[self.columns[x].get((layer, unfolding, variant, quantity), math.nan) for x in labels]
                          for layer in self.layers], dtype=np.float64)
        return labels, table.reshape(len(self.layers), len(labels))


_HISTORIES: weakref.WeakKeyDictionary[Any, LayerHistory] = weakref.WeakKeyDictionary()


def _history(writer: Any) -> LayerHistory:
    """The writer's :class:`LayerHistory` (lives as long as the writer)."""
    try:
        return _HISTORIES.setdefault(writer, LayerHistory())
    except TypeError:  # a writer that cannot be weakly referenced: draw this step alone
        return LayerHistory()


def heatmap_image(history: LayerHistory, quantity: str, variants: Iterable[str] = VARIANTS) -> np.ndarray:
    """Render one quantity of ``history`` as layers (rows) × epochs (columns), one panel per
    variant × unfolding, a shared colour scale (``log10 C`` for ``C``), grey where undefined.

    Drawn with Pillow (matplotlib's dependency; about 10 ms), since it runs every epoch on
    the logging thread; matplotlib provides the colour map and the font.

    Returns
    -------
    ndarray
        RGB ``uint8`` array of shape ``(height, width, 3)``.
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the probe heatmaps need matplotlib: pip install matplotlib (or LogOptions(heatmaps=()))") from error
    panels = [(u, v) for v in variants for u in UNFOLDINGS]
    labels = sorted(history.columns)
    tables = [history.table(quantity, *panel)[1] for panel in panels]
    if quantity == "C":  # condition numbers span orders of magnitude: colour by log10
        with np.errstate(divide="ignore", invalid="ignore"):
            tables = [np.where(t > 0, np.log10(t), np.nan) for t in tables]
    values = np.concatenate([t.ravel() for t in tables]) if tables else np.array([])
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, low + 0.5
    names, common = _short_names(history.layers)
    rows, n = len(names), max(len(labels), 1)
    small = rows > 40
    font, bold, title_font = _font(9 if small else 11), _font(11), _font(15)
    cell_h, cell_w = (10 if small else 12), int(np.clip(120 // n, 3, 16))
    axis_label = "epoch" if history.labelled_by_epoch else "step"
    layer_label = f"layer ({common})" if common else "layer"
    name_w = int(max([font.getlength(name) for name in names] + [font.getlength(layer_label)])) + 16
    panel_w, gap, top = cell_w * n, 16, 64
    grid_h = cell_h * rows
    bar_x = name_w + len(panels) * (panel_w + gap) + 8
    width, height = bar_x + 90, top + grid_h + 66
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    span = f"{axis_label}s {labels[0]}–{labels[-1]}" if len(labels) > 1 else f"{axis_label} {labels[0]}" if labels else ""
    draw.text((10, 8), f"{quantity}: {QUANTITY_TITLES[quantity]} per layer, {span}", font=title_font, fill="black")
    draw.text((name_w - 8, top - 6), layer_label, font=font, fill="black", anchor="rs")
    lut = _viridis()
    every = max(1, math.ceil(n / max(1, panel_w // 28)))
    for index, ((unfolding, variant), table) in enumerate(zip(panels, tables)):
        x0 = name_w + index * (panel_w + gap)
        with np.errstate(invalid="ignore"):
            shade = np.clip((table - low) / (high - low) * 255, 0, 255)
        rgb = np.where(np.isfinite(table)[..., None], lut[np.nan_to_num(shade).astype(np.uint8)], np.uint8(200))
        block = np.repeat(np.repeat(rgb.reshape(rows, len(labels), 3), cell_h, axis=0), cell_w, axis=1)
        if block.size:
            canvas.paste(Image.fromarray(np.ascontiguousarray(block, dtype=np.uint8)), (x0, top))
        draw.text((x0 + panel_w / 2, top - 6), f"{unfolding}-channel, {variant}", font=bold, fill="black", anchor="ms")
        for i in range(0, len(labels), every):
            draw.text((x0 + (i + 0.5) * cell_w, top + grid_h + 4), str(labels[i]), font=font, fill="black", anchor="ma")
    canvas.paste(_names_image(tuple(names), 9 if small else 11, cell_h, name_w - 8), (0, top))
    draw.text((name_w + (len(panels) * (panel_w + gap) - gap) / 2, top + grid_h + 20), f"{axis_label}, in each panel",
              font=font, fill="black", anchor="ma")
    gradient = lut[np.linspace(255, 0, max(grid_h, 1)).astype(np.uint8)][:, None, :].repeat(14, axis=1)
    canvas.paste(Image.fromarray(np.ascontiguousarray(gradient)), (bar_x, top))
    draw.text((bar_x, top - 6), "log₁₀ C" if quantity == "C" else quantity, font=bold, fill="black", anchor="ls")
    for fraction in np.linspace(0, 1, 5 if grid_h >= 80 else 2):
        y = top + (1 - fraction) * (grid_h - 1)
        draw.line((bar_x + 14, y, bar_x + 18, y), fill="black")
        draw.text((bar_x + 21, y), f"{low + fraction * (high - low):.3g}", font=font, fill="black", anchor="lm")
    if not np.isfinite(values).all():
        y = height - 14
        draw.rectangle((10, y - 5, 22, y + 5), fill=(200, 200, 200))
        draw.text((28, y), "undefined: EVBMF kept nothing, NaN or ∞", font=font, fill="black", anchor="lm")
    return np.asarray(canvas)


@functools.lru_cache(maxsize=16)
def _names_image(names: tuple[str, ...], size: int, cell_h: int, width: int) -> Any:
    """The layer-name column, right-aligned, one name per ``cell_h`` rows (cached: names rarely change)."""
    from PIL import Image, ImageDraw

    column = Image.new("RGB", (width, cell_h * len(names)), "white")
    draw = ImageDraw.Draw(column)
    for row, name in enumerate(names):
        draw.text((width, (row + 0.5) * cell_h), name, font=_font(size), fill="black", anchor="rm")
    return column


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


@functools.lru_cache(maxsize=1)
def _viridis() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def _short_names(layers: list[str]) -> tuple[list[str], str]:
    """Layer names without the dotted prefix and suffix they all share, and that shared part
    (``model.a.weight``, ``model.b.weight`` → ``a``, ``b`` and ``model.….weight``)."""
    parts = [name.split(".") for name in layers]
    if len(parts) < 2:
        return list(layers), ""
    shortest = min(len(p) for p in parts)
    head = next((i for i in range(shortest) if len({p[i] for p in parts}) > 1), shortest)
    tail = next((i for i in range(shortest - head) if len({p[-1 - i] for p in parts}) > 1), shortest - head)
    if head + tail >= shortest:  # keep at least one component of every name
        return list(layers), ""
    names = [".".join(p[head:len(p) - tail]) for p in parts]
    common = ".".join(parts[0][:head]) + ("." if head else "") + "…" + ("." if tail else "") + ".".join(parts[0][len(parts[0]) - tail:])
    return names, common if head or tail else ""


__all__ = [
    "HEATMAP_QUANTITIES",
    "LAYER_QUANTITIES",
    "LayerHistory",
    "LogOptions",
    "add_layout",
    "check_measure_names",
    "defined",
    "heatmap_image",
    "heatmap_tag",
    "layer_tag",
    "layout",
    "measure_title",
    "network_metrics",
    "spectrum_tag",
    "write_report",
]
