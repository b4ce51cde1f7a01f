"""benchmarks/_family_recording.py: a family table is appended run by run, resumed, and sorted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def _record(out: Path, runs: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "benchmarks/family_mlp.py", "--out", str(out), "--runs", str(runs),
                           "--epochs", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    return done.stdout


def test_an_interrupted_recording_resumes_and_ends_in_seed_order(tmp_path):
    out = tmp_path / "family_mlp.csv"
    assert "2 runs, 0 already in" in _record(out, 2)
    first = pd.read_csv(out)
    printed = _record(out, 3)
    assert "3 runs, 2 already in" in printed and "1 to train" in printed
    table = pd.read_csv(out)
    assert list(table["seed"]) == [0, 0, 1, 1, 2, 2] and list(table["epoch"]) == [0, 1] * 3
    pd.testing.assert_frame_equal(table.iloc[:4].reset_index(drop=True), first)  # the first runs kept, not retrained


def test_step_schedule_decays_tenfold_at_half_and_three_quarters():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import _family_recording as recording
        import family_gnn
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import pytest
    import torch

    assert family_gnn.FAMILY.schedule == "step"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = recording._schedule(family_gnn.FAMILY, optimizer, 100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:50] == [1.0] * 50
    assert rates[50:75] == pytest.approx([0.1] * 25) and rates[75:] == pytest.approx([0.01] * 25)
    with pytest.raises(ValueError, match="'linear'"):
        recording._schedule(family_gnn.FAMILY._replace(schedule="linear"), optimizer, 100)
