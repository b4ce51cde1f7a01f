"""Stage 5: per-unfolding vectors -> network measures (SPEC §5).

Five aggregations × eight transforms of each measure vector, and the paper's four
headline network measures. Entries equal to 0 are *missing*; NaN entries (a layer with
non-finite weights measured with ``nonfinite="nan"``) make the aggregate NaN.
WeightWatcher's power-law measures ``alpha`` and ``alphahat`` (SPEC §10, BE only) use the
same aggregations and transforms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

AGGREGATIONS = ("mean", "L2", "p", "wmean", "wp")
TRANSFORMS = tuple(f"t{i}" for i in range(8))
MEASURES = ("SQ", "ER", "spec", "fro")
VARIANTS = ("BE", "AE")
TAIL_MEASURES = ("alpha", "alphahat")
"""WeightWatcher's power-law exponent α and α̂ = α·log10 λ_max of each unfolding (SPEC §10), BE only."""

HEADLINE = {
    # API name: (measure, aggregation, transform)
    "E_L2": ("ER", "L2", "t6"),
    "SQ_p": ("SQ", "p", "t0"),
    "S_p": ("spec", "p", "t7"),
    "F_p": ("fro", "p", "t7"),
}
"""The paper's four network measures; the API names add ``_BE`` or ``_AE``."""

AE_MIN_KEPT_SHARE = 0.5
"""An AE aggregate is defined only when EVBMF kept a component in at least this share of the
unfoldings (SPEC §5): with fewer, "after denoising" describes a few layers, not the network
(one kept unfolding of 42 would give ``SQ_p_AE = π/2``)."""

HEADLINE_NAMES = tuple(f"{name}_{variant}" for variant in VARIANTS for name in HEADLINE)


def ae_defined(kept: Any, finite: Any) -> Any:
    """SPEC §5's rule: AE aggregates are defined where EVBMF kept a component in ``kept`` of the
    ``finite`` unfoldings, at least ``AE_MIN_KEPT_SHARE`` of them (ints, or arrays/Series of them)."""
    return (finite > 0) & (kept >= AE_MIN_KEPT_SHARE * finite)

AGGREGATE_NAMES = tuple(
    f"{m}_{a}_{t}_{v}" for v in VARIANTS for m in MEASURES for a in AGGREGATIONS for t in TRANSFORMS
)
"""Every aggregate as a network-measure name, ``{measure}_{aggregation}_{transform}_{variant}``."""

TAIL_SHORT = {"alpha_mean": ("alpha", "mean", "t0"), "alphahat_mean": ("alphahat", "mean", "t0")}
"""WeightWatcher's summary means (``alpha``, ``alpha_weighted``); the API names add ``_BE``."""

TAIL_NAMES = (*(f"{name}_BE" for name in TAIL_SHORT),
              *(f"{m}_{a}_{t}_BE" for m in TAIL_MEASURES for a in AGGREGATIONS for t in TRANSFORMS))
"""The power-law measures' names: ``alpha_mean_BE``, ``alphahat_mean_BE`` and ``{alpha|alphahat}_{aggregation}_{transform}_BE``."""

_SHORT = {**HEADLINE, **TAIL_SHORT}
_NAMES = frozenset((*HEADLINE_NAMES, *AGGREGATE_NAMES, *TAIL_NAMES))


class MeasureName(NamedTuple):
    """A network-measure name split into its parts (``parse_measure_name``)."""

    name: str
    measure: str
    aggregation: str
    transform: str
    variant: str


