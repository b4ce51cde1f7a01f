import pytest

from probe.cli import main
from tests.conftest import GENPROB_FILE


def test_measure_prints_layers_and_network_measures(capsys, genprob_reference):
    assert main(["measure", str(GENPROB_FILE)]) == 0
    out = capsys.readouterr().out
    assert out.count("cell0.RELUConvBN0.1.weight") == 4  # in/out × BE/AE
    line = next(line for line in out.splitlines() if line.startswith("E_L2_BE"))
    assert float(line.split()[1]) == pytest.approx(genprob_reference["aggregates"]["E_L2_BE"], rel=1e-4)


def test_measure_missing_file_is_a_clear_error(capsys, tmp_path):
    assert main(["measure", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
