"""GenProb file names, the GenProb-format writer, and the reference-compatible per-layer CSV."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
import torch

import probe
from probe.replay import (
    GenProbName,
    genprob_filename,
    load_checkpoint,
    parse_genprob_name,
    save_genprob_checkpoint,
    write_genprob_csv,
)
from probe.replay.genprob import CSV_HEADER
from probe.zoo import GenProbNet
from tests.replay_helpers import REFERENCE_FILE


def test_parse_reference_name_and_round_trip():
    name = parse_genprob_name(REFERENCE_FILE)
    assert name == GenProbName("SGD", "10001", ("lr0.08", "wd0.0005", "mom0.9", "bs64", "step10"), "DIGITS10", 4)
    assert name.filename == REFERENCE_FILE.name and name.model_id == "10001"
    built = genprob_filename(optimizer="AdaBound", channel_code="01234", hparams=("lr0.03", "wd0.0001"), dataset="CIFAR100", epoch=69)
    assert built == "AdaBound_NIN01234_lr0.03_wd0.0001_CIFAR100_epoch_69.pth.tar"
    assert parse_genprob_name(built) == GenProbName("AdaBound", "01234", ("lr0.03", "wd0.0001"), "CIFAR100", 69)
    assert parse_genprob_name("SAM_NIN99999_CIFAR10_epoch_0.pth.tar").hparams == ()


@pytest.mark.parametrize("name", ["model.pt", "SGD_lr0.1_CIFAR10_epoch_3.pth.tar", "SGD_NIN1234_CIFAR10_epoch_3.pth.tar",
                                  "NIN12345_CIFAR10_epoch_3.pth.tar", "SGD_NIN12345_CIFAR10_epoch_x.pth.tar"])
def test_non_genprob_names_parse_to_none(name):
    assert parse_genprob_name(name) is None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"channel_code": "1234"}, "channel_code"),
    ({"epoch": -1}, "epoch"),
    ({"dataset": "CIFAR_10"}, "dataset"),
    ({"hparams": ("lr_0.1",)}, "hparams"),
    ({"optimizer": "NINja"}, "NIN"),
])
def test_filename_rejects_what_would_not_parse_back(kwargs, match):
    base = {"optimizer": "SGD", "channel_code": "12345", "dataset": "CIFAR10", "epoch": 1}
    with pytest.raises(ValueError, match=match):
        genprob_filename(**{**base, **kwargs})


def test_writer_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GenProbNet("20102", base=8, step=2, stem_channels=4)
    name = genprob_filename(optimizer="AdaM", channel_code="20102", hparams=("lr0.001",), dataset="DIGITS10", epoch=2)
    history = {e: {"test_acc": 0.1 * e, "test_loss": 2.0 - e, "train_acc": 0.2 * e, "train_loss": 1.5 - e} for e in (0, 1)}
    performance = {"test_acc": 0.75, "test_loss": 0.8, "train_acc": 0.8, "train_loss": 0.6}
    path = save_genprob_checkpoint(tmp_path / "sub" / name, model.state_dict(), performance, history=history)

    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict_network", "performance_statistics", "epoch"} and raw["epoch"] == 2
    assert raw["performance_statistics"]["train_acc1_epoch_1"] == pytest.approx(0.2)
    assert len(raw["performance_statistics"]) == 12
    checkpoint = load_checkpoint(path)
    assert checkpoint.performance == pytest.approx({**performance, "gap": -0.05})
    assert all(torch.equal(checkpoint.state_dict[k], v) for k, v in model.state_dict().items())
    assert len(probe.measure(checkpoint.state_dict, layers="genprob").layers) == 21
    assert not list((tmp_path / "sub").glob(".*"))  # no temporary left behind

    with pytest.raises(ValueError, match="epoch is required"):
        save_genprob_checkpoint(tmp_path / "plain.pt", model.state_dict(), performance)
    with pytest.raises(ValueError, match="lacks"):
        save_genprob_checkpoint(tmp_path / name, model.state_dict(), {"test_acc": 0.5})


def test_per_layer_csv_layout(tmp_path):
    report = probe.measure(load_checkpoint(REFERENCE_FILE).state_dict, layers="genprob")
    rows = report.genprob_rows()
    performance = {"test_acc": 0.9, "test_loss": 0.3, "train_acc": 0.95, "train_loss": 0.2}
    path = write_genprob_csv(tmp_path / "results.csv", [(performance, "10001", rows), (performance, "01234", rows[:2])])

    text = path.read_bytes()
    assert text.startswith(b"test_acc,test_loss,train_acc,train_loss,gap,in_S_BE,") and b"\r\n\r\n" in text
    with open(path, newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == list(CSV_HEADER) and len(CSV_HEADER) == 32
    assert [len(line) for line in lines[1:]] == [32] * 21 + [0] + [32] * 2 + [0]
    first = dict(zip(CSV_HEADER, lines[1]))
    assert float(first["gap"]) == pytest.approx(-0.05) and first["path"] == "0" and first["type"] == "4"
    assert float(first["in_S_BE"]) == rows[0]["in_S_BE"]  # floats written exactly
    table = pd.read_csv(path, dtype={"model_id": str})  # how analysis scripts read it: blank rows skipped
    assert len(table) == 23 and list(table["model_id"].unique()) == ["10001", "01234"]
