"""Stage 6: the ``Report`` — per-layer results, network measures, and their tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from probe._text import UNDEFINED
from probe.aggregate import (
    AE_MIN_KEPT_SHARE,
    AGGREGATIONS,
    HEADLINE,
    MEASURES,
    TAIL_MEASURES,
    TRANSFORMS,
    VARIANTS,
    ae_defined,
    grid,
    parse_measure_name,
    transform,
)
from probe.aggregate import aggregate as aggregate_vector
from probe.powerlaw import PowerLawFit, fit_power_law
from probe.quantities import QUANTITIES
from probe.unfold import UNFOLDINGS


@dataclass(frozen=True)
class Unfolding:
    """One oriented ``rows × cols`` matrix of a layer (rows ≤ cols) and its quantities.

    ``s`` are its singular values (BE), ``d`` the EVBMF-kept, shrunk values (AE), both
    descending; ``sigma2`` the EVBMF noise variance. ``BE``/``AE`` map each of
    ``S, C, ER, spec, fro, SQ`` to a float. ``route``: how ``s`` was computed
    (``probe.spectrum.ROUTES``; empty for a non-finite layer), a hint for the next measure.
    """

    rows: int
    cols: int
    s: np.ndarray
    d: np.ndarray
    sigma2: float
    BE: dict[str, float]
    AE: dict[str, float]
    route: str = ""

    @cached_property
    def power_law(self) -> PowerLawFit:
        """WeightWatcher's power-law fit of ``λ = s²`` (SPEC §10), computed on first use."""
        return fit_power_law(np.square(self.s))

    def tail_value(self, measure: str) -> float:
        """``alpha`` or ``alphahat`` as an aggregation entry: NaN for a non-finite layer,
        0 (*missing*) where the fit is undefined (too few or equal eigenvalues)."""
        if np.isnan(self.s).any():
            return math.nan
        value = self.power_law.alpha if measure == "alpha" else self.power_law.alphahat
        return value if math.isfinite(value) else 0.0

    @property
    def weight(self) -> int:
        """Channel weight ``n = L`` used by the weighted aggregations."""
        return self.rows

    @property
    def kept(self) -> bool:
        """Whether EVBMF kept a component (some non-zero ``d``; ``inf`` where beyond float64 counts)."""
        return bool(self.d.size) and not bool(np.isnan(self.d).any()) and float(self.d.max()) > 0.0

    @property
    def finite(self) -> bool:
        """Whether the weights were finite (a non-finite layer's spectrum is NaN; ``inf`` only beyond float64)."""
        return not bool(np.isnan(self.s).any())


@dataclass(frozen=True)
class LayerResult:
    """A probed tensor: its name (state-dict key), shape, and ``in``/``out`` unfoldings."""

    name: str
    shape: tuple[int, ...]
    unfoldings: dict[str, Unfolding]


