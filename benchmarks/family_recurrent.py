"""Record a family of a fourth architecture class: small recurrent classifiers on a generated sequence task.

Not a CNN, an MLP or a transformer: a token embedding (width = hidden size), an ``nn.GRU`` or
``nn.LSTM`` (by run: 1–2 layers, hidden 32–128), its last hidden state into a linear
classifier. The task, generated in code with a fixed seed: sequences of 16 tokens drawn
uniformly from a vocabulary of 6; the label is how many more 1-tokens than 2-tokens the
sequence holds, clipped to -2..2 (five classes, the largest 28 %). It needs counting over the
whole sequence, which a recurrent cell does well: most runs learn it (to ~100 %), others
(small learning rates, plain SGD) learn it slowly or stay near 40 %. 2,000 train / 500
validation / 2,000 test sequences. Each run draws, from its own seed, a cell (GRU and LSTM,
four runs each in turn), an optimizer (SGD with momentum, Adam, AdamW, RMSprop in turn), a
log-uniform learning rate and weight decay, hidden size, depth and a batch size (16–128), and
trains with a cosine schedule and gradients clipped to norm 1. After every epoch (and at
initialisation, epoch 0) it records the accuracies, losses and the eight headline measures of
every weight ``layers="auto"`` selects: the embedding and the head only — ``"auto"`` keeps
names that are or end in ``weight``, and the recurrent weights (``rnn.weight_ih_l0``,
``rnn.weight_hh_l0`` …) do not (SPEC §8; a ``layers=callable`` would choose them). The columns
are ``family_transformer.py``'s with ``cell, hidden, depth, batch_size`` instead of
``d_model, depth, heads, batch_size``, so ``pruning.py`` replays it as it does the others.
Rows are appended as each run finishes, so an interrupted recording resumes where it stopped;
when every run is done the file is rewritten in seed order.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/family_recurrent.py --workers 1 --out /work/heldout6/family_recurrent.csv
        # the held-out table (64 runs × 20 epochs; 15.6 min on 2 CPUs shared with other jobs)
    .venv/bin/python benchmarks/family_recurrent.py --quick     # smoke test: 3 runs, 3 epochs (~20 s)
"""

from __future__ import annotations

import numpy as np
import torch
from _family_recording import BATCH_SIZES, OPTIMIZERS, SPLITS, Family, main, optimizer_draws, split
from torch import nn

CELLS = ("GRU", "LSTM")
VOCABULARY, LENGTH, CLASSES = 6, 16, 5


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call): token sequences and how many
    more 1-tokens than 2-tokens they hold (clipped to -2..2, shifted to classes 0..4)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY, size=(SPLITS["test"].stop, LENGTH))
    y = np.clip((x == 1).sum(1) - (x == 2).sum(1), -2, 2) + 2
    return split(torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long))


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        "cell": CELLS[seed // len(OPTIMIZERS) % len(CELLS)],
        **optimizer_draws(seed, rng),
        "hidden": int(rng.choice([32, 64, 128])),
        "depth": int(rng.integers(1, 3)),
        "batch_size": int(rng.choice(BATCH_SIZES)),
        "seed": seed,
    }


class RecurrentClassifier(nn.Module):
    """Token embedding, a ``depth``-layer GRU or LSTM, its last hidden state, a linear head."""

    def __init__(self, cell: str, hidden: int, depth: int) -> None:
        super().__init__()
        self.token = nn.Embedding(VOCABULARY, hidden)
        self.rnn = getattr(nn, cell)(hidden, hidden, depth, batch_first=True)
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.token(tokens))[0][:, -1])


def run_id(cfg: dict) -> str:
    return (f"{cfg['cell']}_{cfg['optimizer']}_h{cfg['hidden']}x{cfg['depth']}_lr{cfg['lr']:.2g}"
            f"_wd{cfg['weight_decay']:.1g}_b{cfg['batch_size']}_s{cfg['seed']}")


FAMILY = Family(
    name="family_recurrent",
    hyperparameters=("cell", "optimizer", "lr", "weight_decay", "hidden", "depth", "batch_size"),
    config=config, run_id=run_id, task=task, runs=64,
    model=lambda cfg: RecurrentClassifier(cfg["cell"], cfg["hidden"], cfg["depth"]),
)

if __name__ == "__main__":
    main("family_recurrent", __doc__.split("\n\n")[0])
