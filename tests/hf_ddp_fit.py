"""A 2-process CPU DDP ``transformers.Trainer`` run (gloo) with ProbeTrainerCallback; run by tests/test_transformers_ddp.py.

Usage: ``torchrun --standalone --nproc_per_node 2 tests/hf_ddp_fit.py OUT_DIR``. Early stopping and
best-model selection read ``probe/F_p_BE``. Each rank writes ``rank{r}.json``: its evaluation log
entries, the Trainer's best-model and stopping state, and how many measurements it made.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import EarlyStoppingCallback, Trainer

from integrations.transformers import ProbeTrainerCallback
from tests.hf_helpers import Examples, arguments, tiny_bert


def main(out: Path) -> None:
    torch.set_num_threads(1)
    args = arguments(out, num_train_epochs=4, per_device_train_batch_size=4, save_strategy="epoch", save_only_model=True,
                     load_best_model_at_end=True, metric_for_best_model="probe/F_p_BE", greater_is_better=False)
    callback = ProbeTrainerCallback()
    trainer = Trainer(tiny_bert(), args, train_dataset=Examples(32, seed=1), eval_dataset=Examples(16, seed=2),
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=1), callback])
    trainer.train()
    state = trainer.state
    record = {
        "rank": args.process_index, "world_size": args.world_size, "global_step": state.global_step,
        "evaluations": [e for e in state.log_history if "eval_loss" in e],
        "best_metric": state.best_metric, "best_model_checkpoint": state.best_model_checkpoint,
        "measured_steps": [t.step for t in callback.timings],
    }
    (out / f"rank{args.process_index}.json").write_text(json.dumps(record))
    if torch.distributed.is_initialized():  # gloo's threads joined before exit, which could otherwise abort
        torch.distributed.destroy_process_group()  # ("terminate called without an active exception", seen once in CI)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
