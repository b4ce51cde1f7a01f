"""A fit with ``ProbeCallback(background="process")`` interrupted by Ctrl-C while its process
measures; run by tests/test_lightning_process.py, which sends SIGINT to the whole process group
(as a terminal does) once this prints ``submitted <epoch>``.

After Lightning's graceful shutdown (which ends in ``SystemExit(1)``, kept) prints one JSON line:
the epoch last published, its ``E_L2_BE`` and ``probe.measure`` of that epoch's weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as L

import probe
from integrations.lightning import ProbeCallback
from tests.lightning_helpers import module, recorder, trainer


class Announce(L.Callback):
    """Once the measuring process is ready, prints the epoch whose measurement was just handed to it."""

    def __init__(self, probe_callback: ProbeCallback) -> None:
        self.probe_callback = probe_callback
        self.announced = False

    def on_train_epoch_start(self, trainer, net) -> None:
        measurer = self.probe_callback._measurer
        if trainer.current_epoch == 1 and hasattr(measurer, "wait_ready"):
            measurer.wait_ready(60)  # so that the next measurement runs in the process

    def on_train_epoch_end(self, trainer, net) -> None:  # after ProbeCallback's: the copy is submitted
        if trainer.current_epoch >= 1 and not self.announced:
            self.announced = True
            print("submitted", trainer.current_epoch, flush=True)


def main(out: Path) -> None:
    callback = ProbeCallback(background="process", use_loggers=False)
    record = recorder(L, callback)
    try:
        trainer(L, out, [callback, record, Announce(callback)], max_epochs=10_000, logger=False).fit(
            module(L, validation=False, depth=8, step_sleep=0.05))
    except SystemExit:  # Lightning's graceful shutdown after KeyboardInterrupt
        epoch = callback.last_epoch
        print(json.dumps({"last_epoch": epoch, "value": callback.last_report.network["E_L2_BE"],
                          "expected": probe.measure(record.states[epoch]).network["E_L2_BE"],
                          "measured": [t.epoch for t in callback.timings if t.measure_s == t.measure_s]}), flush=True)
        raise


if __name__ == "__main__":
    main(Path(sys.argv[1]))
