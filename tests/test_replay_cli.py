"""`probe measure` on every format (safe by default), `probe replay`, `probe merge`, `probe report`."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import probe
from probe.cli import main
from probe.evbmf import REFERENCE_XATOL
from probe.replay import load_checkpoint
from tests.replay_helpers import REFERENCE_FILE, make_family, make_malicious, truncate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_measure_reads_safetensors_and_reports_genprob_metadata(tmp_path, capsys, genprob_reference):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 2)).state_dict(), tmp_path / "m.safetensors")
    assert main(["measure", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "(safetensors, layers=auto)" in out and out.count("0.weight") == 4
    assert main(["measure", str(REFERENCE_FILE)]) == 0
    out = capsys.readouterr().out
    assert "(genprob, epoch 4, layers=genprob)" in out and "test_acc=0.9179" in out
    # GenProb files are measured with the reference's EVBMF tolerance, as `probe replay` does
    printed = {name: float(value) for name, value in (line.split() for line in out.splitlines()[-8:])}
    expected = probe.measure(load_checkpoint(REFERENCE_FILE).state_dict, layers="genprob", evbmf_xatol=REFERENCE_XATOL)
    assert printed == pytest.approx(expected.network, rel=5e-6)  # printed to 6 significant digits
    assert printed["E_L2_AE"] == pytest.approx(genprob_reference["aggregates"]["E_L2_AE"], rel=2e-3)


def test_measure_refuses_a_malicious_pickle_unless_opted_in(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = make_malicious(tmp_path / "evil.pt", marker)
    assert main(["measure", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--unsafe-load" in err and "evil.pt" in err
    assert not marker.exists()
    assert main(["measure", str(path), "--unsafe-load"]) == 0
    assert marker.exists()


def test_replay_merge_report_from_the_command_line(tmp_path, capsys):
    paths = make_family(tmp_path / "family", models=3, epochs=2)
    truncate(paths[0], tmp_path / "family" / "broken.pt")
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress", "--shard", "0/2"]) == 1
    first = capsys.readouterr()
    assert "broken.pt" in first.err and "corrupt" in first.err
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress", "--shard", "1/2"]) == 0
    second = capsys.readouterr().out
    assert "3 checkpoints (shard 1/2): 3 measured, 0 already done, 0 failed" in second

    assert main(["merge", str(out), "--genprob-csv"]) == 0
    assert "checkpoints: " in capsys.readouterr().out
    with open(out / "checkpoints.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    assert sorted(p.name for p in (out / "genprob_csv").iterdir()) == ["results-DIGITS10-0.csv", "results-DIGITS10-1.csv"]

    assert main(["report", str(out), "--measures", "E_L2_BE,SQ_p_BE", "--by", "dataset,optimizer", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "spearman correlation with test_acc (dataset=DIGITS10, optimizer=SGD" in printed
    assert (out / "report" / "correlations.csv").is_file()
    # a rerun replaces its own report; a folder holding anything else is refused, untouched
    assert main(["report", str(out), "--measures", "E_L2_BE", "--no-plots"]) == 0
    capsys.readouterr()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "correlations.csv").write_text("my numbers")
    (mine / "notes.txt").write_text("keep me")
    assert main(["report", str(out), "--out", str(mine), "--no-plots"]) == 2
    error = capsys.readouterr().err
    assert "refusing to write the report into" in error and "'notes.txt'" in error
    with pytest.raises(SystemExit):  # argparse refuses it before anything is written
        main(["report", str(out), "--out", str(tmp_path / "never"), "--spectra", "-1"])
    assert "--spectra: expected a whole number >= 0" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert (mine / "correlations.csv").read_text() == "my numbers"


def test_replay_unsafe_load_warns_and_merge_writes_parquet(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    make_family(tmp_path / "family", models=1, epochs=2)
    with pytest.warns(UserWarning, match="UNSAFE LOAD"):
        assert main(["replay", str(tmp_path / "family"), "--out", str(tmp_path / "out"), "--no-progress", "--unsafe-load"]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "out"), "--parquet"]) == 0
    printed = capsys.readouterr().out
    for table in ("checkpoints.parquet", "layers.parquet"):
        assert f"parquet:     {tmp_path / 'out' / table}" in printed and (tmp_path / "out" / table).is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "{tmp}/nowhere"], "no checkpoints.csv"),
        (["replay", "{tmp}/none.pt", "--out", "{tmp}/o"], "none.pt"),
        (["merge", "{tmp}", "{tmp}"], "--out is required"),
        (["report", "{out}", "--measures", "E_L2"], "unknown network measure measure='E_L2'"),
        (["report", "{out}", "--optimizer", "SAM"], "no checkpoint matches optimizer"),
    ],
)
def test_cli_errors_are_clear(tmp_path, capsys, argv, message):
    make_family(tmp_path / "family", models=1, epochs=1)
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main([a.format(tmp=tmp_path, out=out) for a in argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["replay", "merge", "report"])
def test_help_describes_outputs_and_gives_examples(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and ".csv" in text


def test_an_out_that_is_a_file_is_refused_as_such(tmp_path, capsys):
    torch.save({"fc.weight": torch.randn(8, 16)}, tmp_path / "m.pt")
    (tmp_path / "taken").write_text("mine")
    assert main(["replay", str(tmp_path / "m.pt"), "--out", str(tmp_path / "taken"), "--no-progress"]) == 2
    assert f"--out '{tmp_path / 'taken'}' is a file; give a directory" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "mine"
