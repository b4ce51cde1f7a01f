"""Add one callback to a Hugging Face ``Trainer``: the measures beside ``eval_loss``, and the best model chosen by one.

A tiny BERT built from ``BertConfig`` (nothing downloaded) learns whether token 1 occurs in
random token sequences. ``ProbeTrainerCallback`` measures the weights at every evaluation;
the values land in the evaluation's metrics as ``eval_probe/<name>``, so TensorBoard shows
them as ``eval/probe/<name>`` next to ``eval/loss``, ``trainer.state.log_history`` holds them,
and ``metric_for_best_model="probe/F_p_BE"`` with ``EarlyStoppingCallback`` reads them.

Run::

    .venv/bin/python examples/hf_trainer.py                           # 4 epochs, output in runs/hf
    .venv/bin/python examples/hf_trainer.py --epochs 10 --background thread --out /tmp/hf_runs
    tensorboard --logdir runs/hf
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built in code

import torch
from transformers import BertConfig, BertForSequenceClassification, EarlyStoppingCallback, Trainer, TrainingArguments

from integrations.transformers import ProbeTrainerCallback


class TokenData(torch.utils.data.Dataset):
    """``n`` random sequences of 8 tokens; the label says whether token 1 occurs."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 64, (n, 8), generator=generator)
        self.labels = (torch.rand(n, generator=generator) < 0.5).long()
        self.ids[self.labels == 1, 0] = 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default="runs/hf", help="output_dir: checkpoints and TensorBoard events")
    parser.add_argument("--background", choices=["thread", "process"], default=None)
    options = parser.parse_args()

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, num_labels=2)
    args = TrainingArguments(options.out, num_train_epochs=options.epochs, learning_rate=5e-3, per_device_train_batch_size=8,
                             eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch", report_to=["tensorboard"],
                             metric_for_best_model="probe/F_p_BE", load_best_model_at_end=True, use_cpu=True)
    trainer = Trainer(BertForSequenceClassification(config), args, train_dataset=TokenData(64, seed=1),
                      eval_dataset=TokenData(32, seed=2),
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2),
                                 ProbeTrainerCallback(background=options.background or False)])
    trainer.train()
    for entry in trainer.state.log_history:
        if "eval_loss" in entry:
            print(f"step {entry['step']:3d}: eval_loss {entry['eval_loss']:.4f}  F_p_BE {entry['eval_probe/F_p_BE']:.4f}")
    print(f"best checkpoint: {trainer.state.best_model_checkpoint} (F_p_BE {trainer.state.best_metric:.4f})")
    print(f"tensorboard --logdir {options.out}")


if __name__ == "__main__":
    main()
