"""The ``probe`` command as a person meets it: instant help, -v anywhere, clear errors, – for undefined."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from probe.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "pandas", "matplotlib", "numpy")


def test_help_imports_no_heavy_package() -> None:
    code = (
        "import sys\n"
        "from probe.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.format_help()\n"
        "[sub.format_help() for action in parser._subparsers._group_actions for sub in action.choices.values()]\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["-v", "measure", "x.pt"], ["measure", "-v", "x.pt"], ["measure", "x.pt", "--verbose"],
                                  ["report", "runs", "-v"]])
def test_verbose_is_accepted_before_or_after_the_subcommand(argv) -> None:
    assert build_parser().parse_args(argv).verbose is True


def test_verbose_defaults_to_off() -> None:
    assert build_parser().parse_args(["measure", "x.pt"]).verbose is False


@pytest.mark.parametrize(("name", "content"), [("notes.pt", b"hello, not a checkpoint\n"), ("table.ckpt", b"a,b\n1,2\n"),
                                               ("empty.pth", b"")])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, capsys, name, content) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["measure", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not a checkpoint" in err
    assert "--unsafe-load" not in err


def test_undefined_values_are_dashes_not_zeros(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 3)).state_dict(), tmp_path / "fresh.pt")
    assert main(["measure", str(tmp_path / "fresh.pt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    ae_rows = [line.split() for line in lines if line.split()[2:3] == ["AE"]]
    assert len(ae_rows) == 4 and all(row[3:] == ["0"] + ["–"] * 6 for row in ae_rows)  # kept 0: nothing to show
    assert "E_L2_AE –" in [" ".join(line.split()) for line in lines]
    be_rows = [line.split() for line in lines if line.split()[2:3] == ["BE"]]
    assert len(be_rows) == 4 and not any("–" in row for row in be_rows)


def test_report_without_accuracies_fails_naming_the_missing_accuracy(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    for epoch in range(2):
        for run in range(3):
            (tmp_path / "ckpts" / f"run{run}").mkdir(parents=True, exist_ok=True)
            torch.save(nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 3)).state_dict(), tmp_path / "ckpts" / f"run{run}" / f"epoch={epoch}.pt")
    assert main(["replay", str(tmp_path / "ckpts"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nothing to correlate" in err and "'test_acc'" in err and "a test accuracy" in err
    assert main(["report", str(tmp_path / "out"), "--targets", "gap"]) == 2
    assert "a test and a train accuracy" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report" / "correlations.csv").exists()
