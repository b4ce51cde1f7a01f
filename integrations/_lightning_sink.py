"""Where ProbeCallback's results go: a Trainer's loggers, at one step."""

from __future__ import annotations

from typing import Any

import probe
from integrations._lightning_trainer import tensorboard_writer
from integrations.tensorboard import LogOptions, ReportWriter


class LoggerSink:
    """Write one measurement to every logger of a Trainer.

    TensorBoard loggers get a :class:`integrations.tensorboard.ReportWriter` each (the
    custom-scalars layout once, the heatmaps' history); every other logger gets the ``probe/<name>``
    scalars and ``epoch`` (the column Lightning fills for its own epoch-level metrics).
    A failed measurement (``report=None``) gives other loggers NaN and TensorBoard nothing
    (a gap, as for undefined values).
    """

    def __init__(self, measures: tuple[str, ...], options: LogOptions) -> None:
        self.measures = measures
        self.options = options
        self._writers: dict[int, ReportWriter] = {}

    def reset(self) -> None:
        """A new fit: new writers, a new layout and history each."""
        self._writers.clear()

    def write(self, loggers: list[Any], report: probe.Report | None, metrics: dict[str, float], epoch: int, step: int) -> None:
        for logger in loggers:
            writer = tensorboard_writer(logger)
            if writer is None:
                logger.log_metrics({**metrics, "epoch": epoch}, step=step)
                continue
            ours = self._writers.get(id(writer))
            if ours is None or ours.writer is not writer:
                ours = self._writers[id(writer)] = ReportWriter(writer, measures=self.measures, options=self.options)
            if report is not None:  # a failed measurement leaves a gap, as undefined values do
                ours.write(report, step, epoch=epoch)
