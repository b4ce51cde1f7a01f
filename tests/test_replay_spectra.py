"""``probe report --spectra N`` (ESD plots of the last epoch of N runs, measured as replayed) and α in the replay's tables."""

from __future__ import annotations

import pytest

import probe
from probe.cli import main
from probe.replay.analysis import layer_measures
from probe.replay.readers import load_checkpoint
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

    names = ["alpha_mean_BE", "alphahat_p_t0_BE"]  # from the layer table, as any aggregate
    measured = layer_measures(out, names)
    for path in paths:
        expected = probe.measure(load_checkpoint(path).state_dict, layers="genprob")
        for name in names:
            assert measured.loc[str(path), name] == pytest.approx(expected.value(name), rel=1e-12, nan_ok=True), name
    assert main(["report", str(out), "--no-plots", "--measures", "E_L2_BE,alpha_mean_BE"]) == 0
    assert "alpha_mean_BE" in capsys.readouterr().out

    paths[-1].unlink()  # the checkpoint moved away: a clear error naming it
    assert main(["report", str(out), "--no-plots", "--targets", "test_acc", "--spectra", "1"]) == 2
    assert paths[-1].name in capsys.readouterr().err
