"""Record a family of a fifth architecture class: small MLP-Mixers on a generated image task.

Not a CNN, an MLP, a transformer or a recurrent net: an MLP-Mixer. 16×16 single-channel
images are cut into 16 patches of 4×4; each flattened patch goes through a ``nn.Linear`` patch
embedding (width 32–128), then ``depth`` (1–3) mixer blocks, each a LayerNorm and a
token-mixing MLP (``Linear`` over the 16 patches → token hidden 16–64 → GELU → back, applied
to every channel) and a LayerNorm and a channel-mixing MLP (``Linear`` width → 2·width → GELU
→ back, applied to every patch), both residual; a final LayerNorm, mean pooling over the
patches, a linear head. The task, generated in code with a fixed seed: 16×16 images of
Gaussian noise (σ 0.2) holding 1–5 bars (drawn uniformly), each 4 pixels long, horizontal or
vertical at random, at a uniform position, added with intensity 1 (crossing bars add up); the
label is the number of bars (five classes, the largest 21 %). Bars straddle patch borders, so
counting them needs both mixings, and the noise keeps it from being learned perfectly: runs
spread from 34 % to 81 % (none saturates). 2,000 train / 500 validation / 2,000
test images. Each run draws, from its own seed, an optimizer (SGD with momentum, Adam, AdamW,
RMSprop in turn), a log-uniform learning rate and weight decay, width, depth, token-mixing
hidden size and a batch size (16–128), and trains with a cosine schedule and gradients clipped to norm 1. After every epoch (and at
initialisation, epoch 0) it records the accuracies, losses and the eight headline measures of
every weight ``layers="auto"`` selects: every ``nn.Linear`` weight — the patch embedding
(width × 16), both token-mixing weights (token hidden × 16, 16 × token hidden) and both
channel-mixing weights (2·width × width, width × 2·width) of each block, and the head
(5 × width); the LayerNorm weights are 1-D and not selected. The columns are
``family_transformer.py``'s with ``width, depth, token_hidden, batch_size`` instead of
``d_model, depth, heads, batch_size``, so ``pruning.py`` replays it as it does the others.
Rows are appended as each run finishes, so an interrupted recording resumes where it stopped;
when every run is done the file is rewritten in seed order.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/family_mixer.py --workers 1 --out /work/heldout7/family_mixer.csv
        # the held-out table (48 runs × 20 epochs; 9.1 min on 2 CPUs shared with another job)
    .venv/bin/python benchmarks/family_mixer.py --quick     # smoke test: 3 runs, 3 epochs (~11 s)
"""

from __future__ import annotations

import numpy as np
import torch
from _family_recording import BATCH_SIZES, SPLITS, Family, main, optimizer_draws, split
from torch import nn

SIDE, PATCH, CLASSES = 16, 4, 5
BAR, NOISE = 4, 0.2
PATCHES = (SIDE // PATCH) ** 2


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call): noisy images holding 1–5 bars
    and how many (classes 0..4)."""
    rng = np.random.default_rng(0)
    count = SPLITS["test"].stop
    x = rng.normal(0.0, NOISE, size=(count, SIDE, SIDE)).astype(np.float32)
    bars = rng.integers(1, CLASSES + 1, size=count)
    for image, n in zip(x, bars):
        for _ in range(n):
            vertical = rng.random() < 0.5
            line, start = rng.integers(0, SIDE), rng.integers(0, SIDE - BAR + 1)
            if vertical:
                image[start:start + BAR, line] += 1.0
            else:
                image[line, start:start + BAR] += 1.0
    return split(torch.tensor(x), torch.tensor(bars - 1, dtype=torch.long))


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        **optimizer_draws(seed, rng),
        "width": int(rng.choice([32, 64, 128])),
        "depth": int(rng.integers(1, 4)),
        "token_hidden": int(rng.choice([16, 32, 64])),
        "batch_size": int(rng.choice(BATCH_SIZES)),
        "seed": seed,
    }


class MixerBlock(nn.Module):
    """LayerNorm + token-mixing MLP, LayerNorm + channel-mixing MLP, both residual."""

    def __init__(self, width: int, token_hidden: int) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(width)
        self.token_mix = nn.Sequential(nn.Linear(PATCHES, token_hidden), nn.GELU(), nn.Linear(token_hidden, PATCHES))
        self.channel_norm = nn.LayerNorm(width)
        self.channel_mix = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.token_mix(self.token_norm(hidden).transpose(1, 2)).transpose(1, 2)
        return hidden + self.channel_mix(self.channel_norm(hidden))


class Mixer(nn.Module):
    """Patch embedding, ``depth`` mixer blocks, LayerNorm, mean pooling over patches, a linear head."""

    def __init__(self, width: int, depth: int, token_hidden: int) -> None:
        super().__init__()
        self.embed = nn.Linear(PATCH * PATCH, width)
        self.blocks = nn.Sequential(*(MixerBlock(width, token_hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        side = SIDE // PATCH
        patches = images.reshape(-1, side, PATCH, side, PATCH).transpose(2, 3).reshape(-1, PATCHES, PATCH * PATCH)
        return self.head(self.norm(self.blocks(self.embed(patches))).mean(1))


def run_id(cfg: dict) -> str:
    return (f"{cfg['optimizer']}_w{cfg['width']}x{cfg['depth']}t{cfg['token_hidden']}_lr{cfg['lr']:.2g}"
            f"_wd{cfg['weight_decay']:.1g}_b{cfg['batch_size']}_s{cfg['seed']}")


FAMILY = Family(
    name="family_mixer",
    hyperparameters=("optimizer", "lr", "weight_decay", "width", "depth", "token_hidden", "batch_size"),
    config=config, run_id=run_id, task=task, runs=48,
    model=lambda cfg: Mixer(cfg["width"], cfg["depth"], cfg["token_hidden"]),
)

if __name__ == "__main__":
    main("family_mixer", __doc__.split("\n\n")[0])
