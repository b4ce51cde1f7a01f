"""Where ProbeCallback's results go: a Trainer's loggers, at one step."""

from __future__ import annotations

from typing import Any

import probe
from integrations._lightning_trainer import tensorboard_writer
from integrations.tensorboard import LogOptions, add_layout, write_report


class LoggerSink:
    """Write one measurement to every logger of a Trainer.

    TensorBoard loggers get :func:`integrations.tensorboard.write_report`'s output (and the
    custom-scalars layout, once per writer); every other logger gets the ``probe/<name>``
    scalars and ``epoch`` (the column Lightning fills for its own epoch-level metrics).
    A failed measurement (``report=None``) gives other loggers NaN and TensorBoard nothing
    (a gap, as for undefined values).
    """

    def __init__(self, measures: tuple[str, ...], options: LogOptions) -> None:
        self.measures = measures
        self.options = options
        self._layout_written: set[int] = set()

    def reset(self) -> None:
        """A new fit: write the layout again (new writers)."""
        self._layout_written.clear()

    def write(self, loggers: list[Any], report: probe.Report | None, metrics: dict[str, float], epoch: int, step: int) -> None:
        for logger in loggers:
            writer = tensorboard_writer(logger)
            if writer is None:
                logger.log_metrics({**metrics, "epoch": epoch}, step=step)
                continue
            if id(writer) not in self._layout_written:
                add_layout(writer, self.measures, self.options)
                self._layout_written.add(id(writer))
            if report is not None:  # a failed measurement leaves a gap, as undefined values do
                write_report(writer, report, step, measures=self.measures, options=self.options, epoch=epoch)
