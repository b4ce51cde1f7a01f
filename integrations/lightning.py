"""Lightning callback: measure the model every few epochs, log it, expose it to monitors.

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

Where the measures go, at the end of every ``every_n_epochs``-th training epoch:

- TensorBoard loggers get the full output of :func:`integrations.tensorboard.write_report`
  (``probe/<name>`` scalars and layers × epochs heatmaps; per-layer scalars and spectra opt-in);
  every other logger gets the ``probe/<name>`` scalars through ``log_metrics``;
- ``trainer.callback_metrics`` gets ``probe/<name>`` (logged with ``logger=False``) before
  ``on_validation_end`` (measured in ``on_validation_start`` of the end-of-epoch
  validation) or, without validation that epoch, in ``on_train_epoch_end`` before the
  monitoring callbacks run; so ``EarlyStopping``, ``ModelCheckpoint`` and pruning
  callbacks can monitor them;
- ``last_report`` / ``last_epoch`` keep the latest report for other callbacks.

Both Lightning distributions are supported: ``ProbeCallback`` inherits from the
``Callback`` class of each installed one (``pytorch_lightning`` and ``lightning.pytorch``),
so the same class passes either ``Trainer``'s type check, and it only uses trainer
attributes the two share.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal, NamedTuple

import torch

import probe
from integrations._background import KINDS, Measurer, measure_selected
from integrations.tensorboard import LogOptions, add_layout, check_measure_names, network_metrics, write_report
from probe.aggregate import HEADLINE_NAMES
from probe.layers import LayerSelector, select_layers
from probe.options import MeasureOptions
from probe.spectrum import Method

log = logging.getLogger(__name__)

_PACKAGES = ("pytorch_lightning", "lightning.pytorch")
_MAX_IN_FLIGHT = 2
"""Background mode: at most this many measurements queued or running; the next epoch waits."""


def callback_bases(user: str = "integrations.lightning") -> tuple[type, ...]:
    """The ``Callback`` class of each installed Lightning distribution, so that a callback
    deriving from all of them passes either ``Trainer``'s type check."""
    bases = []
    for package in _PACKAGES:
        try:
            bases.append(importlib.import_module(package).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError(f"{user} needs Lightning: pip install pytorch-lightning (or lightning)")
    return tuple(bases)


@dataclass
class EpochTiming:
    """Seconds spent for one measured epoch (rank zero only).

    ``blocking_s``: time the training thread spent in the callback's hooks at that epoch's
    end (measuring and logging when synchronous; in background mode copying the weights
    and logging the reports found finished).
    ``measure_s``: time ``probe.measure`` took (on the worker thread in background mode);
    NaN until it is done.
    """

    epoch: int
    blocking_s: float = 0.0
    measure_s: float = float("nan")


class _Job(NamedTuple):
    epoch: int
    step: int
    future: Future


class ProbeCallback(*callback_bases()):  # type: ignore[misc]
    """Measure the model with :func:`probe.measure` during ``fit`` and log the report.

    Parameters
    ----------
    every_n_epochs:
        Measure after epochs with ``(epoch + 1) % every_n_epochs == 0`` (default 1).
    measures:
        Network measures logged as ``probe/<name>`` and put in ``trainer.callback_metrics``
        (default the eight headline ones); validated here against the probe names.
    options:
        What TensorBoard loggers also get (:class:`~integrations.tensorboard.LogOptions`).
    layers, method, device:
        Passed to :func:`probe.measure` (default ``"auto"``, ``"auto"``, ``None``: on the
        weights' device). ``layers`` is checked against the model at ``setup``.
    nonfinite:
        ``"nan"`` (default): diverged weights give NaN measures (``EarlyStopping``'s
        ``check_finite`` then stops the run); ``"raise"``: the fit fails with a
        ``ValueError`` naming the layer.
    background:
        ``False`` (default): measure in the hook, so the monitored values are those of the
        epoch that just ended. ``True`` or ``"thread"``: the hook only copies the probed
        weights and a worker thread measures them while training goes on. ``"process"``:
        the worker thread hands the copies to one spawned process (one CPU thread), so
        measuring does not compete with a Python-bound training loop for the GIL (see
        ``benchmarks/RESULTS.md``); ``setup`` waits for the process to start (seconds,
        once); as with any ``spawn`` process, a script needs the
        ``if __name__ == "__main__":`` guard. In both modes a finished report is logged, at its own epoch's step, by the
        next epoch end that finds it done, and put in ``callback_metrics``; pending work is
        flushed at fit end (and on an exception), before the loggers are closed; at most two
        measurements are in flight (a third epoch end waits for the oldest).
        ``callback_metrics``, ``last_report`` and ``last_epoch`` then hold the latest
        *finished* report, typically the previous epoch's (none yet after the first epoch:
        give ``EarlyStopping`` ``strict=False``).
    copy_to:
        Background mode: where the weight copies live: ``"cpu"`` (default) or ``"model"``
        (the weights' device; faster on a GPU, costs its memory).
    use_loggers:
        ``True`` (default): log through ``trainer.loggers``; ``setup`` fails when the
        Trainer has none. ``False``: only monitor (``callback_metrics`` and ``last_report``).
        (Not named ``log``: Lightning sets ``callback.log`` to the module's ``log`` method.)
    step:
        Logging x axis: ``"global_step"`` (default, like Lightning's own epoch metrics, so
        the measures line up with the loss) or ``"epoch"``.

    Attributes
    ----------
    last_report:
        The latest finished :class:`probe.Report`, or ``None`` (also right after a resume).
    last_epoch:
        The epoch ``last_report`` was measured at (restored on resume), or ``None``.
    timings:
        One :class:`EpochTiming` per measured epoch (rank zero only).

    Under DDP only rank zero measures and logs; the values are then broadcast so every
    rank's ``callback_metrics`` and ``last_report`` agree. ``state_dict`` keeps
    ``last_epoch`` and the last measured epoch, so a resumed run does not measure or log an
    epoch twice.
    """

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        measures: Iterable[str] = HEADLINE_NAMES,
        options: LogOptions = LogOptions(),
        layers: LayerSelector = "auto",
        method: Method = "auto",
        device: torch.device | str | None = None,
        nonfinite: Literal["raise", "nan"] = "nan",
        background: bool | Literal["thread", "process"] = False,
        copy_to: Literal["cpu", "model"] = "cpu",
        use_loggers: bool = True,
        step: Literal["global_step", "epoch"] = "global_step",
    ) -> None:
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive int, got {every_n_epochs!r}")
        if copy_to not in ("cpu", "model"):
            raise ValueError(f"copy_to must be 'cpu' or 'model', got {copy_to!r}")
        if step not in ("global_step", "epoch"):
            raise ValueError(f"step must be 'global_step' or 'epoch', got {step!r}")
        if background is True:
            background = "thread"
        if background is not False and background not in KINDS:
            raise ValueError(f"background must be False, True, 'thread' or 'process', got {background!r}")
        if not isinstance(options, LogOptions):
            raise TypeError(f"options must be an integrations.tensorboard.LogOptions, got {type(options).__name__}")
        self.every_n_epochs = every_n_epochs
        self.measures = check_measure_names(measures)
        self.options = options
        self.measure_options = MeasureOptions(layers=layers, method=method, nonfinite=nonfinite, device=device)
        self.background: Literal["thread", "process"] | None = background or None
        self.copy_to = copy_to
        self.use_loggers = bool(use_loggers)
        self.step = step
        self.last_report: probe.Report | None = None
        self.last_epoch: int | None = None
        self.timings: list[EpochTiming] = []
        self._measured_epoch: int | None = None
        self._measurer: Measurer | None = None
        self._pending: deque[_Job] = deque()
        self._layout_written: set[int] = set()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, measures=self.measures, background=self.background)

    # ----------------------------------------------------------------- hooks

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        if self.use_loggers and not trainer.loggers:
            raise ValueError(
                "ProbeCallback: the Trainer has no logger, so the measures would not be logged. Pass "
                "logger=TensorBoardLogger(save_dir) (or leave the default logger=True) to the Trainer, or build "
                "ProbeCallback(use_loggers=False) to only put probe/* into trainer.callback_metrics for monitoring."
            )
        try:
            select_layers(pl_module, self.measure_options.layers)
        except ValueError as error:
            raise ValueError(f"ProbeCallback(layers={self.measure_options.layers!r}) on {type(pl_module).__name__}: {error}") from error
        if self.background and trainer.is_global_zero and self._measurer is None:
            self._measurer = Measurer(self.background, self.measure_options)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:  # the end-of-epoch validation
            self._epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_end(trainer, pl_module)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._flush(trainer)
            self._shutdown()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        try:
            self._flush(trainer)
        except Exception as error:  # the original exception is the one to report
            log.warning("ProbeCallback: pending measurements lost after %r: %s", exception, error)
        finally:
            self._shutdown()

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "measured_epoch": self._measured_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = state_dict.get("last_epoch")
        self._measured_epoch = state_dict.get("measured_epoch")

    # ------------------------------------------------------------- internals

    def _due(self, epoch: int) -> bool:
        fresh = self._measured_epoch is None or epoch > self._measured_epoch
        return fresh and (epoch + 1) % self.every_n_epochs == 0

    def _epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Measure (or submit) if due, publish any new report; same collectives on every rank."""
        epoch = trainer.current_epoch
        due = self._due(epoch)
        if due:
            self._measured_epoch = epoch
        if not (due or self.background):  # the same on every rank: no rank skips a broadcast
            return
        payload: tuple[str, Any, Any] | None = None
        error: Exception | None = None
        if trainer.is_global_zero:
            start = perf_counter()
            try:
                payload = self._rank_zero_epoch_end(trainer, pl_module, epoch, due)
            except Exception as caught:  # tell the other ranks before raising, or they wait forever
                error, payload = caught, ("error", f"{type(caught).__name__}: {caught}", None)
            if due or payload is not None:
                self._timing(epoch).blocking_s += perf_counter() - start
        if trainer.world_size > 1:
            payload = trainer.strategy.broadcast(payload, src=0)
        if error is not None:
            raise error
        if payload is None:
            return
        kind, first, report = payload
        if kind == "error":
            raise RuntimeError(f"ProbeCallback: measuring on rank 0 failed: {first}")
        self.last_report, self.last_epoch = report, first
        # equal on every rank; syncing with "max" keeps them exact (and quiets Lightning's sync_dist advice)
        for name, value in network_metrics(report, self.measures).items():
            pl_module.log(name, value, logger=False, on_step=False, on_epoch=True, batch_size=1, reduce_fx="max",
                          sync_dist=trainer.world_size > 1)

    def _rank_zero_epoch_end(self, trainer: Any, pl_module: Any, epoch: int, due: bool) -> tuple[str, int, probe.Report] | None:
        step = trainer.global_step if self.step == "global_step" else epoch
        tensors = dict(select_layers(pl_module, self.measure_options.layers))
        if due and not self.background:
            report, self._timing(epoch).measure_s = measure_selected(tensors, self.measure_options)
            self._write_tensorboard(report, step, epoch, self._tensorboard_writers(trainer))
            self._log_other(trainer, report, step)
            return ("report", epoch, report)
        latest = None
        if due:
            while len(self._pending) >= _MAX_IN_FLIGHT:
                latest = self._complete(trainer, self._pending.popleft())
            copies = {name: self._copy(t) for name, t in tensors.items()}
            assert self._measurer is not None, "setup() starts the worker"
            self._pending.append(_Job(epoch, step, self._measurer.submit(copies)))
        while self._pending and self._pending[0].future.done():
            latest = self._complete(trainer, self._pending.popleft())
        return latest

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu", copy=True) if self.copy_to == "cpu" else tensor.detach().clone()

    def _complete(self, trainer: Any, job: _Job) -> tuple[str, int, probe.Report]:
        """Wait for a background job (rank zero), log it at its own step, return the payload."""
        report, seconds = job.future.result()
        self._timing(job.epoch).measure_s = seconds
        self._write_tensorboard(report, job.step, job.epoch, self._tensorboard_writers(trainer))
        self._log_other(trainer, report, job.step)
        return ("report", job.epoch, report)

    def _flush(self, trainer: Any) -> None:
        """Finish and log every pending background measurement (rank zero; no collectives)."""
        while self._pending:
            _, epoch, report = self._complete(trainer, self._pending.popleft())
            self.last_report, self.last_epoch = report, epoch

    def _shutdown(self) -> None:
        if self._measurer is not None:
            self._measurer.shutdown()
            self._measurer = None

    def _tensorboard_writers(self, trainer: Any) -> list[Any]:
        """The trainer's TensorBoard writers, each given the layout once."""
        if not self.use_loggers:
            return []
        writers = [w for w in map(_tensorboard_writer, trainer.loggers) if w is not None]
        for writer in writers:
            if id(writer) not in self._layout_written:
                add_layout(writer, self.measures, self.options)
                self._layout_written.add(id(writer))
        return writers

    def _write_tensorboard(self, report: probe.Report, step: int, epoch: int, writers: list[Any]) -> None:
        for writer in writers:
            write_report(writer, report, step, measures=self.measures, options=self.options, epoch=epoch)

    def _log_other(self, trainer: Any, report: probe.Report, step: int) -> None:
        """Network scalars to every logger that is not a TensorBoard one (training thread)."""
        if not self.use_loggers:
            return
        for logger in trainer.loggers:
            if _tensorboard_writer(logger) is None:
                logger.log_metrics(network_metrics(report, self.measures), step=step)

    def _timing(self, epoch: int) -> EpochTiming:
        for timing in reversed(self.timings):
            if timing.epoch == epoch:
                return timing
        self.timings.append(EpochTiming(epoch))
        return self.timings[-1]


def _tensorboard_writer(logger: Any) -> Any:
    """The ``SummaryWriter`` of a Lightning ``TensorBoardLogger`` (either package), else ``None``."""
    for package in _PACKAGES:
        loggers = sys.modules.get(f"{package}.loggers")
        cls = getattr(loggers, "TensorBoardLogger", None)
        if cls is not None and isinstance(logger, cls):
            return logger.experiment
    return None


__all__ = ["EpochTiming", "ProbeCallback"]
