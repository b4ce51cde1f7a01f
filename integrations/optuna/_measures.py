"""Network measures stored with an Optuna trial, readable by every worker sharing the storage.

The measures go into the trial's *user attributes*, never through ``Trial.report``: Optuna
takes a pruned trial's last reported value as its result and the samplers learn from it,
so a measure reported there would corrupt the study. Two kinds of attribute:

- ``probe:measures:<step>`` → ``{name: value}``: every step's measures (the history that
  :func:`get_measures` and the pruners read), stored as strict JSON: NaN as ``None``,
  ±∞ as ``"inf"``/``"-inf"``.
- ``probe:<name>`` (e.g. ``probe:E_L2_BE``) → a float: the measure at the latest step that
  stored it, and ``probe:last_step`` → that latest step. These are plain numbers (NaN and ±∞
  included, so a column stays numeric), which makes them float columns of
  ``study.trials_dataframe()`` and sortable columns of optuna-dashboard's trial table.

Attributes that other code sets under the same prefix (``probe:measures:best``, a
non-mapping value, a non-numeric entry) are ignored when reading.
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
"""User-attribute key prefix of a step's measures; the step follows it (``probe:measures:3``)."""
LATEST_PREFIX = "probe:"
"""User-attribute key prefix of a measure's latest value (``probe:E_L2_BE``)."""
STEP_KEY = "probe:last_step"
"""User-attribute key of the latest step with stored measures."""

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def report_measures(
    trial: optuna.trial.BaseTrial,
    report: Report | Mapping[str, float],
    step: int,
    *,
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """Store the network measures of ``step`` with ``trial`` (user attributes, not ``trial.report``).

    Parameters
    ----------
    trial:
        The running trial (``optuna.trial.Trial``). An ``optuna.trial.FixedTrial`` (re-running
        chosen parameters outside a study) works too: the measures go into its own
        ``user_attrs`` and are returned; no study sees them.
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
    for key, value in _step_attrs(trial.user_attrs, step, values).items():
        trial.set_user_attr(key, value)
    return values


def _step_attrs(attrs: Mapping[str, Any], step: int, values: Mapping[str, float]) -> dict[str, Any]:
    """The user attributes that storing ``values`` at ``step`` sets, given the trial's current ``attrs``.

    ``probe:last_step`` and each ``probe:<name>`` are set only where ``step`` is the latest step
    storing them; ``probe:measures:<step>`` always, last. optuna-dashboard's table lists the
    attributes in writing order (journal) or by name (RDB); either way the numeric columns
    come before the history (``probe:last_step`` sorts before ``probe:measures:``).
    """
    history = _history(attrs)
    later = {name for s, stored in history.items() if s > step for name in stored}
    new: dict[str, Any] = {}
    if step >= max(history, default=-1):
        new[STEP_KEY] = step
    new.update({f"{LATEST_PREFIX}{name}": value for name, value in values.items() if name not in later})
    new[f"{KEY_PREFIX}{step}"] = {name: _encode(value) for name, value in values.items()}
    return new


def measure_attrs(measures: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """The user attributes :func:`report_measures` leaves after storing ``measures`` (``{step: {name: value}}``).

    For building trials in bulk, e.g. ``optuna.trial.create_trial(..., user_attrs=measure_attrs(m))``.
    """
    attrs: dict[str, Any] = {}
    for step in sorted(measures):
        attrs.update(_step_attrs(attrs, step, measures[step]))
    return attrs


def get_measures(trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> dict[int, dict[str, float]]:
    """Measures stored with ``trial`` by :func:`report_measures`: ``{step: {name: value}}``, steps ascending."""
    history = _history(trial.user_attrs)
    return {step: _decode_all(history[step]) for step in sorted(history)}


def stored_measure(trial: optuna.trial.FrozenTrial, step: int, name: str) -> float | None:
    """One stored value: a float (NaN where undefined), or ``None`` when not stored at ``step``."""
    values = trial.user_attrs.get(f"{KEY_PREFIX}{step}")
    if not isinstance(values, Mapping) or name not in values:
        return None
    return _decode(values[name])


def _history(attrs: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    """``{step: raw stored mapping}`` from the attributes that follow the layout; others are skipped."""
    history = {}
    for key, value in attrs.items():
        if key.startswith(KEY_PREFIX) and isinstance(value, Mapping):
            suffix = key[len(KEY_PREFIX):]
            if suffix.isascii() and suffix.isdigit():
                history[int(suffix)] = value
    return history


def _default_names(trial: optuna.trial.BaseTrial) -> list[str]:
    from integrations.optuna._pruner import MeasurePruner

    names = list(HEADLINE_NAMES)
    study = getattr(trial, "study", None)  # FixedTrial and FrozenTrial have none
    pruner = getattr(study, "pruner", None)
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


def _decode(value: Any) -> float | None:
    """A stored entry as a float; ``None`` for an entry no :func:`report_measures` wrote."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return _NON_FINITE.get(value)
    return None


def _decode_all(values: Mapping[str, Any]) -> dict[str, float]:
    decoded = {name: _decode(value) for name, value in values.items()}
    return {name: value for name, value in decoded.items() if value is not None}
