"""Network measures stored with an Optuna trial, readable by every worker sharing the storage.

The measures are stored as trial attributes, never through ``Trial.report``: Optuna takes a
pruned trial's last reported value as its result and the samplers learn from it, so a
measure reported there would corrupt the study. Two kinds of attribute:

- ``probe:<name>`` (e.g. ``probe:E_L2_BE``), a *user attribute* holding a float: the measure
  at the latest step it was stored at, and ``probe:last_step``, the latest step any measure
  was stored at. These are plain numbers
  (NaN and ±∞ included, so a column stays numeric): float columns of
  ``study.trials_dataframe()`` and sortable columns of optuna-dashboard's trial table.
- ``probe:measures:<step>`` → ``{name: value}``, a *system attribute*: every step's measures
  (the history that :func:`get_measures` and the pruners read), kept out of the user
  attributes so that dashboards show one compact row per trial. Stored as strict JSON: NaN
  as ``None``, ±∞ as ``"inf"``/``"-inf"``. Trials without a storage (``FixedTrial``) keep it
  in their user attributes, where studies written by earlier versions have it too; both
  places are read.

Attributes that other code sets under the same prefix (``probe:measures:best``, a
non-mapping value, a non-numeric entry) are ignored when reading.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import optuna

from probe.aggregate import HEADLINE_NAMES, check_measure_name
from probe.report import Report

KEY_PREFIX = "probe:measures:"
"""Attribute key prefix of a step's measures; the step follows it (``probe:measures:3``)."""
LATEST_PREFIX = "probe:"
"""User-attribute key prefix of a measure's value at the latest step (``probe:E_L2_BE``)."""
STEP_KEY = "probe:last_step"
"""User-attribute key of the step the latest values come from."""

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

AnyTrial = optuna.trial.Trial | optuna.trial.FixedTrial | optuna.trial.FrozenTrial
"""The trials measures are stored with and read from."""


def report_measures(
    trial: AnyTrial,
    report: Report | Mapping[str, float],
    step: int,
    *,
    measures: Iterable[str] | None = None,
) -> dict[str, float]:
    """Store the network measures of ``step`` with ``trial`` (trial attributes, not ``trial.report``; layout above).

    Parameters
    ----------
    trial:
        The running trial (``optuna.trial.Trial``). An ``optuna.trial.FixedTrial`` (re-running
        chosen parameters outside a study) works too: the measures are returned and kept in
        its own ``user_attrs``; no study sees them.
    report:
        A ``probe.Report`` or a plain mapping ``name -> float``.
    step:
        Non-negative integer step (``int``, a numpy or 0-d torch integer), normally the epoch
        (the same numbering as ``trial.report``). Storing a measure at a step again replaces
        its value there; the step's other measures stay.
    measures:
        Names of the measures to store. Default: for a ``Report``, the eight headline measures plus the
        measure of the study's :class:`MeasurePruner` when that is an aggregate; for a
        mapping, all of its keys.

    Returns
    -------
    dict
        The stored measures as floats (NaN where undefined).
    """
    step = _as_step(step)
    if measures is None:
        measures = list(report) if not isinstance(report, Report) else _default_names(trial)
    names = [check_measure_name(name, argument="measures") for name in measures]
    values = {}
    for name in names:
        if isinstance(report, Report):
            values[name] = float(report.value(name))
        elif name in report:
            values[name] = _as_float(report[name], name)
        else:
            raise ValueError(f"measures={name!r} is not in the measures given: {sorted(report)}")
    history = get_measures(trial)
    latest, entry = _step_attrs(history, step, {**history.get(step, {}), **values})
    for key, value in latest.items():
        trial.set_user_attr(key, value)
    if isinstance(trial, optuna.trial.Trial):
        trial.storage.set_trial_system_attr(trial._trial_id, *entry)
    else:  # FixedTrial, FrozenTrial: no storage
        trial.set_user_attr(*entry)
    return values


