"""Tiny Hugging Face models and data built in code (nothing from a hub) for the Trainer tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB = 64
SEQ = 8


class Examples(torch.utils.data.Dataset):
    """``n`` token sequences with a learnable label (whether token 1 appears); ``lm``: labels = input_ids."""

    def __init__(self, n: int, *, seed: int, lm: bool = False) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, VOCAB, (n, SEQ), generator=generator)
        flag = torch.rand(n, generator=generator) < 0.5
        self.ids[flag, 0] = 1
        self.labels = self.ids.clone() if lm else flag.long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": self.labels[i]}


def tiny_bert(seed: int = 0) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=SEQ * 2, num_labels=2)
    return BertForSequenceClassification(config)


def tiny_gpt2(seed: int = 0) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=SEQ * 2)
    return GPT2LMHeadModel(config)


def arguments(out: Path, **overrides: Any) -> Any:
    """``TrainingArguments`` for a quick CPU run: 2 epochs of 4 steps, no reporting unless asked."""
    from transformers import TrainingArguments

    settings: dict[str, Any] = {
        "num_train_epochs": 2, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
        "learning_rate": 5e-3, "eval_strategy": "epoch", "save_strategy": "no", "logging_strategy": "epoch",
        "report_to": [], "use_cpu": True, "seed": 0, "disable_tqdm": True, "dataloader_num_workers": 0,
    }
    settings.update(overrides)
    return TrainingArguments(str(out), **settings)
