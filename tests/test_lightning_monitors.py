"""The monitor contract: EarlyStopping and ModelCheckpoint on ``probe/<name>`` in every configuration.

For each configuration a real fit runs with both monitors; then:

- nothing crashed;
- every value EarlyStopping evaluated is the measure of the weights at that moment (copied
  as it read), and no optimizer step was evaluated twice (its patience advances once per
  fresh measurement);
- every checkpoint ModelCheckpoint saved carries a score equal to ``probe.measure`` of the
  weights stored in that checkpoint file.
"""

from __future__ import annotations

import pytest
import torch

import probe
from integrations.lightning import ProbeCallback
from tests.lightning_helpers import module, recording_stopper, trainer
from tests.tb_events import close

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:.*(num_workers|log_every_n_steps|LeafSpec|exists and is not empty).*")]

L = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402 - after the importorskip

CONFIGURATIONS = {  # name: (Trainer options, ProbeCallback options, validation loop, EarlyStopping reads)
    "val every epoch": ({}, {}, True, 2),
    "val_check_interval=0.5": ({"val_check_interval": 0.5}, {}, True, 4),
    "check_val_every_n_epoch=2": ({"check_val_every_n_epoch": 2}, {}, True, 1),
    "no validation loop": ({}, {}, False, 2),
    "every_n_epochs=2": ({}, {"every_n_epochs": 2}, True, 2),
    "thread": ({}, {"background": "thread"}, True, 2),
    "thread, val_check_interval=0.5": ({"val_check_interval": 0.5}, {"background": "thread"}, True, 4),
    "thread, no validation loop": ({}, {"background": "thread"}, False, 2),
    "process": ({}, {"background": "process"}, True, 2),
    # validations at global steps 0, 0, 0, 1 | 1, 1, 1, 2: three fresh measurements
    "two validations at one optimizer step": ({"accumulate_grad_batches": 4, "val_check_interval": 0.25}, {}, True, 3),
}


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_monitors_never_crash_and_read_the_weights_they_see(configuration, tmp_path) -> None:
    trainer_options, probe_options, validation, reads = CONFIGURATIONS[configuration]
    stopper = recording_stopper(L, "probe/E_L2_BE", mode="max", patience=100)  # strict: a missing value raises
    checkpoint = ModelCheckpoint(tmp_path / "ckpt", monitor="probe/SQ_p_BE", mode="max", save_top_k=-1,
                                 filename="{epoch}-{step}")
    callback = ProbeCallback(use_loggers=False, **probe_options)
    run = trainer(L, tmp_path, [stopper, checkpoint, callback], max_epochs=2, logger=False, enable_checkpointing=True, **trainer_options)
    run.fit(module(L, validation=validation))

    steps = [step for step, _, _ in stopper.reads]
    assert len(steps) == reads and len(set(steps)) == len(steps), steps  # one fresh measurement per read
    for step, value, state in stopper.reads:
        assert close(value, probe.measure(state).network["E_L2_BE"]), step
    # one checkpoint per read, except at global step 0, where Lightning's ModelCheckpoint never saves
    assert len(checkpoint.best_k_models) == len([step for step in steps if step > 0])
    for path, score in checkpoint.best_k_models.items():
        saved = torch.load(path, weights_only=True)["state_dict"]
        assert close(float(score), probe.measure(saved).network["SQ_p_BE"]), path
