"""Every benchmark script without a test of its own runs end to end at a tiny size.

(speed.py, pruning.py, pruner_latency.py and replay_scale.py have their own tests.)
Each run checks the script's exit status and that it printed its table's header; the
numbers themselves belong to benchmarks/RESULTS.md, not to a test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RUNS = {
    # script: (arguments, a line fragment its output must hold)
    "overhead.py": (["--models", "digits", "--epochs", "3", "--repeats", "1", "--modes", "none,sync", "--threads", "1"], "digits"),
    "replay.py": (["--checkpoints", "4", "--workers", "1"], "checkpoints"),
    "measures.py": (["--data", "benchmarks/data/family_train200.csv", "--figures", "{tmp}"], "E_L2_BE"),
    "cli_latency.py": (["--repeats", "1"], "probe --help"),
    "tensorboard_cost.py": (["--epochs", "2", "--repeats", "1"], "ms"),
    "family.py": (["--quick"], "test_acc"),
    "family_mlp.py": (["--quick"], "test_acc"),
    "family_transformer.py": (["--quick"], "test_acc"),
    "family_recurrent.py": (["--quick"], "test_acc"),
    "family_mixer.py": (["--quick"], "test_acc"),
    "family_conv1d.py": (["--quick"], "test_acc"),
    "family_gnn.py": (["--quick"], "test_acc"),
    "pruning_variants.py": (["--quick"], "| variant | mixer 20 | mixer all |"),
    "evbmf_minimum.py": (["--quick"], "other minimum"),
    "evbmf_speed.py": (["--shapes", "16x16,20x60", "--kinds", "random,ill", "--repeats", "1"], "decades"),
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs(script, tmp_path):
    arguments, expected = RUNS[script]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *(a.format(tmp=tmp_path) for a in arguments)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