def _step_attrs(history: Mapping[int, Mapping[str, float]], step: int,
                values: Mapping[str, float]) -> tuple[dict[str, Any], tuple[str, Any]]:
    """What storing ``values`` (all of the step's measures) at ``step`` of a trial with the
    stored ``history`` writes: the latest-value user attributes (each name not stored at a
    later step, and ``probe:last_step``), and the history entry."""
    later = {name for other, stored in history.items() if other > step for name in stored}
    latest: dict[str, Any] = {f"{LATEST_PREFIX}{name}": value for name, value in values.items() if name not in later}
    latest[STEP_KEY] = max([step, *history])
    return latest, (f"{KEY_PREFIX}{step}", {name: _encode(value) for name, value in values.items()})


def measured_trial(measures: Mapping[int, Mapping[str, float]], **kwargs: Any) -> optuna.trial.FrozenTrial:
    """``optuna.trial.create_trial(**kwargs)`` carrying ``measures`` (``{step: {name: value}}``) as
    :func:`report_measures` stores them; for adding finished trials in bulk (``study.add_trials``)."""
    user_attrs, system_attrs = dict(kwargs.pop("user_attrs", {})), dict(kwargs.pop("system_attrs", {}))
    for step in sorted(measures):
        latest, (key, value) = _step_attrs({}, step, measures[step])  # ascending: each step the latest so far
        user_attrs.update(latest)
        system_attrs[key] = value
    return optuna.trial.create_trial(user_attrs=user_attrs, system_attrs=system_attrs, **kwargs)


def get_measures(trial: AnyTrial) -> dict[int, dict[str, float]]:
    """Measures stored with ``trial`` by :func:`report_measures`: ``{step: {name: value}}``, steps ascending."""
    history = {**_history(trial.user_attrs), **_history(_system_attrs(trial))}
    return {step: _decode_all(history[step]) for step in sorted(history)}


def stored_measure(trial: AnyTrial, step: int, name: str) -> float | None:
    """One stored value: a float (NaN where undefined), or ``None`` when not stored at ``step``."""
    values = _stored_step(trial, step)
    return _decode(values[name]) if name in values else None


def _stored_step(trial: AnyTrial, step: int) -> Mapping[str, Any]:
    """The raw stored measures of ``step`` (empty where none)."""
    key = f"{KEY_PREFIX}{step}"
    values = _system_attrs(trial).get(key)
    if not isinstance(values, Mapping):
        values = trial.user_attrs.get(key)
    return values if isinstance(values, Mapping) else {}


def _system_attrs(trial: AnyTrial) -> dict[str, Any]:
    if isinstance(trial, optuna.trial.Trial):  # a live trial has no system_attrs property
        return trial.storage.get_trial_system_attrs(trial._trial_id)
    return trial.system_attrs


def _history(attrs: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    """``{step: raw stored mapping}`` from the attributes that follow the layout; others are skipped."""
    history = {}
    for key, value in attrs.items():
        if key.startswith(KEY_PREFIX) and isinstance(value, Mapping):
            suffix = key[len(KEY_PREFIX):]
            if suffix.isascii() and suffix.isdigit():
                history[int(suffix)] = value
    return history


def _default_names(trial: AnyTrial) -> list[str]:
    """The headline measures, and whatever else the study's pruner reads (its ``stored_measures``),
    also inside wrappers such as ``optuna.pruners.PatientPruner``."""
    study = getattr(trial, "study", None)  # FixedTrial and FrozenTrial have none
    pruner, extra = getattr(study, "pruner", None), list[str]()
    for _ in range(8):  # a chain of wrappers (each keeps its inner pruner as _wrapped_pruner)
        if pruner is None:
            break
        extra.extend(getattr(pruner, "stored_measures", ()))
        pruner = getattr(pruner, "_wrapped_pruner", None)
    return list(dict.fromkeys([*HEADLINE_NAMES, *extra]))


def _as_step(step: object) -> int:
    """``step`` as an ``int`` (numpy and 0-d torch integers too); ``ValueError`` otherwise or when negative."""
    try:
        index = operator.index(step) if not isinstance(step, bool) else -1  # type: ignore[arg-type]
    except TypeError:
        index = -1
    if index < 0:
        raise ValueError(f"step must be a non-negative integer (an int, or a numpy or 0-d torch integer), got step={step!r}")
    return int(index)


def _as_float(value: object, name: str) -> float:
    if isinstance(value, (str, bytes)):
        raise ValueError(f"measure {name!r} must be a number, got {value!r}")
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
