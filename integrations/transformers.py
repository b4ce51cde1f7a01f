"""Hugging Face ``Trainer`` callback: measure at every evaluation, log through the Trainer, feed its monitors.

Example::

    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
    from integrations.transformers import ProbeTrainerCallback

    args = TrainingArguments("out", eval_strategy="epoch", save_strategy="epoch", report_to=["tensorboard"],
                             metric_for_best_model="probe/F_p_BE", load_best_model_at_end=True)
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=val,
                      callbacks=[EarlyStoppingCallback(3), ProbeTrainerCallback()])
    trainer.train()

When it measures (never twice for the same weights at one global step):

- at every evaluation of ``every_n_epochs``-th epochs (every evaluation by default, whatever
  ``eval_strategy``/``eval_steps``), and at every evaluation when a probe metric is
  ``metric_for_best_model`` or an Optuna trial is running;
- at the end of each ``every_n_epochs``-th epoch that has no evaluation;
- at a ``trainer.evaluate()`` outside ``train()`` (after ``load_best_model_at_end``: the
  best checkpoint's weights, loaded at the last step).

Where the values go:

- at an evaluation, into the evaluation's metrics as ``eval_probe/<name>`` (the Trainer's
  prefix, like ``eval_loss``). They are added in ``on_log``, which ``Trainer.evaluate`` calls
  before ``on_evaluate``: so the ``report_to`` integrations (TensorBoard: ``eval/probe/<name>``),
  ``trainer.state.log_history`` (the same entry as ``eval_loss``), ``EarlyStoppingCallback``,
  ``metric_for_best_model`` / ``load_best_model_at_end`` and the hyperparameter search all see
  them at the evaluation's global step;
- at an epoch end without evaluation, through ``Trainer.log`` as ``probe/<name>``
  (TensorBoard: ``train/probe/<name>``), before the Trainer's own epoch-end ``loss`` log;
- TensorBoard also gets the per-layer extras of ``log_options`` (heatmaps by default) through
  the ``TensorBoardCallback``'s writer;
- in a ``hyperparameter_search(backend="optuna")`` trial, :func:`integrations.optuna.report_measures`
  stores each evaluation's measures with the trial at the global step, before the Trainer
  reports the objective and asks ``trial.should_prune()`` at that same step, so a
  :class:`~integrations.optuna.LearnedMeasurePruner` or :class:`~integrations.optuna.MeasurePruner`
  judges them.

What it relies on in ``transformers`` (checked with 5.25; documented in docs/transformers.md):
``Trainer.evaluate`` passes its metrics dict itself to ``on_log`` before ``on_evaluate``,
``Trainer.log`` appends a copy to ``state.log_history`` before ``on_log``, the callback handler
calls callbacks in the order of ``callback_handler.callbacks``, the running trial is
``trainer._trial``, and ``default_compute_objective`` sums every non-loss metric. Callbacks are
not handed the Trainer: the callback finds the one whose handler holds it on the call stack
(``on_init_end``/``on_train_begin``), then moves itself right after ``DefaultFlowCallback``
so that its ``on_log`` runs before the ``report_to`` integrations', and, in a search with the
default objective, leaves ``eval_probe/*`` out of the objective.

This module imports ``transformers`` only when :class:`ProbeTrainerCallback` is first used.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cache
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

import torch

import probe
from integrations._background import Measurer
from integrations._live import LiveSettings
from integrations.tensorboard import LogOptions, ReportWriter
from probe.aggregate import HEADLINE_NAMES
from probe.api import is_sharded
from probe.layers import LayerSelector, select_layers
from probe.options import LIVE, MeasureOptions

log = logging.getLogger(__name__)

PROBE_PREFIX = "probe/"
"""Key prefix of the measures (after the evaluation's own prefix: ``eval_probe/<name>``)."""


@dataclass
class MeasureTiming:
    """Seconds spent for one measurement (process zero only).

    ``blocking_s``: time the training thread spent in the callback for it (measuring and
    logging; in background mode copying the weights, waiting at the evaluation's log, and
    logging). ``measure_s``: time ``probe.measure`` took (on the worker in background mode).
    """

    step: int
    blocking_s: float = 0.0
    measure_s: float = math.nan


def _monitored_measure(metric: str | None) -> str | None:
    """The probe measure a ``metric_for_best_model`` names (``probe/X``, ``eval_probe/X``,
    ``eval_<dataset>_probe/X``), else ``None``."""
    if not metric or PROBE_PREFIX not in metric:
        return None
    head, _, name = metric.partition(PROBE_PREFIX)
    if head in ("", "eval_") or (head.startswith("eval_") and head.endswith("_")):
        return name
    return None


def _evaluation_prefix(logs: Mapping[str, Any]) -> str | None:
    """The metric prefix of an evaluation's log (``eval``, ``eval_<dataset>``), else ``None``."""
    for key in logs:
        if key.endswith("_runtime"):
            prefix = key[: -len("_runtime")]
            if prefix != "train" and f"{prefix}_samples_per_second" in logs:
                return prefix
    return None


def _objective_without_probe(metrics: dict[str, float]) -> float:
    """``transformers``' default objective of the metrics without ``*probe/*`` (which it would sum)."""
    from transformers.trainer_utils import default_compute_objective

    return default_compute_objective({k: v for k, v in metrics.items() if PROBE_PREFIX not in k})


def _find_trainer(callback: object) -> Any:
    """The ``transformers.Trainer`` on the call stack whose callback handler holds ``callback``, or ``None``."""
    from transformers import Trainer

    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        handler = getattr(candidate, "callback_handler", None)
        if isinstance(candidate, Trainer) and handler is not None and any(cb is callback for cb in handler.callbacks):
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _sharded(model: Any, layers: LayerSelector) -> bool:
    """Whether selected weights are sharded (FSDP2 / DTensor): gathering them takes every rank."""
    return any(is_sharded(tensor) for _, tensor in select_layers(model, layers))


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


class _ProbeTrainerLogic:
    """The callback's behaviour; :class:`ProbeTrainerCallback` adds ``transformers.TrainerCallback``."""

    def __init__(
        self,
        *,
        measures: Iterable[str] = HEADLINE_NAMES,
        layers: LayerSelector = "auto",
        options: MeasureOptions = LIVE,
        every_n_epochs: int = 1,
        background: bool | Literal["thread", "process"] = False,
        log_options: LogOptions = LogOptions(),
    ) -> None:
        live = LiveSettings.check(measures=measures, layers=layers, options=options, every_n_epochs=every_n_epochs,
                                  background=background, log_options=log_options)
        self.measures, self.layers, self.options = live.measures, live.layers, live.options
        self.every_n_epochs, self.background, self.log_options = live.every_n_epochs, live.background, live.log_options
        self.last_report: probe.Report | None = None
        self._report_writer: ReportWriter | None = None  # the TensorBoardCallback's writer, with the heatmaps' history
        self.last_step: int | None = None
        self._measured: tuple[int, tuple[int, ...]] | None = None  # the global step and weights last measured
        self.timings: list[MeasureTiming] = []
        self._metrics: dict[str, float] = {}
        self._trainer: Any = None
        self._monitored = False
        self._measurer: Measurer | None = None
        self._job: tuple[int, Future] | None = None

    # ----------------------------------------------------------------- hooks

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._trainer = _find_trainer(self)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        trainer = _find_trainer(self) or self._trainer
        if trainer is None:
            raise RuntimeError("ProbeTrainerCallback: no transformers.Trainer holding this callback was found on the call "
                               "stack; pass it in Trainer(callbacks=[...]) or trainer.add_callback(...)")
        self._trainer = trainer
        try:
            select_layers(model, self.layers)
        except ValueError as error:
            raise ValueError(f"ProbeTrainerCallback(layers={self.layers!r}) on {type(model).__name__}: {error}") from error
        self._check_monitor(args, trainer)
        self._run_first(trainer)
        if trainer.hp_search_backend is not None:
            from transformers.trainer_utils import default_compute_objective

            if trainer.compute_objective is default_compute_objective:
                trainer.compute_objective = _objective_without_probe
        self.last_report, self.last_step, self._measured, self._metrics, self.timings, self._job = None, None, None, {}, [], None
        if self.background and state.is_world_process_zero and self._measurer is None:
            self._measurer = Measurer(self.background, self.options)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._maybe_submit(state, control, model)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if control.should_evaluate:  # the evaluation that follows measures (background: starts now)
            self._maybe_submit(state, control, model)
            return
        weights = self._weights(state, model) if self._due(state) else None
        if weights is None or weights == self._measured:
            return
        metrics = self._measure(state, model, weights)
        if self._trainer is not None:
            should_log = control.should_log  # the Trainer's own epoch-end log (loss) is still due
            self._trainer.log(dict(metrics))  # every rank calls it, as the Trainer logs on every rank
            control.should_log = should_log  # (Trainer.log's on_log cleared it)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, model: Any = None,
               **kwargs: Any) -> None:
        prefix = _evaluation_prefix(logs or {})
        if prefix is None or logs is None:
            return
        weights = self._weights(state, model)
        fresh = weights != self._measured  # else measured already (another eval dataset)
        if fresh:
            if not (self._due(state) or self._monitored or self._searching()):
                return
            self._measure(state, model, weights)
        start = perf_counter()
        added = {f"{prefix}_{key}": value for key, value in self._metrics.items()}
        logs.update(added)  # the evaluation's own metrics dict: on_evaluate, best model, search read it next
        entry = state.log_history[-1] if state.log_history else None
        if entry is not None and entry.get("step") == state.global_step and all(k in entry for k in logs if k not in added):
            entry.update(added)
        if fresh and state.is_world_process_zero:
            self._store_in_trial(state.global_step)
            self._write_extras(state)
            self._timing(state.global_step).blocking_s += perf_counter() - start

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._shutdown()

    # ------------------------------------------------------------- internals

    def _check_monitor(self, args: Any, trainer: Any) -> None:
        """A probe metric the Trainer or ``EarlyStoppingCallback`` reads must be one some ProbeTrainerCallback logs."""
        name = _monitored_measure(args.metric_for_best_model)
        self._monitored = name is not None
        if name is None:
            return
        logged = {m for cb in trainer.callback_handler.callbacks if isinstance(cb, _ProbeTrainerLogic) for m in cb.measures}
        if name not in logged:
            readers = ["metric_for_best_model"] + [type(cb).__name__ for cb in trainer.callback_handler.callbacks
                                                   if type(cb).__name__ == "EarlyStoppingCallback"]
            raise ValueError(f"metric_for_best_model={args.metric_for_best_model!r} (read by {', '.join(readers)}) names "
                             f"probe measure {name!r}, which no ProbeTrainerCallback logs (measures={sorted(logged)}); "
                             "add it to measures=")

    def _run_first(self, trainer: Any) -> None:
        """Put this callback right after ``DefaultFlowCallback`` (in place: the handler may be iterating)."""
        from transformers.trainer_callback import DefaultFlowCallback

        callbacks = trainer.callback_handler.callbacks
        others = [cb for cb in callbacks if cb is not self]
        at = next((i + 1 for i, cb in enumerate(others) if isinstance(cb, DefaultFlowCallback)), 0)
        callbacks[:] = [*others[:at], self, *others[at:]]

    def _weights(self, state: Any, model: Any) -> tuple[int, tuple[int, ...]]:
        """What a measurement is of: the global step and the selected weights' in-place versions
        (shared with their detached views; loading a checkpoint's weights at the same step bumps them)."""
        tensors = select_layers(model, self.layers) if model is not None else ()
        return state.global_step, tuple(t._version for _, t in tensors)

    def _due(self, state: Any) -> bool:
        epoch = max(math.ceil(state.epoch or 0) - 1, 0)  # the epoch in progress (0-based)
        return (epoch + 1) % self.every_n_epochs == 0

    def _searching(self) -> bool:
        """A hyperparameter-search trial is running (the same answer on every rank)."""
        trainer = self._trainer
        return trainer is not None and trainer.hp_search_backend is not None and getattr(trainer, "_trial", None) is not None

    def _trial(self) -> Any:
        """The running ``optuna.trial.Trial`` (process zero of a search), else ``None``."""
        trial = getattr(self._trainer, "_trial", None)
        if trial is None or "optuna" not in sys.modules:
            return None
        import optuna

        return trial if isinstance(trial, optuna.trial.Trial) else None

    def _maybe_submit(self, state: Any, control: Any, model: Any) -> None:
        """Background: an evaluation follows; copy the weights now so measuring overlaps it."""
        if not (self.background and control.should_evaluate and state.is_world_process_zero and self._measurer):
            return
        if _sharded(model, self.layers):  # gathering is collective: measured in the evaluation's log, on every rank
            return
        if self._measured == self._weights(state, model) or (self._job and self._job[0] == state.global_step):
            return
        if not (self._due(state) or self._monitored or self._searching()):
            return
        start = perf_counter()
        copies = {name: tensor.detach().to("cpu", copy=True) for name, tensor in select_layers(model, self.layers)}
        self._job = (state.global_step, self._measurer.submit(copies))
        self._timing(state.global_step).blocking_s += perf_counter() - start

    def _measure(self, state: Any, model: Any, weights: tuple[int, tuple[int, ...]]) -> dict[str, float]:
        """Measure the weights of this global step (process zero; ``weights``: their :meth:`_weights`
        key), share the values with every rank, return them."""
        step = state.global_step
        metrics: dict[str, float] | None = None
        error: str | None = None
        sharded = _sharded(model, self.layers)
        if state.is_world_process_zero:
            start = perf_counter()
            try:
                report = self._report(step, model, sharded)
            except Exception as caught:
                if not _distributed():
                    raise
                error = f"{type(caught).__name__}: {caught}"
            else:
                metrics = self._as_metrics(report)
                self.last_report = report
            self._timing(step).blocking_s += perf_counter() - start
        elif sharded:  # join the per-layer gathers of rank zero's measurement
            probe.measure(model, layers=self.layers, options=self.options)
        if _distributed():
            shared: list[Any] = [(metrics, error)]
            torch.distributed.broadcast_object_list(shared, src=0)
            metrics, error = shared[0]
        if error is not None:
            raise RuntimeError(f"ProbeTrainerCallback: measuring on rank 0 failed at step {step}: {error}")
        assert metrics is not None
        self._metrics, self.last_step, self._measured = metrics, step, weights
        return metrics

    def _report(self, step: int, model: Any, sharded: bool) -> probe.Report | None:
        """Rank zero: the report of this step's weights (``None`` when measuring failed and ``nonfinite`` allows it).

        Sharded weights are measured here, synchronously, while the other ranks join the gathers.
        """
        job, self._job = self._job, None
        try:
            if job is not None and job[0] == step:
                report, seconds = job[1].result()
            elif self._measurer is not None and not sharded:  # background, in train() (outside it: measured here)
                copies = {name: t.detach().to("cpu", copy=True) for name, t in select_layers(model, self.layers)}
                report, seconds = self._measurer.submit(copies).result()
            else:
                start = perf_counter()
                report = probe.measure(model, layers=self.layers, options=self.options, hints=self.last_report)
                seconds = perf_counter() - start
        except Exception as error:
            if self.options.nonfinite == "raise":
                raise
            warnings.warn(f"ProbeTrainerCallback: measuring step {step} failed ({type(error).__name__}: {error}); "
                          "its measures are NaN and training goes on", RuntimeWarning, stacklevel=2)
            return None
        self._timing(step).measure_s = seconds
        return report

    def _as_metrics(self, report: probe.Report | None) -> dict[str, float]:
        return {PROBE_PREFIX + name: math.nan if report is None else float(report.value(name)) for name in self.measures}

    def _store_in_trial(self, step: int) -> None:
        trial = self._trial()
        if trial is None:
            return
        from integrations.optuna import report_measures

        values = self.last_report if self.last_report is not None else {k[len(PROBE_PREFIX):]: v for k, v in self._metrics.items()}
        report_measures(trial, values, step, measures=None if self.last_report is not None else list(values))

    def _write_extras(self, state: Any) -> None:
        """Per-layer TensorBoard extras (``log_options``) through the ``TensorBoardCallback``'s writer."""
        if self.last_report is None or self._trainer is None:
            return
        writer = next((getattr(cb, "tb_writer", None) for cb in self._trainer.callback_handler.callbacks
                       if getattr(cb, "tb_writer", None) is not None), None)
        if writer is not None:
            if self._report_writer is None or self._report_writer.writer is not writer:
                self._report_writer = ReportWriter(writer, measures=(), options=self.log_options)
            epoch = max(math.ceil(state.epoch or 0) - 1, 0)
            self._report_writer.write(self.last_report, state.global_step, epoch=epoch)

    def _timing(self, step: int) -> MeasureTiming:
        if not self.timings or self.timings[-1].step != step:
            self.timings.append(MeasureTiming(step))
        return self.timings[-1]

    def _shutdown(self) -> None:
        if self._measurer is not None:
            self._measurer.shutdown()
            self._measurer = None
        self._job = None


