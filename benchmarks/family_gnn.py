"""Record a family of a seventh architecture class: small graph convolutional networks on a generated graph task.

Not a CNN, an MLP, a transformer, a recurrent net, an MLP-Mixer or a 1-D CNN: a graph
convolutional network (GCN), message passing written in plain torch on a dense normalized
adjacency. A graph of up to 24 nodes comes packed in one 24 × (24 + 10) tensor: its normalized
adjacency with self-loops Â = D^-1/2 (A + I) D^-1/2 (zero rows and columns for the padding
nodes) beside its node features, the one-hot degree (0–8, "9 or more" in the last column). The
network is ``depth`` (1–3) graph convolutions h ← ReLU(Â (h W + b)) with ``nn.Linear`` weights
(10 → width 32–128, then width → width), a readout over the real nodes (mean, sum, or both
concatenated; drawn per run) and a linear head. The task, generated in code with a fixed seed:
which of four random-graph generators (drawn uniformly; four classes, the largest 26 %) made a
graph of 12–24 nodes (drawn uniformly). Every generator draws its edge count the same way —
round(nodes · d / 2), d uniform in 3–5 — so the edge count gives nothing away. "er"
(Erdős–Rényi G(n, m)) puts the edges uniformly on the node pairs; "sbm3" (a stochastic block
model of three balanced communities) and "ring" (a ring lattice of the pairs within ring
distance 2, rewired) put a share of them, uniform in 90–100 % (at most every such pair),
uniformly on the "near" pairs (the same community; ring distance ≤ 2) and the rest uniformly
on the others; "hub" (Chung–Lu) draws them without replacement with chances ∝ the product of
the two nodes' weights, 1 + Pareto(2) each. The nodes are shuffled. A GCN sees degrees and
their neighbourhoods, not triangles, so the classes overlap and the task is not learned perfectly:
runs spread from 41 % to 74 % (none saturates). 2,000 train / 500 validation / 2,000 test graphs.
Each run draws, from its own seed, an optimizer (SGD with momentum, Adam, AdamW, RMSprop in
turn), a log-uniform learning rate and weight decay, width, depth, readout and a batch size
(16–128), and trains with a **step-decay schedule** instead of the other families' cosine —
the learning rate ×0.1 at 50 % and again at 75 % of the training steps (``MultiStepLR``
stepped per batch, milestones in steps; ``Family(schedule="step")``) — and gradients clipped
to norm 1. After every epoch (and at initialisation, epoch 0) it records the accuracies,
losses and the eight headline measures of every weight ``layers="auto"`` selects: every
``nn.Linear`` weight — the first convolution (width × 10), the others (width × width) and
the head (4 × width, or 4 × 2·width for the concatenated readout); the biases are 1-D and
not selected. The columns are ``family_mixer.py``'s with ``width, depth, readout,
batch_size`` instead of ``width, depth, token_hidden, batch_size`` (``readout``: ``mean``,
``sum`` or ``meansum``), so ``pruning.py`` replays it as it does the others. Rows are
appended as each run finishes, so an interrupted recording resumes where it stopped; when
every run is done the file is rewritten in seed order.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/family_gnn.py --workers 1 --out /work/heldout9/family_gnn.csv
        # the held-out table (48 runs × 20 epochs; 2.7 min on 2 CPUs shared with other jobs)
    .venv/bin/python benchmarks/family_gnn.py --quick     # smoke test: 3 runs, 3 epochs (~6 s)
"""

from __future__ import annotations

import numpy as np
import torch
from _family_recording import BATCH_SIZES, SPLITS, Family, main, optimizer_draws, split
from torch import nn

MIN_NODES, MAX_NODES = 12, 24
GENERATORS = ("er", "sbm3", "ring", "hub")
CLASSES = len(GENERATORS)
MEAN_DEGREE = (3.0, 5.0)
NEAR_SHARE = (0.9, 1.0)
"""The share of a structured graph's edges within communities (or between ring neighbours), drawn per graph."""
RING_REACH = 2
HUB_TAIL = 2.0
"""The Pareto index of the hub graphs' node weights (an edge's chance ∝ the product of its nodes' weights)."""
DEGREES = 10
"""Node features: the degree one-hot, degrees of ``DEGREES - 1`` and more in the last column."""


