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