_DOC = """Measure the model with :func:`probe.measure` at every evaluation, log through the Trainer, feed its monitors.

    A ``transformers.TrainerCallback`` (module docstring: when it measures, where values go).

    Parameters
    ----------
    measures:
        Network measures logged as ``eval_probe/<name>`` (default the eight headline ones).
    layers:
        Which tensors (:func:`probe.measure`'s ``layers``; default ``"auto"``), checked
        against the model at ``on_train_begin``.
    options:
        How to measure (:class:`probe.MeasureOptions`); default ``probe.options.LIVE``
        (NaN measures for diverged weights; a failed measurement gives NaN with a warning).
    every_n_epochs:
        Measure at the evaluations of, and the ends of, epochs with
        ``(epoch + 1) % every_n_epochs == 0`` (default 1). A probe ``metric_for_best_model``
        or a running Optuna trial has every evaluation measured.
    background:
        ``False`` (default): measure in the hook. ``True``/``"thread"``/``"process"``: when
        an evaluation follows a step, the weights are copied at ``on_step_end`` and measured
        on a worker (thread, or one spawned process) while the evaluation loop runs; the
        evaluation's log waits for it. Epoch ends without evaluation wait at once; outside
        ``train()`` (``trainer.evaluate()`` alone) the hook measures.
    log_options:
        Per-layer extras TensorBoard gets (:class:`~integrations.tensorboard.LogOptions`).

    Attributes
    ----------
    last_report, last_step:
        The latest report (process zero; ``None`` after a failed measurement) and its global step.
    timings:
        One :class:`MeasureTiming` per measurement (process zero).

    Under ``torchrun`` only process zero measures; the values are broadcast, so every rank's
    metrics (and so best-model and early-stopping decisions) agree.
    """


if TYPE_CHECKING:
    from transformers import TrainerCallback

    class ProbeTrainerCallback(_ProbeTrainerLogic, TrainerCallback):
        """Built by :func:`_callback_class` on first access (so importing this module does not import transformers)."""


@cache
def _callback_class() -> type:
    from transformers import TrainerCallback

    return type("ProbeTrainerCallback", (_ProbeTrainerLogic, TrainerCallback),
                {"__module__": __name__, "__doc__": _DOC, "__qualname__": "ProbeTrainerCallback"})


def __getattr__(name: str) -> Any:
    if name == "ProbeTrainerCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PROBE_PREFIX", "MeasureTiming", "ProbeTrainerCallback"]
