"""Network measures stored with an Optuna trial, readable by every worker sharing the storage.

The measures go into the trial's *user attributes*, one key per step
(``probe:measures:<step>`` → ``{name: value}``), never through ``Trial.report``: Optuna
takes a pruned trial's last reported value as its result and the samplers learn from
it, so a measure reported there would corrupt the study. Values are stored JSON-safely:
NaN as ``None``, ±∞ as ``"inf"``/``"-inf"``; :func:`get_measures` turns them back into floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from probe.aggregate import HEADLINE_NAMES, check_measure_name
from probe.report import Report

if TYPE_CHECKING:
    import optuna

KEY_PREFIX = "probe:measures:"
"""User-attribute key prefix; the step follows it (``probe:measures:3``)."""

def report_measures(
    trial: optuna.trial.Trial,
    report: Report | Mapping[str, float],
    step: int,
    *,
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """Store the network measures of ``step`` with ``trial`` (user attributes, not ``trial.report``).

    Parameters
    ----------
    trial:
        The running trial (``optuna.trial.Trial``).
    report:
        A ``probe.Report`` or a plain mapping ``name -> float``.
    step:
        Non-negative step, normally the epoch (the same numbering as ``trial.report``).
        Storing the same step again replaces it.
    names:
        Measures to store. Default: for a ``Report``, the eight headline measures plus the
        measure of the study's :class:`MeasurePruner` when that is an aggregate; for a
        mapping, all of its keys.

    Returns
    -------
    dict
        The stored measures as floats (NaN where undefined).
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got step={step!r}")
    if names is None:
        names = list(report) if not isinstance(report, Report) else _default_names(trial)
    names = [check_measure_name(name, argument="names") for name in names]
    values = {}
    for name in names:
        if isinstance(report, Report):
            values[name] = float(report.value(name))
        elif name in report:
            values[name] = _as_float(report[name], name)
        else:
            raise ValueError(f"names={name!r} is not in the measures given: {sorted(report)}")
    trial.set_user_attr(f"{KEY_PREFIX}{step}", {name: _encode(v) for name, v in values.items()})
    return values


def get_measures(trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> dict[int, dict[str, float]]:
    """Measures stored with ``trial`` by :func:`report_measures`: ``{step: {name: value}}``, steps ascending."""
    attrs = trial.user_attrs
    steps = sorted(int(key[len(KEY_PREFIX):]) for key in attrs if key.startswith(KEY_PREFIX))
    return {step: _decode_all(attrs[f"{KEY_PREFIX}{step}"]) for step in steps}


def stored_measure(trial: optuna.trial.FrozenTrial, step: int, name: str) -> float | None:
    """One stored value: a float (NaN where undefined), or ``None`` when not stored at ``step``."""
    values = trial.user_attrs.get(f"{KEY_PREFIX}{step}")
    if values is None or name not in values:
        return None
    return _decode(values[name])


def latest_step(trial: optuna.trial.FrozenTrial) -> int | None:
    """The latest step with measures stored for ``trial``, or ``None``."""
    return max((int(key[len(KEY_PREFIX):]) for key in trial.user_attrs if key.startswith(KEY_PREFIX)), default=None)


def _default_names(trial: optuna.trial.Trial) -> list[str]:
    from integrations.optuna._pruner import MeasurePruner

    names = list(HEADLINE_NAMES)
    pruner = trial.study.pruner
    if isinstance(pruner, MeasurePruner) and pruner.measure not in names:
        names.append(pruner.measure)
    return names


def _as_float(value: object, name: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"measure {name!r} must be a number, got {value!r}") from None


def _encode(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _decode(value: Any) -> float:
    return math.nan if value is None else float(value)


def _decode_all(values: Mapping[str, Any]) -> dict[str, float]:
    return {name: _decode(value) for name, value in values.items()}
