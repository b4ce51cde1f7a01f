"""Lightning callback: each epoch, store the network measures with the trial and ask its pruner."""

from __future__ import annotations

import logging
from typing import Any

import optuna

import probe
from integrations.lightning import callback_bases
from integrations.optuna._measures import check_measure_name, report_measures
from probe.api import is_sharded
from probe.layers import LayerSelector, check_layers, select_layers
from probe.options import LIVE, MeasureOptions, check_options
from probe.report import Report

log = logging.getLogger(__name__)

PRUNED_EPOCH_KEY = "probe:pruned_epoch"
"""Trial system attribute where rank zero records the epoch it pruned at (DDP)."""


class MeasurePruningCallback(*callback_bases("MeasurePruningCallback")):  # type: ignore[misc]
    """Lightning callback that prunes an Optuna trial from the network measures, every epoch.

    At the end of each training epoch, on rank zero: take the network measures (the
    report of a live :class:`integrations.lightning.ProbeCallback` in the same Trainer,
    wherever it is listed — any callback with a ``fresh_report(trainer, module)`` method:
    it measures once for both, and in background mode this waits for its measurement
    instead of measuring again — or else ``probe.measure``), store them with :func:`report_measures`, report ``monitor`` with
    ``trial.report`` if given, and ask ``trial.should_prune()``.

    Single process: a pruned trial raises ``optuna.TrialPruned`` out of ``trainer.fit``.
    DDP: rank zero decides, the decision is broadcast, every rank sets
    ``trainer.should_stop`` and fit ends together; rank zero records the epoch in the
    trial's storage, and :meth:`check_pruned`, called after ``fit`` in the objective,
    raises ``optuna.TrialPruned``. DDP needs a storage shared between processes
    (``RDBStorage`` or ``JournalStorage``), not the in-memory one, and a launcher that runs
    the objective once (``strategy="ddp_spawn"``; the script-relaunching ``"ddp"`` would
    run ``study.optimize`` on every rank). An error on rank zero is broadcast too, so all
    ranks raise together instead of deadlocking.

    Works with ``lightning.pytorch`` and ``pytorch_lightning`` trainers.

    Example:

        .. code-block:: python

            def objective(trial):
                model = MyModule(lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True))
                pruning = MeasurePruningCallback(trial, monitor="val_acc")
                trainer = lightning.pytorch.Trainer(max_epochs=20, callbacks=[pruning])
                trainer.fit(model, datamodule=data)
                pruning.check_pruned()  # needed under DDP, harmless otherwise
                return trainer.callback_metrics["val_acc"].item()

    Parameters
    ----------
    trial:
        The running ``optuna.trial.Trial``; its study's pruner decides (a
        :class:`LearnedMeasurePruner`, a :class:`MeasurePruner`, or any Optuna pruner).
    monitor:
        Optional name of a logged metric (``trainer.callback_metrics``) reported with
        ``trial.report`` each epoch, for an objective pruner wrapped by the MeasurePruner
        (with ``check_val_every_n_epoch > 1`` the latest validation value is reported
        again in between). Default ``None``: the objective is not reported.
    measures:
        Measures to store (default: see :func:`report_measures`).
    layers, options:
        Which tensors and how to measure them (:func:`probe.measure`'s ``layers`` and
        :class:`probe.MeasureOptions`) when no live report is reused; default ``"auto"`` and
        ``probe.options.LIVE`` (NaN measures for diverged weights, which the pruners prune).
    """

    def __init__(
        self,
        trial: optuna.trial.Trial,
        *,
        monitor: str | None = None,
        measures: list[str] | None = None,
        layers: LayerSelector = "auto",
        options: MeasureOptions = LIVE,
    ) -> None:
        super().__init__()
        if measures is not None:
            measures = [check_measure_name(name, argument="measures") for name in measures]
        self._trial = trial
        self._monitor = monitor
        self.layers = check_layers(layers)
        self.options = check_options(options)
        self._measures = measures
        self._distributed = False
        self.last_report: Report | None = None
        """The report stored at the last epoch (on rank zero)."""
        self.last_epoch: int | None = None
        """The epoch of ``last_report``."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        directions = self._trial.study.directions
        if len(directions) > 1:
            raise ValueError(
                f"MeasurePruningCallback cannot prune a multi-objective study ({len(directions)} directions): "
                "Optuna's pruning supports single-objective studies only"
            )
        self._distributed = trainer.world_size > 1
        if self._distributed and isinstance(self._trial.storage, optuna.storages.InMemoryStorage):
            raise ValueError(
                "MeasurePruningCallback under DDP needs a storage shared between processes: create the "
                "study with storage='sqlite:///study.db' (RDBStorage) or a JournalStorage, not in memory"
            )

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        live = self._live_report(trainer, pl_module)  # every rank: the live callback may broadcast
        if live is None and any(is_sharded(tensor) for _, tensor in select_layers(pl_module, self.layers)):
            live = probe.measure(pl_module, layers=self.layers, options=self.options)  # gathering is collective: every rank
        prune, error = False, None
        if trainer.is_global_zero:
            try:
                prune = self._report_and_decide(trainer, pl_module, epoch, live)
            except Exception as exc:
                if not self._distributed:
                    raise
                error = exc
        if self._distributed:
            prune, message = trainer.strategy.broadcast((prune, None if error is None else repr(error)), src=0)
            if message is not None:
                raise RuntimeError(f"measure pruning failed on rank zero at epoch {epoch}: {message}") from error
        if not prune:
            return
        log.info("trial %d pruned at epoch %d", self._trial.number, epoch)
        if not self._distributed:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")
        trainer.should_stop = True
        if trainer.is_global_zero:
            self._trial.storage.set_trial_system_attr(self._trial._trial_id, PRUNED_EPOCH_KEY, epoch)

    def check_pruned(self) -> None:
        """Raise ``optuna.TrialPruned`` if rank zero pruned the trial; call it after ``trainer.fit``.

        Needed under DDP (the decision lives in the storage); harmless otherwise.
        """
        epoch = self._trial.storage.get_trial_system_attrs(self._trial._trial_id).get(PRUNED_EPOCH_KEY)
        if epoch is not None:
            raise optuna.TrialPruned(f"Trial was pruned at epoch {epoch}.")

    def _report_and_decide(self, trainer: Any, pl_module: Any, epoch: int, report: Report | None) -> bool:
        if report is None:
            report = probe.measure(pl_module, layers=self.layers, options=self.options)
        report_measures(self._trial, report, epoch, measures=self._measures)
        self.last_report, self.last_epoch = report, epoch
        if self._monitor is not None:
            value = trainer.callback_metrics.get(self._monitor)
            if value is None:
                raise ValueError(
                    f"monitor={self._monitor!r} is not among the logged metrics "
                    f"{sorted(trainer.callback_metrics)}; log it or pass monitor=None"
                )
            self._trial.report(float(value), epoch)
        return self._trial.should_prune()

    def _live_report(self, trainer: Any, pl_module: Any) -> Report | None:
        for callback in trainer.callbacks:
            fresh_report = getattr(callback, "fresh_report", None)
            if callback is not self and callable(fresh_report):
                return fresh_report(trainer, pl_module)
        return None
