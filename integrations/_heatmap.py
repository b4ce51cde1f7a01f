"""Drawing: the layers × epochs heatmap images (one quantity, every epoch written so far).

Drawn with Pillow (matplotlib's dependency; about 10 ms an image), since it runs every
epoch on the logging thread; matplotlib provides the colour map and the font.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from integrations._tb_layout import QUANTITY_TITLES
from probe.aggregate import VARIANTS
from probe.report import Report, Unfolding
from probe.unfold import UNFOLDINGS


def defined(unfolding: Unfolding, variant: str) -> bool:
    """Whether ``variant``'s quantities of ``unfolding`` exist: some non-zero, finite
    singular value (BE) or some value EVBMF kept (AE). Otherwise they are 0 = missing (SPEC §5)."""
    values = unfolding.s if variant == "BE" else unfolding.d
    return bool(values.size) and bool(np.isfinite(values).all()) and float(values.max()) > 0.0



def shown(defined: bool, value: float) -> bool:
    """Whether a per-layer value is drawn: its spectrum is defined and the value is finite and
    not 0, which SPEC §5 counts as *missing* (e.g. ``ER = 0`` where EVBMF kept one component)."""
    return defined and math.isfinite(value) and value != 0.0


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
                        column[(layer.name, u, variant, q)] = value if shown(ok, value) else math.nan
        self.columns[int(label)] = column
        self.labelled_by_epoch = self.labelled_by_epoch and labelled_by_epoch

    def table(self, quantity: str, unfolding: str, variant: str) -> tuple[list[int], np.ndarray]:
        """x labels (sorted) and the ``layers × labels`` array of one quantity."""
        labels = sorted(self.columns)
        table = np.array([[self.columns[x].get((layer, unfolding, variant, quantity), math.nan) for x in labels]
                          for layer in self.layers], dtype=np.float64)
        return labels, table.reshape(len(self.layers), len(labels))


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
        draw.text((28, y), undefined_legend(quantity), font=font, fill="black", anchor="lm")
    return np.asarray(canvas)


def undefined_legend(quantity: str) -> str:
    """The grey cells' legend: which entries of ``quantity`` are missing (SPEC §5: a 0 entry)."""
    kept = "EVBMF kept ≤ 1 component" if quantity == "ER" else "EVBMF kept nothing"  # the entropy of one value is 0
    return f"undefined: missing (0, e.g. {kept}), NaN or ∞"


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
