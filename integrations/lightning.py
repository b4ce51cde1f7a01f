"""Lightning callback: measure the model, log it where Lightning logs its epoch metrics, feed monitors.

Example::

    from lightning.pytorch import Trainer                  # or: from pytorch_lightning import Trainer
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.loggers import TensorBoardLogger
    from integrations.lightning import ProbeCallback

    trainer = Trainer(
        max_epochs=20,
        logger=TensorBoardLogger("runs"),
        callbacks=[ProbeCallback(), EarlyStopping("probe/E_L2_BE", mode="max", patience=3)],
    )
    trainer.fit(model, train_loader)

When it measures (each time at most once per optimizer step, so never twice on the same weights):

- at the end of every ``every_n_epochs``-th training epoch: in ``on_validation_start`` of
  the end-of-epoch validation, or in ``on_train_epoch_end`` when that epoch has none;
- whenever a monitor of a name it logs (``EarlyStopping``, ``ModelCheckpoint``, any callback
  whose ``monitor`` is one of its ``probe/<name>``) may read it: at every validation and at
  every epoch end; for a ``ReduceLROnPlateau`` on one (``interval="epoch"``; ``"step"`` is
  refused at fit start), at every epoch end. So a monitor always reads the measure of the
  weights it sees (those a checkpoint saved then holds), and counts each measurement once:
  an ``EarlyStopping`` on a probe name skips its check at an optimizer step it has checked
  (two validations at one step). (Monitors that read inside the training loop, e.g.
  ``ModelCheckpoint(every_n_train_steps=...)``, see the latest one.)
- with ``StochasticWeightAveraging``, once more at fit end when it swapped the averaged
  weights in (logged one step after the last epoch's measures).

It claims only the names it logs: any other ``probe/...`` name (your ``probe/acc``) passes
through; a name it logs that the module logs too is refused at the first batch that logs it.
Lazy modules are selected after the first training batch. ``Trainer(barebones=True)`` (where
``self.log`` does nothing) needs ``use_loggers=False``; the values then go straight into
``trainer.callback_metrics``. See ``docs/live.md``.

Where the measures go:

- TensorBoard loggers get :class:`integrations.tensorboard.ReportWriter`'s output
  (``probe/<name>`` scalars and layers × epochs heatmaps; per-layer scalars and spectra
  opt-in), other loggers the ``probe/<name>`` scalars and ``epoch``; both at the step
  Lightning logs its own epoch-level metrics of that epoch (:func:`epoch_metrics_step`);
- ``trainer.callback_metrics`` gets ``probe/<name>`` (logged with ``logger=False``);
- ``last_report`` / ``last_epoch`` keep the latest report; :meth:`ProbeCallback.fresh_report`
  gives other callbacks the report of the current weights.

Both Lightning distributions are supported: ``ProbeCallback`` inherits from the
``Callback`` class of each installed one, so the same class passes either ``Trainer``'s
type check, and it only uses trainer attributes the two share.
"""

from __future__ import annotations

import logging
import math
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal, NamedTuple

import torch

import probe
from integrations._background import Finished, Measurer
from integrations._lightning_monitors import (
    check_clashes,
    check_monitors,
    claimed_names,
    count_each_step_once,
    monitors,
    plateau_schedulers,
)
from integrations._lightning_plan import Hook, Moment, Policy, plan
from integrations._lightning_sink import LoggerSink
from integrations._lightning_trainer import (
    PROBE_PREFIX,
    averages_weights,
    callback_bases,
    end_of_epoch_validation,
    epoch_metrics_step,
)
from integrations._live import LiveSettings
from integrations._weights import has_lazy, warn_nonfinite
from integrations.tensorboard import LogOptions, network_metrics
from probe._validate import check_choice
from probe.aggregate import HEADLINE_NAMES
from probe.api import gather, is_sharded
from probe.layers import LayerSelector, select_layers
from probe.options import LIVE, MeasureOptions

log = logging.getLogger(__name__)

