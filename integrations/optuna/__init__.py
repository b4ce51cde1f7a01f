"""Optuna integration: prune trials from early-epoch network measures.

- :func:`report_measures` stores a step's measures with a trial (trial attributes, never
  ``trial.report``); :func:`get_measures` reads them back, from any worker.
- :class:`MeasurePruner` prunes on a measure (percentile or learned-trust mode), alone or
  together with an objective pruner.
- :class:`MeasurePruningCallback` does both each epoch in Lightning (single process or DDP);
  it imports Lightning only when first used.
- :func:`replay_study` replays recorded runs through a pruner (for benchmarks).
- :func:`plot_measure_history` draws a stored measure against the step for every trial.
"""

from __future__ import annotations

from typing import Any

from integrations.optuna._measures import check_measure_name, get_measures, measured_trial, report_measures
from integrations.optuna._plot import plot_measure_history
from integrations.optuna._pruner import MeasurePruner, correlation_lower_bound, is_poor, rank_correlation
from integrations.optuna._replay import RecordedRun, replay_study

__all__ = [
    "MeasurePruner",
    "MeasurePruningCallback",
    "RecordedRun",
    "check_measure_name",
    "correlation_lower_bound",
    "get_measures",
    "is_poor",
    "measured_trial",
    "plot_measure_history",
    "rank_correlation",
    "replay_study",
    "report_measures",
]


def __getattr__(name: str) -> Any:
    if name == "MeasurePruningCallback":
        from integrations.optuna._lightning import MeasurePruningCallback

        return MeasurePruningCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
