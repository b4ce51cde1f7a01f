"""Optuna integration: prune trials from early-epoch network measures.

- :func:`report_measures` stores a step's measures with a trial (trial attributes, never
  ``trial.report``); :func:`get_measures` reads them back, from any worker.
- :class:`LearnedMeasurePruner` (the recommended default) learns from every trial of the
  study which measures, with what sign, rank the later objective, promotes trials through
  successive-halving rungs on what it trusts (optionally carried from an earlier study with
  ``prior=``), and prunes on nothing untrusted (``percentile=`` adds a percentile rule on the
  objective meanwhile); :class:`MeasurePruner` prunes on one chosen measure (percentile rule), alone
  or together with an objective pruner. :func:`pruning_reason` tells why a trial was
  pruned, :func:`pruner_settings` with what settings.
- :class:`MeasurePruningCallback` does both each epoch in Lightning (single process or DDP);
  it imports Lightning only when first used.
- :func:`replay_study` replays recorded runs through a pruner (for benchmarks).
- :func:`plot_measure_history` draws a stored measure against the step for every trial.
"""

from __future__ import annotations

from typing import Any

from integrations.optuna._common import pruner_settings, pruning_reason
from integrations.optuna._learned import LearnedMeasurePruner, Signal
from integrations.optuna._measures import (
    get_measures,
    measured_trial,
    report_measures,
)
from integrations.optuna._plot import plot_measure_history
from integrations.optuna._pruner import MeasurePruner
from integrations.optuna._replay import RecordedRun, replay_study

__all__ = [
    "LearnedMeasurePruner",
    "MeasurePruner",
    "MeasurePruningCallback",
    "RecordedRun",
    "Signal",
    "get_measures",
    "measured_trial",
    "plot_measure_history",
    "pruner_settings",
    "pruning_reason",
    "replay_study",
    "report_measures",
]


def __getattr__(name: str) -> Any:
    if name == "MeasurePruningCallback":
        from integrations.optuna._lightning import MeasurePruningCallback

        return MeasurePruningCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
