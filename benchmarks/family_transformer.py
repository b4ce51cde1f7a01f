"""Record a family of a third architecture class: small transformer encoders on a generated sequence task.

Not a CNN or an MLP: ``nn.TransformerEncoder`` (post-norm, 1–2 layers, d_model 32–128, 2 or 4
heads, feed-forward width 2·d_model, no dropout) over a token and a learned position
embedding, mean-pooled into a linear classifier. The task, generated in code with a fixed seed:
sequences of 12 tokens drawn uniformly from a vocabulary of 8; the label is how often the
first token occurs again in the other 11 positions (0, 1, 2, 3, or "4 or more": five classes,
the largest 35 %). It needs attention (compare every token with the first one), so it
separates the runs: some stay at the largest class, others climb out of that plateau at
different epochs, up to ~94 % within 20 epochs. 2,000 train / 500 validation / 2,000 test sequences. Each run draws, from its own seed, an
optimizer (SGD with momentum, Adam, AdamW, RMSprop in turn), a log-uniform learning rate and
weight decay, d_model, depth, heads and a batch size (16–128), and trains with a cosine
schedule and gradients clipped to norm 1. After every epoch (and at initialisation, epoch 0)
it records the accuracies, losses and the eight headline measures of every weight
``layers="auto"`` selects (the two embeddings, the fused ``in_proj_weight`` and ``out_proj`` of
each attention, both feed-forward ``Linear`` weights, the head): the columns of
``family_mlp.py``'s table, so ``pruning.py`` replays it as it does the others. Rows are
appended as each run finishes, so an interrupted recording resumes where it stopped; when
every run is done the file is rewritten in seed order.

    nice -n 10 .venv/bin/python benchmarks/family_transformer.py --workers 1 --out /work/heldout/family_transformer.csv
        # the held-out table (48 runs × 20 epochs; 13 min on 2 CPUs shared with two other jobs)
    .venv/bin/python benchmarks/family_transformer.py --quick     # smoke test: 3 runs, 3 epochs (~25 s)
"""

from __future__ import annotations

import numpy as np
import torch
from _family_recording import BATCH_SIZES, SPLITS, Family, main, optimizer_draws, split
from torch import nn

VOCABULARY, LENGTH, CLASSES = 8, 12, 5


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call): token sequences and how often
    their first token recurs (capped at ``CLASSES - 1``)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY, size=(SPLITS["test"].stop, LENGTH))
    y = np.minimum((x[:, 1:] == x[:, :1]).sum(1), CLASSES - 1)
    return split(torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long))


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        **optimizer_draws(seed, rng),
        "d_model": int(rng.choice([32, 64, 128])),
        "depth": int(rng.integers(1, 3)),
        "heads": int(rng.choice([2, 4])),
        "batch_size": int(rng.choice(BATCH_SIZES)),
        "seed": seed,
    }


class TransformerClassifier(nn.Module):
    """Token + position embedding, ``depth`` encoder layers, mean pooling, a linear head."""

    def __init__(self, d_model: int, depth: int, heads: int) -> None:
        super().__init__()
        self.token = nn.Embedding(VOCABULARY, d_model)
        self.position = nn.Embedding(LENGTH, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.token(tokens) + self.position.weight[: tokens.shape[1]]
        return self.head(self.encoder(hidden).mean(1))


def run_id(cfg: dict) -> str:
    return (f"{cfg['optimizer']}_d{cfg['d_model']}x{cfg['depth']}h{cfg['heads']}_lr{cfg['lr']:.2g}"
            f"_wd{cfg['weight_decay']:.1g}_b{cfg['batch_size']}_s{cfg['seed']}")


FAMILY = Family(
    name="family_transformer",
    hyperparameters=("optimizer", "lr", "weight_decay", "d_model", "depth", "heads", "batch_size"),
    config=config, run_id=run_id, task=task, runs=48,
    model=lambda cfg: TransformerClassifier(cfg["d_model"], cfg["depth"], cfg["heads"]),
)

if __name__ == "__main__":
    main("family_transformer", __doc__.split("\n\n")[0])
