"""Record a family of another kind: MLPs on a classification task generated in code.

Not a CNN, not images: ``sklearn.datasets.make_classification`` (fixed seed: 40 features, 12
informative, 6 classes, 2 clusters per class, 5 % flipped labels; 600 train / 400 validation /
2,000 test rows, standardised on the training split). Each run draws, from its own seed, an
optimizer (SGD with momentum, Adam, AdamW, RMSprop), a log-uniform learning rate and weight
decay, a width (32–512), a depth (1–3 hidden layers, ReLU) and a batch size (16–256), and
trains with a cosine schedule. After every epoch (and at initialisation, epoch 0) it records
the accuracies, losses and the eight headline measures of every ``Linear`` weight
(``probe.measure``, ``layers="auto"``): the columns of ``family.py``'s tables, so
``pruning.py`` replays it as it does the others. Recorded like the sequence families
(``_family_recording.py``): rows appended as each run finishes, so an interrupted recording
resumes where it stopped (to record afresh, give a new ``--out``).

    .venv/bin/python benchmarks/family_mlp.py --workers 1        # the committed table (~10 min, one thread)
    .venv/bin/python benchmarks/family_mlp.py --quick             # smoke test: 3 runs, 3 epochs
"""

from __future__ import annotations

import numpy as np
import torch
from _family_recording import Family, main, optimizer_draws, split
from torch import nn

CUTS = {"train": slice(0, 600), "val": slice(600, 1000), "test": slice(1000, 3000)}


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=40, n_informative=12, n_redundant=8, n_classes=6,
                               n_clusters_per_class=2, flip_y=0.05, class_sep=1.0, random_state=0)
    x = (x - x[:600].mean(0)) / x[:600].std(0)
    return split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long), CUTS)


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        **optimizer_draws(seed, rng),
        "width": int(rng.choice([32, 64, 128, 256, 512])),
        "depth": int(rng.integers(1, 4)),
        "batch_size": int(rng.choice([16, 32, 64, 128, 256])),
        "seed": seed,
    }


def model(width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    inputs = 40
    for _ in range(depth):
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, 6))


def run_id(cfg: dict) -> str:
    return (f"{cfg['optimizer']}_w{cfg['width']}x{cfg['depth']}_lr{cfg['lr']:.2g}_wd{cfg['weight_decay']:.1g}"
            f"_b{cfg['batch_size']}_s{cfg['seed']}")


FAMILY = Family(
    name="family_mlp",
    hyperparameters=("optimizer", "lr", "weight_decay", "width", "depth", "batch_size"),
    config=config, run_id=run_id, task=task, runs=40, clip_grad_norm=None,
    model=lambda cfg: model(cfg["width"], cfg["depth"]),
)

if __name__ == "__main__":
    main("family_mlp", __doc__.split("\n\n")[0])