def parse_measure_name(name: object, *, argument: str = "measure") -> MeasureName:
    """Split a network-measure name into its parts; the one grammar of measure names.

    Valid: ``HEADLINE_NAMES`` (``E_L2_BE`` …), ``AGGREGATE_NAMES``
    (``{measure}_{aggregation}_{transform}_{variant}``, e.g. ``ER_L2_t6_BE``) and
    ``TAIL_NAMES`` (``alpha_mean_BE``, ``alphahat_p_t0_BE`` …). Anything else raises
    ``ValueError`` naming ``argument``.

    >>> parse_measure_name("E_L2_BE")
    MeasureName(name='E_L2_BE', measure='ER', aggregation='L2', transform='t6', variant='BE')
    """
    if isinstance(name, str) and name in _NAMES:
        base, _, variant = name.rpartition("_")
        measure, aggregation, transform = _SHORT.get(base) or base.split("_")
        return MeasureName(name, measure, aggregation, transform, variant)
    raise ValueError(
        f"unknown network measure {argument}={name!r}: use one of {', '.join(HEADLINE_NAMES)} "
        "or an aggregate '{ER|SQ|spec|fro}_{mean|L2|p|wmean|wp}_{t0..t7}_{BE|AE}', e.g. 'ER_L2_t6_BE', "
        "or a power-law measure 'alpha_mean_BE', 'alphahat_mean_BE', '{alpha|alphahat}_{aggregation}_{t0..t7}_BE'"
    )


def check_measure_name(name: object, *, argument: str = "measure") -> str:
    """Return ``name`` if it names a network measure, else raise ``ValueError`` (``parse_measure_name``)."""
    return parse_measure_name(name, argument=argument).name


def aggregate(values: np.ndarray, weights: np.ndarray, how: str) -> float:
    """Aggregate one measure vector ``values`` (channel ``weights``) by ``how``.

    Returns NaN if every entry is missing or any entry is NaN.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")
    x = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if np.isnan(x).any():
        return math.nan
    present = x != 0.0
    x, w = x[present], w[present]
    count = x.size
    if count == 0:
        return math.nan
    if (x == x[0]).all():  # equal entries: their value exactly (a sum of logs would move it by ulps,
        return float(abs(x[0]) if how == "L2" else x[0])  # and a column of equal measures stop being constant)
    with np.errstate(divide="ignore", invalid="ignore"):
        if how == "mean":  # Σx/D; = Σ|x|/D for the §4 quantities (≥ 0), signed for alphahat
            return float(x.sum() / count)
        if how == "L2":  # scaled by the largest entry, so that x² cannot overflow
            top = np.abs(x).max()
            return float(top * math.sqrt(((x / top) ** 2).sum()) / math.sqrt(count))
        if how == "p":
            return float(np.exp(np.log(x).sum() / count))
        if how == "wmean":
            return float((w * x).sum() / w.sum())
        return float(np.exp((w * np.log(x)).sum() / w.sum()))  # "wp"


def transform(value: float, how: str, count: int) -> float:
    """Apply transform ``t0``..``t7`` to an aggregate, ``count`` = full entry count ``N``."""
    if how not in TRANSFORMS:
        raise ValueError(f"unknown transform {how!r}; choose one of {TRANSFORMS}")
    index = int(how[1])
    a = value * count if index % 2 else value
    if math.isnan(a) or (index >= 2 and a < 0):
        return math.nan
    if index in (2, 3, 6, 7):
        a = math.sqrt(a)
    if index >= 4:
        a = math.log(a) if a > 0 else math.nan
    return a


def grid(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The 5 × 8 table: rows ``AGGREGATIONS``, columns ``TRANSFORMS``."""
    count = len(values)
    table = np.empty((len(AGGREGATIONS), len(TRANSFORMS)))
    for i, how in enumerate(AGGREGATIONS):
        a = aggregate(values, weights, how)
        for j, t in enumerate(TRANSFORMS):
            table[i, j] = transform(a, t, count)
    return table


def check_measure_names(measures: Iterable[str], *, argument: str = "measures") -> tuple[str, ...]:
    """Validate network-measure names; return them as a tuple.

    Parameters
    ----------
    measures:
        Headline names (``probe.HEADLINE_NAMES``), aggregate names
        ``{ER|SQ|spec|fro}_{mean|L2|p|wmean|wp}_{t0..t7}_{BE|AE}`` or power-law names
        (``TAIL_NAMES``).
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
