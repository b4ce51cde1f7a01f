"""``probe report --spectra N``: ESD plots of the last epoch of N runs, measured as replayed."""

from __future__ import annotations

import pytest

from probe.cli import main
from tests.replay_helpers import make_family

pytest.importorskip("matplotlib")


def test_report_spectra_draws_the_last_epoch_of_each_run(tmp_path, capsys):
    paths = make_family(tmp_path / "family", models=1, epochs=2)
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--no-plots", "--targets", "test_acc", "--spectra", "3"]) == 0
    printed = [line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith("spectra:")]
    assert len(printed) == 1  # one run: its last epoch only
    assert printed[0].endswith("_epoch1.png") and "/report/spectra_" in printed[0]
    assert [p.name for p in (out / "report").glob("spectra_*.png")] == [printed[0].rsplit("/", 1)[1]]

    assert main(["report", str(out), "--no-plots", "--measures", "E_L2_BE,alpha_mean_BE"]) == 2  # not in the layer table
    assert "alpha_mean_BE: the replay's layer table holds no power-law fits" in capsys.readouterr().err

    paths[-1].unlink()  # the checkpoint moved away: a clear error naming it
    assert main(["report", str(out), "--no-plots", "--targets", "test_acc", "--spectra", "1"]) == 2
    assert paths[-1].name in capsys.readouterr().err
