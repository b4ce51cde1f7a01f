"""One truth: what ProbeCallback logs equals ``probe.measure`` of that epoch's checkpoint and ``probe replay``.

A conv net and a transformer block (Embedding → TransformerEncoderLayer → Linear: an
embedding, ``nn.MultiheadAttention``'s fused ``in_proj_weight``, its out projection and the
feed-forward linears) are trained with ``ProbeCallback`` and ``ModelCheckpoint`` (one
checkpoint per epoch); the logged network measures are read back from TensorBoard.
"""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import probe
from integrations.lightning import ProbeCallback
from probe.cli import main as probe_cli
from tests.lightning_helpers import conv_net, loader, trainer
from tests.tb_events import close, load, value_at

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:.*(num_workers|log_every_n_steps|LeafSpec|enable_nested_tensor).*")]

L = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402 - after the importorskip


class Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 16)
        self.block = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(tokens)).mean(dim=1))


def _tokens() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 20, (32, 6), generator=generator), torch.randint(0, 10, (32,), generator=generator))
    return DataLoader(data, batch_size=8)


class Lit(L.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("kind", ["conv", "transformer"])
def test_logged_measures_equal_measure_of_the_checkpoint_and_replay(kind, tmp_path) -> None:
    net, data = (conv_net(), loader(0)) if kind == "conv" else (Transformer(), _tokens())
    if kind == "transformer":
        names = [name for name, _ in probe.layers.select_layers(net)]
        assert names == ["embed.weight", "block.self_attn.in_proj_weight", "block.self_attn.out_proj.weight",
                         "block.linear1.weight", "block.linear2.weight", "head.weight"]
    checkpoints = ModelCheckpoint(tmp_path / "ckpt", save_top_k=-1, filename="{epoch}")
    run = trainer(L, tmp_path, [ProbeCallback(), checkpoints], max_epochs=2, enable_checkpointing=True)
    run.fit(Lit(net), data)

    assert probe_cli(["replay", str(tmp_path / "ckpt"), "--out", str(tmp_path / "replay")]) == 0
    with open(tmp_path / "replay" / "checkpoints.csv") as f:
        replayed = {int(row["epoch"]): row for row in csv.DictReader(f)}
    events = load(tmp_path / "tb" / "version_0")
    for epoch in (0, 1):
        path = tmp_path / "ckpt" / f"epoch={epoch}.ckpt"
        measured = probe.measure(torch.load(path, weights_only=True)["state_dict"]).network
        step = 4 * epoch + 3  # Lightning's epoch-end step: 4 batches per epoch
        for name in probe.HEADLINE_NAMES:
            assert close(value_at(events, f"probe/{name}", step), measured[name]), (epoch, name)
            assert close(float(replayed[epoch][name]), measured[name], rel=1e-9), (epoch, name)
