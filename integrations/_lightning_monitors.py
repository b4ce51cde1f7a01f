"""The monitor contract's checks on a Trainer: which callbacks and schedulers read the names a
ProbeCallback logs, which names clash, and an ``EarlyStopping`` that checks each optimizer step once.

A ProbeCallback claims only the names it logs (``probe/<name>`` for each of its measures); any
other ``probe/...`` name is the user's. Like :mod:`integrations._lightning_trainer`, this module
imports neither Lightning package.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from integrations._lightning_trainer import PROBE_PREFIX
from probe.aggregate import check_measure_name


def monitors(trainer: Any, names: Collection[str]) -> list[Any]:
    """Callbacks that monitor one of ``names`` (``EarlyStopping``, ``ModelCheckpoint`` …)."""
    return [cb for cb in trainer.callbacks if getattr(cb, "monitor", None) in names]


def probe_monitorclaimed_names(trainer: Any) -> set[str]:
    """Every ``probe/*`` name a callback or a ``ReduceLROnPlateau`` scheduler monitors."""
    named = [getattr(cb, "monitor", None) for cb in trainer.callbacks]
    named += [config.monitor for config in plateau_schedulers(trainer)]
    return {str(name) for name in named if str(name or "").startswith(PROBE_PREFIX)}


def plateau_schedulers(trainer: Any) -> list[Any]:
    """The trainer's ``ReduceLROnPlateau``-style scheduler configs (those that read ``monitor``)."""
    return [config for config in getattr(trainer, "lr_scheduler_configs", None) or [] if config.reduce_on_plateau]


def foreign_logs(trainer: Any, names: Collection[str], own_hooks: Collection[str]) -> list[tuple[str, str]]:
    """``(name, hook)`` of each of ``names`` that the running loop holds as logged from another hook.

    ``self.log`` keys a value by the hook that logs it (``training_step``, ``on_validation_epoch_end``
    …); ``own_hooks`` are those the caller logged from itself.
    """
    results = getattr(trainer, "_results", None) or {}
    found = []
    for metric in results.values():
        meta = getattr(metric, "meta", None)
        if meta is not None and meta.name in names and meta.fx not in own_hooks:
            found.append((meta.name, meta.fx))
    return found


def check_monitors(trainer: Any, measures: Iterable[str], others: Iterable[str]) -> None:
    """Fit start: each name logged by one ProbeCallback (``measures``: this one's, ``others``: the
    rest's); a probe measure that is monitored is measured; a plateau scheduler on one reads per epoch."""
    names, taken = claimed_names(measures), claimed_names(others)
    if names & taken:
        raise ValueError(f"two ProbeCallbacks log {sorted(names & taken)}; give each name to one of them (measures=)")
    unknown = sorted(name for name in probe_monitorclaimed_names(trainer) - names - taken if _is_measure(name))
    if unknown:
        raise ValueError(f"a callback monitors {unknown}, which no ProbeCallback measures "
                         f"(measures={list(measures)}); add the names to measures= (a 'probe/...' name that is "
                         "not a probe measure, e.g. your own 'probe/acc', is yours and passes through)")
    for config in plateau_schedulers(trainer):
        if config.monitor in names and config.interval != "epoch":
            raise ValueError(f"an lr scheduler monitors {config.monitor!r} with interval={config.interval!r}, but "
                             "ProbeCallback measures only at validations and epoch ends; use interval='epoch'")


def check_clashes(trainer: Any, measures: Iterable[str], own_hooks: Collection[str]) -> None:
    """Refuse a name of ``measures`` that the running loop holds as logged from a hook not in ``own_hooks``."""
    clashes = foreign_logs(trainer, claimed_names(measures), own_hooks)
    if clashes:
        name, hook = clashes[0]
        raise ValueError(f"{name!r} is logged by `{hook}` too, and ProbeCallback logs it (two values at one step). "
                         "Rename your metric (any 'probe/...' name that ProbeCallback does not log is yours), or "
                         f"drop it from ProbeCallback(measures=...) (now {list(measures)})")


def _is_measure(name: str) -> bool:
    """Whether ``probe/<name>`` names a probe network measure (which only a ProbeCallback logs)."""
    try:
        check_measure_name(name[len(PROBE_PREFIX):])
    except ValueError:
        return False
    return True


_GUARD = "_probe_reads_each_step_once"


def count_each_step_once(monitor: Any, *, undo: bool = False) -> None:
    """Make an ``EarlyStopping`` skip its check at an optimizer step it has already checked.

    Two validations at one optimizer step (``accumulate_grad_batches`` with a short
    ``val_check_interval``) see the same weights and so the same measurement; its patience
    then advances once per fresh measurement, as ``ModelCheckpoint`` already saves once per
    step. Installed on the instance for one fit (``undo`` removes it); other monitors untouched.
    """
    skip = getattr(monitor, "_should_skip_check", None)
    if undo:
        if getattr(skip, _GUARD, False):
            del monitor._should_skip_check
        return
    if skip is None or getattr(skip, _GUARD, False):
        return
    checked: list[int] = []  # the optimizer step last checked

    def should_skip_check(trainer: Any) -> bool:
        if skip(trainer) or checked == [trainer.global_step]:
            return True
        checked[:] = [trainer.global_step]
        return False

    setattr(should_skip_check, _GUARD, True)
    monitor._should_skip_check = should_skip_check


def claimed_names(measures: Iterable[str]) -> set[str]:
    """The names a ProbeCallback with these ``measures`` logs: the only ``probe/*`` names it claims."""
    return {PROBE_PREFIX + name for name in measures}
