"""Checkpoint readers: every format, safe loading, corrupt files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import probe
from probe.replay import CheckpointError, UnsafeCheckpointError, load_checkpoint
from tests.replay_helpers import REFERENCE_FILE, garbage, make_malicious, truncate

# The engine's fast route works in float32 where that is accurate enough (SPEC §2), so the
# same weights in differently aligned memory (e.g. safetensors' buffers) agree to ~1e-9.
REL = 1e-7


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def test_genprob_file_metadata_and_performance():
    checkpoint = load_checkpoint(REFERENCE_FILE)
    assert checkpoint.format == "genprob" and checkpoint.layers == "genprob"
    assert (checkpoint.optimizer, checkpoint.model_id, checkpoint.dataset, checkpoint.epoch) == ("SGD", "10001", "DIGITS10", 4)
    assert checkpoint.hparams == ("lr0.08", "wd0.0005", "mom0.9", "bs64", "step10")
    assert checkpoint.run == "SGD_NIN10001_lr0.08_wd0.0005_mom0.9_bs64_step10_DIGITS10"
    expected = [0.9179229736328125, 0.2814735770225525, 0.9275000095367432, 0.2137731909751892, -0.009577035903930664]
    got = [checkpoint.performance[k] for k in ("test_acc", "test_loss", "train_acc", "train_loss", "gap")]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert len(probe.measure(checkpoint.state_dict, layers=checkpoint.layers).layers) == 21


def test_plain_state_dict_pt_and_nested_pth(tmp_path):
    model = _mlp()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    performance = {"test_acc": 0.8, "test_loss": 0.5, "train_acc": 0.9, "train_loss": 0.3}
    torch.save({"model_state_dict": model.state_dict(), "epoch": 7, "performance": performance}, tmp_path / "run_a_epoch_7.pth")

    plain = load_checkpoint(tmp_path / "weights.pt")
    assert plain.format == "state_dict" and plain.layers == "auto" and plain.epoch is None
    assert math.isnan(plain.performance["test_acc"])
    nested = load_checkpoint(tmp_path / "run_a_epoch_7.pth")
    assert nested.epoch == 7 and nested.run == str(tmp_path / "run_a") and nested.model_id == "run_a"
    assert nested.performance["gap"] == pytest.approx(0.8 - 0.9)
    expected = probe.measure(model).network
    for checkpoint in (plain, nested):
        assert probe.measure(checkpoint.state_dict).network == pytest.approx(expected, rel=REL, nan_ok=True)


def test_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = _mlp()
    save_file(model.state_dict(), tmp_path / "model-epoch=2.safetensors")
    checkpoint = load_checkpoint(tmp_path / "model-epoch=2.safetensors")
    assert checkpoint.format == "safetensors" and checkpoint.epoch == 2
    assert probe.measure(checkpoint.state_dict).network == pytest.approx(probe.measure(model).network, rel=REL, nan_ok=True)


def test_lightning_ckpt_from_a_real_trainer(tmp_path):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float = 0.1, width: int = 8, hidden_act: str = "relu", note: str = "a b") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
    module = Tiny()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu",
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1)])
    trainer.fit(module, data)

    checkpoint = load_checkpoint(tmp_path / "ckpt" / "epoch=1-step=4.ckpt")
    assert checkpoint.format == "lightning" and checkpoint.layers == "auto" and checkpoint.epoch == 1
    assert checkpoint.hparams == ("lr=0.1", "width=8", "hidden_act=relu")  # tokens with spaces are left out
    assert checkpoint.run == str(tmp_path / "ckpt")
    assert set(checkpoint.state_dict) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert probe.measure(checkpoint.state_dict).network == pytest.approx(probe.measure(module).network, rel=REL, nan_ok=True)


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    path = make_malicious(tmp_path / "weights.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match="--unsafe-load") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)
    assert not marker.exists()
    # The payload is real: the explicit opt-in does run it.
    with pytest.warns(UserWarning, match="UNSAFE LOAD"):
        load_checkpoint(path, unsafe=True)
    assert marker.exists()


def test_numpy_scalars_load_safely(tmp_path):
    state = _mlp().state_dict()
    statistics = {f"{k}_epoch_3": np.float64(v) for k, v in
                  (("test_acc1", 0.7), ("test_loss", 0.9), ("train_acc1", 0.75), ("train_loss", 0.8))}
    torch.save({"state_dict_network": state, "performance_statistics": statistics}, tmp_path / "x.pth.tar")
    checkpoint = load_checkpoint(tmp_path / "x.pth.tar")  # not a GenProb name: epoch from the statistics
    assert checkpoint.format == "genprob" and checkpoint.epoch == 3
    assert checkpoint.performance["gap"] == pytest.approx(-0.05)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "truncated_safetensors"])
def test_corrupt_files_raise_checkpoint_error_naming_the_file(tmp_path, damage):
    from safetensors.torch import save_file

    good = tmp_path / "good.pt"
    torch.save(_mlp().state_dict(), good)
    if damage == "truncated":
        path = truncate(good, tmp_path / "bad.pt")
    elif damage == "garbage":
        path = garbage(tmp_path / "bad.pth")
    elif damage == "empty":
        path = tmp_path / "bad.ckpt"
        path.write_bytes(b"")
    else:
        save_file(_mlp().state_dict(), tmp_path / "good.safetensors")
        path = truncate(tmp_path / "good.safetensors", tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


def test_file_without_tensors_and_missing_file(tmp_path):
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no tensors"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_model_key_is_read_like_state_dict(tmp_path):
    model = _mlp()
    torch.save({"model": model.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "run_epoch_3.pt")
    checkpoint = load_checkpoint(tmp_path / "run_epoch_3.pt")
    assert checkpoint.format == "state_dict" and checkpoint.epoch == 3
    assert set(checkpoint.state_dict) == set(model.state_dict())
    assert probe.measure(checkpoint.state_dict).network == pytest.approx(probe.measure(model).network, rel=REL, nan_ok=True)


def test_sparse_and_expanded_tensors_are_densified_or_refused_by_name(tmp_path):
    from probe.replay.readers import DENSE_LIMIT_BYTES

    dense = _mlp().state_dict()
    small = {**dense, "0.weight": dense["0.weight"].to_sparse(), "2.weight": torch.ones(1, 12).expand(3, 12)}
    torch.save(small, tmp_path / "small.pt")
    checkpoint = load_checkpoint(tmp_path / "small.pt")
    assert all(t.layout == torch.strided for t in checkpoint.state_dict.values())
    assert torch.equal(checkpoint.state_dict["0.weight"], dense["0.weight"])
    assert torch.equal(checkpoint.state_dict["2.weight"], torch.ones(3, 12))
    side = int((DENSE_LIMIT_BYTES / 4) ** 0.5) + 1  # float32: just over the limit
    for name, huge in (("sparse", torch.sparse_coo_tensor(torch.zeros(2, 1, dtype=torch.long), torch.ones(1), (side, side))),
                       ("expanded", torch.zeros(1, 1).expand(side, side))):
        torch.save({"layer.weight": huge}, tmp_path / f"{name}.pt")
        assert (tmp_path / f"{name}.pt").stat().st_size < 4096  # a tiny file that would ask for > 1 GiB
        with pytest.raises(CheckpointError, match=f"'layer.weight' is {'sparse' if name == 'sparse' else 'an expanded view'}"):
            load_checkpoint(tmp_path / f"{name}.pt")


def test_malformed_performance_statistics_raise_checkpoint_error_naming_the_key(tmp_path):
    statistics = {"test_acc1_epoch_2": torch.tensor([0.5, 0.6]), "test_loss_epoch_2": 0.9}
    path = tmp_path / "SGD_NIN12345_CIFAR10_epoch_2.pth.tar"
    torch.save({"state_dict_network": _mlp().state_dict(), "performance_statistics": statistics}, path)
    with pytest.raises(CheckpointError, match=r"test_acc1_epoch_2.*shape \(2,\)") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


def test_unsafe_load_warns_loudly(tmp_path):
    torch.save(_mlp().state_dict(), tmp_path / "w.pt")
    with pytest.warns(UserWarning, match="UNSAFE LOAD.*runs any code"):
        load_checkpoint(tmp_path / "w.pt", unsafe=True)


def test_a_performance_entry_that_is_no_number_is_refused_by_file_and_key_and_none_is_nan(tmp_path):
    weights = {"fc.weight": torch.randn(20, 30)}
    numbers = {"test_loss": 1.0, "train_acc": 0.9, "train_loss": 0.5}
    torch.save({"state_dict": weights, "performance": {"test_acc": "abc", **numbers}}, tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match=r"text\.pt: performance\['test_acc'\] is 'abc', not a number"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"state_dict": weights, "performance": {"test_acc": None, **numbers}}, tmp_path / "none.pt")
    performance = load_checkpoint(tmp_path / "none.pt").performance
    assert math.isnan(performance["test_acc"]) and math.isnan(performance["gap"]) and performance["train_acc"] == 0.9


def test_a_sharded_index_that_is_no_json_is_named_with_the_parser_s_reason(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("not json")
    with pytest.raises(CheckpointError, match=r"corrupt or truncated sharded checkpoint index \(JSONDecodeError: Expecting value"):
        load_checkpoint(tmp_path / "model.safetensors.index.json")
