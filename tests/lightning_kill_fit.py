"""A long fit with ``ProbeCallback(background="process")``; run and killed by tests/test_lightning_process.py.

Prints ``measuring <pid>`` (the measuring process) once the first epoch is measured, then
trains until killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as L

from integrations.lightning import ProbeCallback
from tests.lightning_helpers import module, trainer


class Announce(L.Callback):
    def __init__(self, probe_callback: ProbeCallback) -> None:
        self.probe_callback = probe_callback

    def on_train_epoch_end(self, trainer, net) -> None:
        if trainer.current_epoch == 0:
            print("measuring", self.probe_callback._measurer.pid, flush=True)


def main(out: Path) -> None:
    callback = ProbeCallback(background="process", use_loggers=False)
    trainer(L, out, [callback, Announce(callback)], max_epochs=10_000, logger=False).fit(
        module(L, validation=False, step_sleep=0.01))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