@dataclass
class EpochTiming:
    """Seconds spent for one measured epoch (rank zero only).

    ``blocking_s``: time the training thread spent in the callback's hooks for that epoch
    (measuring and logging when synchronous; in background mode copying the weights,
    waiting where a monitor reads, and logging the reports found finished).
    ``measure_s``: time ``probe.measure`` took (on the worker in background mode); NaN
    until it is done.
    """

    epoch: int
    blocking_s: float = 0.0
    measure_s: float = float("nan")


class _Job(NamedTuple):
    """What a background measurement is queued with (its :class:`~integrations._background.Finished` tag)."""

    epoch: int
    at: int  # trainer.global_step of the weights copied
    step: int | None  # logging step; None: published, not logged


class _Result(NamedTuple):
    epoch: int
    at: int
    report: probe.Report | None  # None: measuring failed, the metrics are NaN
    metrics: dict[str, float]


class ProbeCallback(*callback_bases()):  # type: ignore[misc]
    """Measure the model with :func:`probe.measure` during ``fit``, log the report, feed monitors.

    Parameters
    ----------
    every_n_epochs:
        Measure and log after epochs with ``(epoch + 1) % every_n_epochs == 0`` (default
        1). A monitor of a ``probe/*`` metric adds measurements wherever it may read
        (module docstring).
    measures:
        Network measures logged as ``probe/<name>`` and put in ``trainer.callback_metrics``
        (default the eight headline ones); validated here against the probe names.
    layers:
        Which tensors (:func:`probe.measure`'s ``layers``; default ``"auto"``), checked
        against the model in ``on_fit_start``, after ``configure_model`` and ``setup``
        have built it, before any training.
    options:
        How to measure (:class:`probe.MeasureOptions`), passed to :func:`probe.measure`
        unchanged. Default ``probe.options.LIVE``, whose ``nonfinite="nan"`` gives NaN
        measures for diverged weights, with a ``RuntimeWarning`` naming the layers
        (``EarlyStopping``'s ``check_finite`` then stops the run), and so does any failure
        to measure (with a warning): the training run is never lost to the probe. With ``nonfinite="raise"`` the fit fails with the error
        (a ``ValueError`` naming the layer for NaN/Inf weights).
    log_options:
        What TensorBoard loggers also get (:class:`~integrations.tensorboard.LogOptions`).
    background:
        ``False`` (default): measure in the hook. ``True`` or ``"thread"``: the hook only
        copies the probed weights and a worker thread measures them while training goes
        on. ``"process"``: the worker thread hands the copies to one spawned process (one
        CPU thread), so measuring does not compete with a Python-bound training loop for
        the GIL; it dies with the trainer, and if it dies first (e.g. killed for memory)
        measuring goes on in the thread, with a warning. A script needs the
        ``if __name__ == "__main__":`` guard. Its start-up (seconds: it imports torch)
        overlaps training: measurements run in the thread until it answers. Ctrl-C (which
        reaches it too) does not stop it: the measurement in flight is finished and logged
        during Lightning's graceful shutdown. Each report is logged at its own epoch's
        step once finished; pending work is flushed at fit end. Where a monitor of
        ``probe/*`` reads, the callback waits for that measurement first (at a validation,
        the measurement overlaps the validation loop); elsewhere ``callback_metrics``,
        ``last_report`` and ``last_epoch`` hold the latest *finished* report.
    copy_to:
        Background mode: where the weight copies live: ``"cpu"`` (default) or ``"model"``
        (the weights' device; faster on a GPU, costs its memory).
    use_loggers:
        ``True`` (default): log through ``trainer.loggers``; ``setup`` fails when the
        Trainer has none. ``False``: only monitor (``callback_metrics`` and ``last_report``).
        (Not named ``log``: Lightning sets ``callback.log`` to the module's ``log`` method.)
    step:
        Logging x axis: ``"lightning"`` (default: the step of Lightning's own epoch-level
        metrics such as ``val_loss``, so the measures line up with them on every logger)
        or ``"epoch"`` (only end-of-epoch measurements are logged then).

    Attributes
    ----------
    last_report:
        The latest published :class:`probe.Report`, or ``None`` (also right after a
        resume, or after a failed measurement).
    last_epoch:
        The epoch of the latest published measurement (restored on resume), or ``None``.
    timings:
        One :class:`EpochTiming` per measured epoch of the current fit (rank zero only).

    Under DDP only rank zero measures and logs, and the values are broadcast so every
    rank's ``callback_metrics`` and ``last_report`` agree; sharded (FSDP2 / DTensor)
    weights are gathered one layer at a time with every rank taking part. ``state_dict``
    keeps the step last measured, so a resumed run does not measure or log it twice; a
    callback reused in a new ``Trainer`` starts afresh.
    """

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        measures: Iterable[str] = HEADLINE_NAMES,
        layers: LayerSelector = "auto",
        options: MeasureOptions = LIVE,
        log_options: LogOptions = LogOptions(),
        background: bool | Literal["thread", "process"] = False,
        copy_to: Literal["cpu", "model"] = "cpu",
        use_loggers: bool = True,
        step: Literal["lightning", "epoch"] = "lightning",
    ) -> None:
        live = LiveSettings.check(measures=measures, layers=layers, options=options, every_n_epochs=every_n_epochs,
                                  background=background, log_options=log_options)
        self.measures, self.layers, self.options = live.measures, live.layers, live.options
        self.every_n_epochs, self.background, self.log_options = live.every_n_epochs, live.background, live.log_options
        self.copy_to = check_choice("copy_to", copy_to, ("cpu", "model"))
        self.step = check_choice("step", step, ("lightning", "epoch"))
        self.use_loggers = bool(use_loggers)
        self.last_report: probe.Report | None = None
        self.last_epoch: int | None = None
        self.timings: list[EpochTiming] = []
        self._measured_at: int | None = None  # trainer.global_step of the last measurement
        self._published_at: int | None = None
        self._selected = False  # layers checked (a lazy module: after its first forward)
        self._sharded = False
        self._readers: list[Any] = []  # callbacks monitoring a name this callback logs
        self._scheduler_reads = False  # a ReduceLROnPlateau reads one at epoch ends
        self._own_hooks: set[str] = set()  # the hooks this callback logged from (in _hooks_trainer's loops)
        self._hooks_trainer: weakref.ref[Any] | None = None
        self._clash_checked: set[str] = set()  # loops whose first batch was checked for clashing names
        self._swa_versions: tuple[int, ...] | None = None  # with SWA: parameter versions last measured
        self._measurer: Measurer | None = None
        self._sink = LoggerSink(self.measures, log_options)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(measures=self.measures)

    # ----------------------------------------------------------------- hooks

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        if self.use_loggers and getattr(trainer, "barebones", False):
            raise ValueError(
                "ProbeCallback: Trainer(barebones=True) disables logging, so the measures could not be logged. Build "
                "ProbeCallback(use_loggers=False): it still feeds monitors (trainer.callback_metrics) and last_report."
            )
        if self.use_loggers and not trainer.loggers:
            raise ValueError(
                "ProbeCallback: the Trainer has no logger, so the measures would not be logged. Pass "
                "logger=TensorBoardLogger(save_dir) (or leave the default logger=True) to the Trainer, or build "
                "ProbeCallback(use_loggers=False) to only put probe/* into trainer.callback_metrics for monitoring."
            )
        # a new fit, also in a second Trainer: nothing measured yet (a resume restores its state after this)
        self._measured_at = self._published_at = None
        self.timings = []
        self._sink.reset()
        self._clash_checked, self._swa_versions = set(), None
        if self._hooks_trainer is None or self._hooks_trainer() is not trainer:
            # a new Trainer's loops hold no entry of ours; the same Trainer's keep the last fit's
            self._own_hooks, self._hooks_trainer = set(), weakref.ref(trainer)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # here, not in setup: configure_model() and LightningModule.setup() have built the layers by now
        # (lazy modules: after their first forward, at the first batch's end)
        self._selected = False
        if not has_lazy(pl_module):
            self._select(pl_module)
        others = [name for cb in trainer.callbacks if isinstance(cb, ProbeCallback) and cb is not self for name in cb.measures]
        check_monitors(trainer, self.measures, others)
        names = claimed_names(self.measures)
        self._readers = monitors(trainer, names)
        self._scheduler_reads = any(config.monitor in names for config in plateau_schedulers(trainer))
        for reader in self._readers:
            count_each_step_once(reader)
        if self.background and trainer.is_global_zero and self._measurer is None:
            self._measurer = Measurer(self.background, self.options)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if not self._selected:
            self._select(pl_module)
        self._check_clashes(trainer, first_batch_of="train")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self._check_clashes(trainer, first_batch_of="validation")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._check_clashes(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._execute(trainer, pl_module, "validation_start")

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._execute(trainer, pl_module, "validation_epoch_end")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._check_clashes(trainer)
        self._execute(trainer, pl_module, "train_epoch_end")

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._execute(trainer, pl_module, "fit_end")
        self._flush(trainer)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._flush(trainer)
            self._shutdown()
            for reader in self._readers:
                count_each_step_once(reader, undo=True)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # Ctrl-C included: Lightning shuts down gracefully, so finish and log what is in flight
        try:
            self._flush(trainer)
        except (Exception, KeyboardInterrupt) as error:
            log.warning("ProbeCallback: pending measurements lost after %r: %r", exception, error)
        finally:
            self._shutdown()
            for reader in self._readers:
                count_each_step_once(reader, undo=True)

    def fresh_report(self, trainer: Any, pl_module: Any) -> probe.Report | None:
        """The report of the weights as they are now, for another callback's ``on_train_epoch_end``.

        Measures unless this optimizer step was measured already; in background mode waits
        for that measurement. Every rank must call it (it broadcasts under DDP). ``None``
        when measuring failed (``nonfinite="nan"``).
        """
        self._execute(trainer, pl_module, "fresh_report")
        return self.last_report if self._published_at == trainer.global_step else None

    def state_dict(self) -> dict[str, Any]:
        return {"measured_at": self._measured_at, "last_epoch": self.last_epoch, "options": self._signature()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._measured_at = state_dict.get("measured_at")
        self.last_epoch = state_dict.get("last_epoch")
        saved, current = state_dict.get("options"), self._signature()
        if saved is not None and saved != current:
            changed = sorted(k for k in {*saved, *current} if saved.get(k) != current.get(k))
            warnings.warn(
                f"ProbeCallback: resumed with changed options {changed} (checkpoint: "
                f"{ {k: saved.get(k) for k in changed} }); the state is kept, so no step is measured or logged twice",
                UserWarning, stacklevel=2,
            )

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # the state key holds the measures: after a change, adopt the one ProbeCallback state rather than drop it
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        ours = {key: state for key, state in states.items() if str(key).startswith(type(self).__name__)}
        if len(ours) == 1:
            self.load_state_dict(next(iter(ours.values())))
        elif ours:
            warnings.warn(f"ProbeCallback: the checkpoint holds {len(ours)} ProbeCallback states {sorted(ours)}, none "
                          f"for measures={list(self.measures)}; this callback starts without state", UserWarning, stacklevel=2)

    # ------------------------------------------------------------- internals

    def _execute(self, trainer: Any, pl_module: Any, hook: Hook) -> None:
        """Ask the plan what ``hook`` must do given the trainer's state, and do it."""
        fitting = not trainer.sanity_checking and trainer.state.fn == "fit"
        moment = Moment(
            epoch=trainer.current_epoch,
            fitting=fitting,
            measured_this_step=self._fresh(trainer),
            end_of_epoch_validation=fitting and hook.startswith("validation") and end_of_epoch_validation(trainer),
            weights_swapped=hook == "fit_end" and self._swa_versions is not None and self._swa_versions != _versions(pl_module),
        )
        policy = Policy(every_n_epochs=self.every_n_epochs, background=self.background is not None,
                        monitored=bool(self._readers), scheduler_reads=self._scheduler_reads)
        step = plan(hook, moment, policy)
        if step is not None:
            self._point(trainer, pl_module, measure=step.measure, wait=step.wait, epoch_end=step.epoch_end,
                        step=epoch_metrics_step(trainer, in_train_epoch_end=step.in_train_epoch_end))

    def _select(self, pl_module: Any) -> None:
        """Check the selection against the (materialised) model once per fit; note sharded weights."""
        if has_lazy(pl_module):
            raise ValueError(f"ProbeCallback: {type(pl_module).__name__} still has uninitialised lazy modules after "
                             "its first training batch; run a forward pass over every lazy module in training_step")
        try:
            selected = select_layers(pl_module, self.layers)
        except ValueError as error:
            raise ValueError(f"ProbeCallback(layers={self.layers!r}) on {type(pl_module).__name__}: {error}") from error
        self._sharded = any(is_sharded(tensor) for _, tensor in selected)
        self._selected = True

    def _check_clashes(self, trainer: Any, first_batch_of: str | None = None) -> None:
        """Nobody else logs a name this callback logs: checked at the first batch of each loop (before Lightning
        logs it), at every validation's end and epoch end (names logged from epoch-end hooks)."""
        if trainer.state.fn != "fit":  # validate/test: the callback logs nothing there
            return
        if first_batch_of is not None:
            if first_batch_of in self._clash_checked:
                return
            self._clash_checked.add(first_batch_of)
        check_clashes(trainer, self.measures, self._own_hooks)

    def _fresh(self, trainer: Any) -> bool:
        return self._measured_at == trainer.global_step

    def _signature(self) -> dict[str, Any]:
        layers = self.layers
        return {"every_n_epochs": self.every_n_epochs, "measures": list(self.measures), "background": self.background,
                "step": self.step, "layers": layers if isinstance(layers, str) else "callable",
                "method": self.options.method, "nonfinite": self.options.nonfinite, "evbmf_xatol": self.options.evbmf_xatol}

    def _point(self, trainer: Any, pl_module: Any, *, measure: bool, wait: bool, epoch_end: bool, step: int) -> None:
        """Measure (or submit) and publish what is finished; every rank calls it with equal arguments."""
        epoch = trainer.current_epoch
        if measure:
            if not self._selected:
                self._select(pl_module)
            self._measured_at = trainer.global_step
            if averages_weights(trainer):
                self._swa_versions = _versions(pl_module)
        if not (measure or self.background):  # the same on every rank: no rank skips a broadcast
            return
        log_step = step if self.step == "lightning" else (epoch if epoch_end else None)
        result: _Result | None = None
        error: Exception | None = None
        start = perf_counter()
        try:
            if trainer.is_global_zero:
                result = self._rank_zero_point(trainer, pl_module, measure, wait, log_step)
            elif measure and self._sharded:
                self._take_part_in_gathers(pl_module)
        except Exception as caught:
            error = caught
        if trainer.is_global_zero and (measure or result is not None):  # waiting counts for the epoch waited for
            self._timing(epoch if measure or result is None else result.epoch).blocking_s += perf_counter() - start
        if trainer.world_size > 1:
            message, result = trainer.strategy.broadcast((None if error is None else repr(error), result), src=0)
            if error is None and message is not None:
                raise RuntimeError(f"ProbeCallback: measuring on rank 0 failed: {message}")
        if error is not None:
            raise error
        if result is not None:
            self._publish(trainer, pl_module, result)

    def _rank_zero_point(self, trainer: Any, pl_module: Any, measure: bool, wait: bool, log_step: int | None) -> _Result | None:
        epoch, at = trainer.current_epoch, trainer.global_step
        if measure and not self.background:
            start = perf_counter()
            try:
                report: probe.Report | None = probe.measure(pl_module, layers=self.layers, options=self.options,
                                                               hints=self.last_report)
            except Exception as error:
                self._failed(error, epoch)
                report = None
            else:
                warn_nonfinite(report, f"ProbeCallback: epoch {epoch}", stacklevel=3)
            self._timing(epoch).measure_s = perf_counter() - start
            return self._log(trainer, _Result(epoch, at, report, self._metrics(report)), log_step)
        measurer = self._measurer
        assert measurer is not None, "on_fit_start starts the worker"
        failed = None
        if measure:
            try:  # selecting and copying run here, on the training thread: a failure fails this measurement alone
                copies = {name: self._copy(gather(t)) for name, t in select_layers(pl_module, self.layers)}
            except Exception as error:
                self._failed(error, epoch)
                failed = _Result(epoch, at, None, self._metrics(None))
            else:
                measurer.enqueue(copies, _Job(epoch, at, log_step))
        latest = None
        for finished in measurer.collect(wait=wait):  # earlier measurements first
            latest = self._complete(trainer, finished)
        return self._log(trainer, failed, log_step) if failed is not None else latest

    def _take_part_in_gathers(self, pl_module: Any) -> None:
        """Ranks other than zero, sharded weights: join each layer's gather (rank zero measures)."""
        if self.background:
            for _, tensor in select_layers(pl_module, self.layers):
                gather(tensor)
        else:
            probe.measure(pl_module, layers=self.layers, options=self.options)

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu", copy=True) if self.copy_to == "cpu" else tensor.detach().clone()

    def _complete(self, trainer: Any, finished: Finished) -> _Result:
        """A finished background measurement (rank zero): warn or raise as the options say, log it at its own step."""
        job: _Job = finished.tag
        if finished.error is not None:
            self._failed(finished.error, job.epoch)
        elif finished.report is not None:
            warn_nonfinite(finished.report, f"ProbeCallback: epoch {job.epoch}", stacklevel=3)
        self._timing(job.epoch).measure_s = finished.seconds
        return self._log(trainer, _Result(job.epoch, job.at, finished.report, self._metrics(finished.report)), job.step)

    def _failed(self, error: Exception, epoch: int) -> None:  # the report of a failed measurement is None
        """A measurement failed: raise with ``nonfinite="raise"``, else warn (the metrics are NaN)."""
        if self.options.nonfinite == "raise":
            raise error
        warnings.warn(f"ProbeCallback: measuring epoch {epoch} failed ({type(error).__name__}: {error}); "
                      "its measures are NaN and training goes on", RuntimeWarning, stacklevel=2)

    def _metrics(self, report: probe.Report | None) -> dict[str, float]:
        if report is None:
            return {PROBE_PREFIX + name: math.nan for name in self.measures}
        return network_metrics(report, self.measures)

    def _publish(self, trainer: Any, pl_module: Any, result: _Result) -> None:
        self.last_report, self.last_epoch, self._published_at = result.report, result.epoch, result.at
        # self.log does nothing under barebones and is refused after training: hand the values over directly
        if getattr(trainer, "barebones", False) or getattr(pl_module, "_current_fx_name", None) in _NO_LOG_HOOKS:
            device = getattr(pl_module, "device", None)
            trainer.callback_metrics.update({name: torch.tensor(value, device=device) for name, value in result.metrics.items()})
            return
        self._own_hooks.add(str(getattr(pl_module, "_current_fx_name", None)))
        # equal on every rank; syncing with "max" keeps them exact (and quiets Lightning's sync_dist advice)
        for name, value in result.metrics.items():
            pl_module.log(name, value, logger=False, on_step=False, on_epoch=True, batch_size=1, reduce_fx="max",
                          sync_dist=trainer.world_size > 1)

    def _flush(self, trainer: Any) -> None:
        """Finish and log every pending background measurement (rank zero; no collectives)."""
        if self._measurer is None:
            return
        for finished in self._measurer.collect(wait=True):
            result = self._complete(trainer, finished)
            self.last_report, self.last_epoch, self._published_at = result.report, result.epoch, result.at

    def _shutdown(self) -> None:
        if self._measurer is not None:
            self._measurer.shutdown()
            self._measurer = None

    def _log(self, trainer: Any, result: _Result, step: int | None) -> _Result:
        """Write a result to every logger at ``step`` (training thread); ``None``: not logged."""
        if step is not None and self.use_loggers:
            self._sink.write(trainer.loggers, result.report, result.metrics, result.epoch, step)
        return result

    def _timing(self, epoch: int) -> EpochTiming:
        for timing in reversed(self.timings):
            if timing.epoch == epoch:
                return timing
        self.timings.append(EpochTiming(epoch))
        return self.timings[-1]


def _versions(pl_module: Any) -> tuple[int, ...]:
    """The parameters' version counters: they change with every in-place write (optimizer steps, SWA's swap)."""
    return tuple(p._version for p in pl_module.parameters())


_NO_LOG_HOOKS = ("on_train_end", "on_fit_end")


__all__ = ["EpochTiming", "ProbeCallback", "callback_bases", "epoch_metrics_step"]
