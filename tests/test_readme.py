"""Every ``python`` code block of the README and of the docs pages runs as written.

The README's blocks are complete programs: they run in an empty namespace and leave nothing
in the working directory. The docs pages' blocks are fragments (each page says so) that use a
few names a reader fills in with their own (``model``, ``train_loader``, ``train_one_epoch`` …);
the namespace below gives each one a small real counterpart: a digits classifier that is both
an ``nn.Module`` and a ``LightningModule``, its data, an epoch of SGD. Numbers of epochs and
trials stay as printed; the model is small enough for that.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader

from probe.zoo import digits_datasets

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


class DigitsNet(LightningModule):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Flatten(), nn.Linear(width * 36, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def placeholders() -> dict[str, object]:
    """The names the docs pages' fragments leave to the reader, as small real objects."""
    train, _, test = digits_datasets()
    loader = DataLoader(torch.utils.data.Subset(train, range(128)), batch_size=64)

    def train_one_epoch(model: nn.Module, opt_or_loader: object = None) -> None:
        opt = opt_or_loader if isinstance(opt_or_loader, torch.optim.Optimizer) else torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    def build(trial):
        model = DigitsNet(width=trial.suggest_int("width", 4, 12))
        return model, torch.optim.SGD(model.parameters(), lr=trial.suggest_float("lr", 1e-3, 0.3, log=True))

    def evaluate(model: nn.Module) -> float:
        x, y = next(iter(DataLoader(test, batch_size=len(test))))
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    return {"model": DigitsNet(), "train_loader": loader, "loader": loader, "epochs": 3,
            "train_one_epoch": train_one_epoch, "build": build, "evaluate": evaluate}


README_BLOCKS = _blocks(README)
PAGES_WITH_CODE = [page for page in PAGES if _blocks(page)]


@pytest.mark.parametrize("block", README_BLOCKS, ids=[f"block{i}" for i in range(len(README_BLOCKS))])
def test_readme_block_runs_as_written_and_leaves_nothing_behind(block, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"__name__": "__main__"})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[page.name for page in PAGES_WITH_CODE])
def test_docs_page_runs_top_to_bottom_with_the_readers_names_filled_in(page, tmp_path, monkeypatch, one_torch_thread):
    """A page's blocks run in order in one namespace: a later block may continue an earlier one."""
    monkeypatch.chdir(tmp_path)  # the fragments may write runs/, plots …
    namespace = placeholders()
    for block in _blocks(page):
        exec(compile(block, page.name, "exec"), namespace)