@dataclass(frozen=True)
class Report:
    """What ``probe.measure`` returns.

    ``layers`` in probing order; ``network`` the eight headline measures
    (``E_L2_BE, SQ_p_BE, S_p_BE, F_p_BE`` and the ``_AE`` ones; NaN where undefined:
    :meth:`why_undefined` says why). AE aggregates are defined only when EVBMF kept a
    component in at least ``AE_MIN_KEPT_SHARE`` of the unfoldings (:attr:`kept`, SPEC §5).
    """

    layers: list[LayerResult]
    network: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        network = {}
        for variant in VARIANTS:
            for name, (measure, how, t) in HEADLINE.items():
                network[f"{name}_{variant}"] = self.aggregate(measure, variant, how, t)
        object.__setattr__(self, "network", network)

    def vector(self, measure: str, variant: str) -> tuple[np.ndarray, np.ndarray]:
        """The SPEC §5 vector of ``measure`` (all ``in`` values, then all ``out``) and its weights.

        ``measure``: one of ``MEASURES``, or ``alpha``/``alphahat`` (SPEC §10, ``variant="BE"`` only).
        """
        tail = measure in TAIL_MEASURES
        if measure not in MEASURES and not tail:
            raise ValueError(f"unknown measure {measure!r}; choose one of {MEASURES + TAIL_MEASURES}")
        if variant not in VARIANTS or (tail and variant != "BE"):
            raise ValueError(f"unknown variant {variant!r} for {measure!r}; choose one of {('BE',) if tail else VARIANTS}")
        values = np.array([e.tail_value(measure) if tail else getattr(e, variant)[measure] for e in self._entries],
                          dtype=np.float64)
        return values, self._weights.copy()

    @cached_property
    def _entries(self) -> list[Unfolding]:
        """The unfoldings in SPEC §5 vector order: every layer's ``in``, then every ``out``."""
        return [layer.unfoldings[u] for u in UNFOLDINGS for layer in self.layers]

    @cached_property
    def _weights(self) -> np.ndarray:
        return np.array([e.weight for e in self._entries], dtype=np.float64)

    def grid(self, measure: str, variant: str) -> np.ndarray:
        """5 × 8 table of aggregates: rows ``mean, L2, p, wmean, wp``; columns ``t0..t7``.

        All NaN for AE when EVBMF kept a component in fewer than ``AE_MIN_KEPT_SHARE`` of the unfoldings.
        """
        table = grid(*self.vector(measure, variant))
        if variant == "AE" and not self.ae_defined:
            table[:] = math.nan
        return table

    @cached_property
    def kept(self) -> tuple[int, int]:
        """``(k, n)``: EVBMF kept a component in ``k`` of the ``n`` finite unfolding entries
        (``in`` and ``out`` of every layer, the entries of the SPEC §5 vectors)."""
        finite = [e for e in self._entries if e.finite]
        return sum(e.kept for e in finite), len(finite)

    @property
    def nonfinite_layers(self) -> list[str]:
        """The layers whose weights were not finite (NaN/Inf): their measures are NaN
        (``MeasureOptions(nonfinite="nan")``)."""
        return [layer.name for layer in self.layers if not all(u.finite for u in layer.unfoldings.values())]

    @property
    def ae_defined(self) -> bool:
        """Whether the AE aggregates are defined: EVBMF kept something in at least ``AE_MIN_KEPT_SHARE`` of the unfoldings."""
        return bool(ae_defined(*self.kept))

    def why_undefined(self, name: str) -> str | None:
        """Why the network measure ``name`` is NaN, in words; ``None`` when it is defined."""
        value = self.value(name)
        if value == value:
            return None
        if nonfinite := self.nonfinite_layers:
            more = f" and {len(nonfinite) - 3} more" if len(nonfinite) > 3 else ""
            return f"weights not finite (NaN/Inf) in {', '.join(map(repr, nonfinite[:3]))}{more}"
        parts = parse_measure_name(name, argument="name")
        if parts.variant == "AE" and not self.ae_defined:
            k, n = self.kept
            return (f"EVBMF kept a component in {k} of {n} unfoldings; AE measures need at least "
                    f"{AE_MIN_KEPT_SHARE:.0%} (fresh weights are mostly noise; training adds structure)")
        values, _ = self.vector(parts.measure, parts.variant)
        if parts.measure in TAIL_MEASURES and not np.isfinite(values[values != 0]).any():
            return "the power-law fit is undefined for every unfolding (fewer than 8 eigenvalues above 1e-5, or all equal)"
        if not values.any():
            if parts.measure == "ER" and all(len(e.d if parts.variant == "AE" else e.s) <= 1 for e in self._entries):
                return ("every ER entry is 0, which counts as missing: EVBMF kept at most one component in each "
                        "unfolding (the entropy of one value is 0)" if parts.variant == "AE"
                        else "every ER entry is 0, which counts as missing: each unfolding has one singular value")
            return f"every {parts.measure} entry is missing (0: an all-zero or fully removed spectrum)"
        return f"the transform {parts.transform} is undefined at this aggregate (the log or root of a value ≤ 0)"

    def aggregate(self, measure: str, variant: str, how: str, t: str = "t0") -> float:
        """One aggregate, e.g. ``aggregate("ER", "BE", "L2", "t6")`` = ``network["E_L2_BE"]``."""
        if how not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")
        if t not in TRANSFORMS:
            raise ValueError(f"unknown transform {t!r}; choose one of {TRANSFORMS}")
        values, weights = self.vector(measure, variant)
        if variant == "AE" and not self.ae_defined:
            return math.nan
        return transform(aggregate_vector(values, weights, how), t, len(values))  # grid's cell, alone

    def aggregates(self) -> dict[str, float]:
        """Every aggregate, named ``{measure}_{aggregation}_{transform}_{variant}`` (320 values)."""
        out = {}
        for variant in VARIANTS:
            for measure in MEASURES:
                table = self.grid(measure, variant)
                for i, how in enumerate(AGGREGATIONS):
                    for j, t in enumerate(TRANSFORMS):
                        out[f"{measure}_{how}_{t}_{variant}"] = float(table[i, j])
        return out

    def value(self, name: str) -> float:
        """A network measure by name: a headline name (``E_L2_BE``), an aggregate name, or a
        power-law name (``alpha_mean_BE``; fitted on first use, SPEC §10)."""
        if name in self.network:
            return self.network[name]
        try:
            parts = parse_measure_name(name, argument="name")
        except ValueError as error:
            raise KeyError(str(error)) from None
        return self.aggregate(parts.measure, parts.variant, parts.aggregation, parts.transform)

    def genprob_rows(self) -> list[dict[str, object]]:
        """One dict per probed layer: ``layer``, the 20 metric columns and 4 weights (SPEC §6)."""
        rows = []
        for layer in self.layers:
            row: dict[str, object] = {"layer": layer.name}
            for variant in VARIANTS:
                for u in UNFOLDINGS:
                    values = getattr(layer.unfoldings[u], variant)
                    for q in QUANTITIES:
                        row[f"{u}_{q}_{variant}"] = values[q]
            for variant in VARIANTS:
                for u in UNFOLDINGS:
                    row[f"{u}_weight_{variant}"] = layer.unfoldings[u].weight
            row["type"] = len(layer.shape)
            rows.append(row)
        return rows

    def records(self, *, power_law: bool = True) -> list[dict[str, object]]:
        """Tidy rows: one per layer × unfolding × variant, with every quantity and the rank kept.

        With ``power_law`` (default) also ``alpha`` and ``alphahat`` as aggregation entries
        (``Unfolding.tail_value``: 0 where the fit is undefined; NaN on AE rows, SPEC §10).
        """
        rows = []
        for layer in self.layers:
            for u in UNFOLDINGS:
                unfolding = layer.unfoldings[u]
                for variant in VARIANTS:
                    values = getattr(unfolding, variant)
                    kept = len(unfolding.s) if variant == "BE" else len(unfolding.d)
                    tail = {m: unfolding.tail_value(m) if variant == "BE" else math.nan
                            for m in TAIL_MEASURES} if power_law else {}
                    rows.append(
                        {"layer": layer.name, "unfolding": u, "variant": variant, "rows": unfolding.rows,
                         "cols": unfolding.cols, "weight": unfolding.weight, "kept": kept, **values, **tail}
                    )
        return rows

    def format(self) -> str:
        """A plain-text per-layer table (BE and AE) followed by the network measures.

        ``–`` marks an undefined value: NaN, or every quantity of a row whose spectrum is
        missing (``kept`` 0: EVBMF kept nothing, or an all-zero matrix; SPEC §5).
        """
        columns = ("S", "C", "ER", "spec", "fro", "SQ")
        width = max([len(layer.name) for layer in self.layers] + [5])
        header = f"{'layer':<{width}}  unf var  kept " + " ".join(f"{c:>10}" for c in columns)
        lines = [header, "-" * len(header)]
        for row in self.records(power_law=False):
            missing = row["kept"] == 0 or row["spec"] == 0.0
            cells = " ".join(f"{UNDEFINED:>10}" if missing else _cell(row[c]) for c in columns)
            lines.append(f"{row['layer']:<{width}}  {row['unfolding']:<3} {row['variant']}  {row['kept']:>4} {cells}")
        lines.append("")
        lines.extend(f"{name:<8} {value: .6g}" if value == value else f"{name:<8}  {UNDEFINED}" for name, value in self.network.items())
        reasons: dict[str, list[str]] = {}
        for name in self.network:
            reason = self.why_undefined(name)
            if reason is not None:
                reasons.setdefault(reason, []).append(name)
        lines.extend(f"{UNDEFINED} {', '.join(names)}: {reason}" for reason, names in reasons.items())
        return "\n".join(lines)

    def format_power_law(self) -> str:
        """A plain-text per-unfolding table of WeightWatcher's fit (SPEC §10), then ``alpha_mean_BE``
        and ``alphahat_mean_BE``; a linear layer's one matrix is one row. ``–``: undefined."""
        width = max([len(layer.name) for layer in self.layers] + [5])
        header = f"{'layer':<{width}}  unf  evals {'alpha':>8} {'alphahat':>9} {'x_min':>10} {'tail':>5} {'KS':>6}"
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            same = np.array_equal(layer.unfoldings["in"].s, layer.unfoldings["out"].s, equal_nan=True)
            for u in ("in",) if same else UNFOLDINGS:
                fit, evals = layer.unfoldings[u].power_law, len(layer.unfoldings[u].s)
                cells = (f"{UNDEFINED:>8} {UNDEFINED:>9} {UNDEFINED:>10} {UNDEFINED:>5} {UNDEFINED:>6}" if fit.alpha != fit.alpha
                         else f"{fit.alpha:>8.3f} {fit.alphahat:>9.3f} {fit.xmin:>10.4g} {fit.tail:>5} {fit.ks:>6.3f}")
                lines.append(f"{layer.name:<{width}}  {'both' if same else u:<4} {evals:>6} {cells}")
        lines.append("")
        for name in ("alpha_mean_BE", "alphahat_mean_BE"):
            value = self.value(name)
            lines.append(f"{name:<16} {value: .6g}" if value == value else f"{name:<16}  {UNDEFINED}")
        return "\n".join(lines)


def _cell(value: object) -> str:
    v = float(value)  # type: ignore[arg-type]
    return f"{v:>10.4g}" if math.isfinite(v) else f"{UNDEFINED if math.isnan(v) else v!s:>10}"
