"""Record a family of a sixth architecture class: small residual 1-D CNNs on a generated time-series task.

Not a 2-D CNN, an MLP, a transformer, a recurrent net or an MLP-Mixer: a 1-D convolutional
network with BatchNorm and residual connections. A single-channel sequence of 64 steps goes
through an ``nn.Conv1d`` stem (1 → channels 16–64, kernel 3 or 5, stride 2: 32 steps),
BatchNorm and ReLU, then ``depth`` (1–3) residual blocks, each two ``nn.Conv1d`` (channels →
channels, the same kernel, padding "same") with BatchNorm, ReLU between them and after the
residual sum; global average pooling over time, a linear head. The task, generated in code
with a fixed seed: 64 steps of Gaussian noise (σ 0.3) holding 1–5 bumps (drawn uniformly),
each a Gaussian of width σ 1.5 steps and height 1 at a uniform position (overlapping bumps
add up); the label is the number of bumps (five classes, the largest 21 %). Overlapping bumps
and the noise keep it from being learned perfectly: runs spread from 46 % to 90 % (none
saturates). 2,000 train / 500 validation / 2,000 test sequences. Each run draws, from its
own seed, an optimizer (SGD with momentum, Adam, AdamW, RMSprop in turn), a log-uniform
learning rate and weight decay, channels, depth, kernel size and a batch size (16–128), and
trains with a cosine schedule and gradients clipped to norm 1. After every epoch (and at
initialisation, epoch 0) it records the accuracies, losses and the eight headline measures of
every weight ``layers="auto"`` selects: every conv weight and the head — the stem
(channels × 1 × kernel), both convs of each block (channels × channels × kernel) and the head
(5 × channels); the BatchNorm weights are 1-D and not selected. A conv weight
``(out, in, kernel)`` is unfolded (``probe.unfold``) into ``in × (out·kernel)`` and
``out × (in·kernel)``, each transposed if taller than wide: a block conv gives two
channels × (channels·kernel) matrices, the stem 1 × (channels·kernel) and kernel × channels.
The columns are ``family_mixer.py``'s with ``channels, depth, kernel, batch_size`` instead
of ``width, depth, token_hidden, batch_size``, so ``pruning.py`` replays it as it does the
others. Rows are appended as each run finishes, so an interrupted recording resumes where it
stopped; when every run is done the file is rewritten in seed order.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/family_conv1d.py --workers 1 --out /work/heldout8/family_conv1d.csv
        # the held-out table (48 runs × 20 epochs; 6.5 min on 2 CPUs shared with another job)
    .venv/bin/python benchmarks/family_conv1d.py --quick     # smoke test: 3 runs, 3 epochs (~9 s)
"""

from __future__ import annotations

import numpy as np
import torch
from _family_recording import BATCH_SIZES, SPLITS, Family, main, optimizer_draws, split
from torch import nn

LENGTH, CLASSES = 64, 5
BUMP_WIDTH, NOISE = 1.5, 0.3


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call): noisy sequences holding 1–5
    bumps and how many (classes 0..4)."""
    rng = np.random.default_rng(0)
    count = SPLITS["test"].stop
    x = rng.normal(0.0, NOISE, size=(count, LENGTH)).astype(np.float32)
    bumps = rng.integers(1, CLASSES + 1, size=count)
    steps = np.arange(LENGTH)
    for sequence, n in zip(x, bumps):
        for _ in range(n):
            sequence += np.exp(-0.5 * ((steps - rng.uniform(0, LENGTH)) / BUMP_WIDTH) ** 2)
    return split(torch.tensor(x), torch.tensor(bumps - 1, dtype=torch.long))


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        **optimizer_draws(seed, rng),
        "channels": int(rng.choice([16, 32, 64])),
        "depth": int(rng.integers(1, 4)),
        "kernel": int(rng.choice([3, 5])),
        "batch_size": int(rng.choice(BATCH_SIZES)),
        "seed": seed,
    }


class ResidualBlock(nn.Module):
    """Conv, BatchNorm, ReLU, conv, BatchNorm; added to the input, then ReLU."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding="same", bias=False)
        self.norm1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding="same", bias=False)
        self.norm2 = nn.BatchNorm1d(channels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.relu(hidden + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(hidden))))))


class Conv1dNet(nn.Module):
    """Strided conv stem with BatchNorm, ``depth`` residual blocks, average pooling over time, a linear head."""

    def __init__(self, channels: int, depth: int, kernel: int) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, channels, kernel, stride=2, padding=kernel // 2, bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.blocks = nn.Sequential(*(ResidualBlock(channels, kernel) for _ in range(depth)))
        self.head = nn.Linear(channels, CLASSES)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.norm(self.stem(sequences.unsqueeze(1))))
        return self.head(self.blocks(hidden).mean(2))


def run_id(cfg: dict) -> str:
    return (f"{cfg['optimizer']}_c{cfg['channels']}x{cfg['depth']}k{cfg['kernel']}_lr{cfg['lr']:.2g}"
            f"_wd{cfg['weight_decay']:.1g}_b{cfg['batch_size']}_s{cfg['seed']}")


FAMILY = Family(
    name="family_conv1d",
    hyperparameters=("optimizer", "lr", "weight_decay", "channels", "depth", "kernel", "batch_size"),
    config=config, run_id=run_id, task=task, runs=48,
    model=lambda cfg: Conv1dNet(cfg["channels"], cfg["depth"], cfg["kernel"]),
)

if __name__ == "__main__":
    main("family_conv1d", __doc__.split("\n\n")[0])
