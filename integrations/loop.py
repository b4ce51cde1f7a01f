"""Hook for a plain PyTorch training loop: one object, one call per epoch.

Example::

    from integrations.loop import ProbeHook

    with ProbeHook(model, log_dir="runs/probe") as hook:
        for epoch in range(epochs):
            train_one_epoch(model, loader)
            steps = (epoch + 1) * len(loader)  # optimizer steps taken so far
            report = hook.epoch_end(epoch, step=steps - 1)  # measures, writes probe/* there
            print(report.network["E_L2_BE"])

x axis: the project logs epoch-level values where Lightning logs its own epoch metrics, at
the index of the epoch's last optimizer step (``optimizer steps so far - 1``). Pass that
as ``step`` (and log your own epoch-level metrics at the same step) so that plain-loop runs,
Lightning runs and Optuna trials line up in one TensorBoard logdir. Without ``step`` the
x axis is the epoch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from typing import Any

from torch import nn

import probe
from integrations._live import LiveSettings
from integrations._weights import has_lazy, warn_nonfinite
from integrations.tensorboard import LogOptions, ReportWriter
from probe._validate import check_instance
from probe.aggregate import HEADLINE_NAMES
from probe.layers import LayerSelector, select_layers
from probe.options import LIVE, MeasureOptions

log = logging.getLogger(__name__)


class ProbeHook:
    """Measure a model at the end of each epoch and write the report to TensorBoard.

    Parameters
    ----------
    model:
        The ``nn.Module`` being trained (measured in place; its weights are not copied).
    log_dir:
        Directory for a new ``torch.utils.tensorboard.SummaryWriter`` (closed by
        :meth:`close`). Give exactly one of ``log_dir`` and ``writer``.
    writer:
        An existing ``SummaryWriter`` (yours to close), e.g. the one the loss goes to.
    every_n_epochs:
        Measure when ``(epoch + 1) % every_n_epochs == 0`` (default 1: every epoch).
    measures:
        Network measures written as ``probe/<name>`` (default the eight headline ones).
    layers:
        Which tensors (:func:`probe.measure`'s ``layers``; default ``"auto"``).
    options:
        How to measure (:class:`probe.MeasureOptions`), passed to :func:`probe.measure`
        unchanged. Default ``probe.options.LIVE`` (``nonfinite="nan"``: diverged weights
        give NaN measures, with a ``RuntimeWarning`` naming the layers, instead of an exception).
    log_options:
        Heatmaps, per-layer scalars and histograms (:class:`~integrations.tensorboard.LogOptions`).

    Raises
    ------
    ValueError
        At construction, when ``layers`` selects no tensor of ``model``, an argument is out
        of range, or a measure name is unknown. A model with lazy modules is checked at the
        first :meth:`epoch_end` instead, once a forward pass has materialised them.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        writer: Any = None,
        every_n_epochs: int = 1,
        measures: Iterable[str] = HEADLINE_NAMES,
        layers: LayerSelector = "auto",
        options: MeasureOptions = LIVE,
        log_options: LogOptions = LogOptions(),
    ) -> None:
        check_instance("model", model, nn.Module, called="torch.nn.Module")
        if (log_dir is None) == (writer is None):
            raise ValueError("give exactly one of log_dir (a directory for a new SummaryWriter) and writer")
        live = LiveSettings.check(measures=measures, layers=layers, options=options, every_n_epochs=every_n_epochs,
                                  background=False, log_options=log_options)
        self.measures, self.layers, self.options = live.measures, live.layers, live.options
        self.every_n_epochs, self.log_options = live.every_n_epochs, live.log_options
        if not has_lazy(model):  # a lazy module is checked at the first epoch_end, once materialised
            select_layers(model, layers)  # raises now, not at epoch 5, when nothing is selected
        self._model = model
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            directory = os.fspath(log_dir)  # type: ignore[arg-type]
            if os.path.isdir(directory) and any(name.startswith("events.out.tfevents.") for name in os.listdir(directory)):
                warnings.warn(f"ProbeHook: {directory!r} already holds TensorBoard event files: TensorBoard draws this "
                              "run's points on the same lines as the earlier run's; give each run its own log_dir",
                              UserWarning, stacklevel=2)
            writer = SummaryWriter(log_dir=directory)
            self._owns_writer = True
        else:
            self._owns_writer = False
        self.writer = writer
        self._report_writer = ReportWriter(writer, measures=self.measures, options=self.log_options)
        self.last_report: probe.Report | None = None
        self.last_epoch: int | None = None

    def epoch_end(self, epoch: int, *, step: int | None = None) -> probe.Report | None:
        """Measure the model now, write the report at ``step``, and return it.

        Parameters
        ----------
        epoch:
            The epoch that just ended (0-based).
        step:
            TensorBoard step (x axis): by the project's convention the index of this
            epoch's last optimizer step, ``optimizer steps so far - 1`` (see the module
            docstring); default ``epoch``. The heatmaps' columns are labelled by ``epoch``.

        Returns
        -------
        Report or None
            The report, or ``None`` when this epoch is skipped by ``every_n_epochs``.
        """
        if (epoch + 1) % self.every_n_epochs:
            return None
        if has_lazy(self._model):
            raise ValueError("ProbeHook: the model's lazy modules are still uninitialised; call epoch_end after a "
                             "forward pass has materialised them")
        report = probe.measure(self._model, layers=self.layers, options=self.options, hints=self.last_report)
        warn_nonfinite(report, f"ProbeHook: epoch {epoch}")
        self._report_writer.write(report, epoch if step is None else step, epoch=epoch)
        self.writer.flush()
        log.debug("probe: epoch %d measured (%d layers)", epoch, len(report.layers))
        self.last_report, self.last_epoch = report, epoch
        return report

    def close(self) -> None:
        """Flush the writer; close it if this hook created it."""
        if self._owns_writer:
            self.writer.close()
        else:
            self.writer.flush()

    def __enter__(self) -> ProbeHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
