"""Smoke test of benchmarks/replay_scale.py on a sliver of the grid (one run, 70 epochs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_replay_scale_benchmark_runs_and_prints_its_table(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/replay_scale.py", "--fraction", "0.0001", "--shards", "2", "--dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": ""}, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| 70 ")]
    assert [row[3].strip() for row in rows] == ["merge (CSV + Parquet)", "report, layers from Parquet", "report, layers from CSV"]
    assert all(row[1].strip() == f"{70 * 21 * 4:,}" and float(row[5]) > 0 for row in rows)
    assert list(tmp_path.iterdir()) == []  # the temporary directory is removed