def _graph(kind: str, nodes: int, rng: np.random.Generator) -> np.ndarray:
    """A ``nodes × nodes`` 0/1 adjacency of the generator ``kind``, its edge count drawn the same
    way for every kind: uniform over all pairs (``er``), or a share of the edges uniform among the
    "near" pairs (the same community; ring distance at most ``RING_REACH``), the rest among the others."""
    rows, cols = np.triu_indices(nodes, 1)
    edges = round(nodes * rng.uniform(*MEAN_DEGREE) / 2)
    if kind == "er":
        chosen = rng.choice(len(rows), size=edges, replace=False)
    elif kind == "hub":
        weight = rng.pareto(HUB_TAIL, size=nodes) + 1.0
        chance = weight[rows] * weight[cols]
        chosen = rng.choice(len(rows), size=edges, replace=False, p=chance / chance.sum())
    else:
        if kind.startswith("sbm"):
            community = rng.permutation(np.arange(nodes) % int(kind[3:]))
            near = community[rows] == community[cols]
        else:
            distance = np.minimum(cols - rows, nodes - (cols - rows))
            near = distance <= RING_REACH
        near_pairs, far_pairs = np.flatnonzero(near), np.flatnonzero(~near)
        inside = min(round(edges * rng.uniform(*NEAR_SHARE)), len(near_pairs))
        chosen = np.concatenate([rng.choice(near_pairs, size=inside, replace=False),
                                 rng.choice(far_pairs, size=edges - inside, replace=False)])
    adjacency = np.zeros((nodes, nodes), dtype=np.float32)
    adjacency[rows[chosen], cols[chosen]] = 1.0
    adjacency = adjacency + adjacency.T
    order = rng.permutation(nodes)
    return adjacency[np.ix_(order, order)]


def task() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The generated data set's splits (the same on every call): each graph packed into one
    ``MAX_NODES × (MAX_NODES + DEGREES)`` tensor — its normalized adjacency with self-loops
    (zero rows and columns for padding) beside its node features — and its generator (class)."""
    rng = np.random.default_rng(0)
    count = SPLITS["test"].stop
    x = np.zeros((count, MAX_NODES, MAX_NODES + DEGREES), dtype=np.float32)
    labels = rng.integers(0, CLASSES, size=count)
    for graph, label in zip(x, labels):
        nodes = int(rng.integers(MIN_NODES, MAX_NODES + 1))
        adjacency = _graph(GENERATORS[label], nodes, rng)
        degree = adjacency.sum(1)
        loops = adjacency + np.eye(nodes, dtype=np.float32)
        scale = 1.0 / np.sqrt(degree + 1.0)
        graph[:nodes, :nodes] = scale[:, None] * loops * scale[None, :]
        graph[np.arange(nodes), MAX_NODES + np.minimum(degree, DEGREES - 1).astype(int)] = 1.0
    return split(torch.tensor(x), torch.tensor(labels, dtype=torch.long))


def config(seed: int) -> dict:
    """The run's hyperparameters, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        **optimizer_draws(seed, rng),
        "width": int(rng.choice([32, 64, 128])),
        "depth": int(rng.integers(1, 4)),
        "readout": str(rng.choice(["mean", "sum", "meansum"])),
        "batch_size": int(rng.choice(BATCH_SIZES)),
        "seed": seed,
    }


class GCN(nn.Module):
    """``depth`` graph convolutions h ← ReLU(Â (h W + b)), a mean and/or sum readout over the nodes, a linear head."""

    def __init__(self, width: int, depth: int, readout: str) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Linear(DEGREES if layer == 0 else width, width) for layer in range(depth))
        self.readout = readout
        self.head = nn.Linear(2 * width if readout == "meansum" else width, CLASSES)

    def forward(self, graphs: torch.Tensor) -> torch.Tensor:
        adjacency, hidden = graphs[..., :MAX_NODES], graphs[..., MAX_NODES:]
        mask = (adjacency.diagonal(dim1=1, dim2=2) > 0).unsqueeze(2).to(hidden.dtype)
        for conv in self.convs:
            hidden = torch.relu(adjacency @ conv(hidden)) * mask
        total = hidden.sum(1)
        mean = total / mask.sum(1)
        pooled = {"mean": mean, "sum": total, "meansum": torch.cat([mean, total], 1)}[self.readout]
        return self.head(pooled)


def run_id(cfg: dict) -> str:
    return (f"{cfg['optimizer']}_w{cfg['width']}x{cfg['depth']}{cfg['readout']}_lr{cfg['lr']:.2g}"
            f"_wd{cfg['weight_decay']:.1g}_b{cfg['batch_size']}_s{cfg['seed']}")


FAMILY = Family(
    name="family_gnn",
    hyperparameters=("optimizer", "lr", "weight_decay", "width", "depth", "readout", "batch_size"),
    config=config, run_id=run_id, task=task, runs=48, schedule="step",
    model=lambda cfg: GCN(cfg["width"], cfg["depth"], cfg["readout"]),
)

if __name__ == "__main__":
    main("family_gnn", __doc__.split("\n\n")[0])
