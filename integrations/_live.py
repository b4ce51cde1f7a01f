"""The settings every live front end shares (Lightning, Hugging Face, the plain-loop hook), checked once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from integrations._background import KINDS
from integrations.tensorboard import LogOptions
from probe._validate import check_choice, check_instance, check_int
from probe.aggregate import check_measure_names
from probe.layers import LayerSelector, check_layers
from probe.options import MeasureOptions, check_options


@dataclass(frozen=True)
class LiveSettings:
    """What to log, which tensors, how to measure, how often and where: validated at construction.

    ``background`` is normalised to ``None``, ``"thread"`` or ``"process"`` (``True`` is ``"thread"``).
    """

    measures: tuple[str, ...]
    layers: LayerSelector
    options: MeasureOptions
    every_n_epochs: int
    background: Literal["thread", "process"] | None
    log_options: LogOptions

    @classmethod
    def check(cls, *, measures: Iterable[str], layers: object, options: object, every_n_epochs: object,
              background: object, log_options: object) -> LiveSettings:
        """Each argument checked, with one message per mistake naming it."""
        kind = check_choice("background", background, (False, True, *KINDS))
        return cls(measures=check_measure_names(measures), layers=check_layers(layers), options=check_options(options),
                   every_n_epochs=check_int("every_n_epochs", every_n_epochs, 1),
                   background="thread" if kind is True else kind or None,  # type: ignore[arg-type]
                   log_options=check_instance("log_options", log_options, LogOptions))
