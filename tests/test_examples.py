"""The live examples the README points to run as documented (shrunk to a couple of epochs);
the Optuna example is tested in test_optuna_example.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tb_events import load

ROOT = Path(__file__).resolve().parents[1]


def scalar_tags(root: Path) -> set[str]:
    """Scalar tags of every TensorBoard run below ``root``."""
    runs = {event_file.parent for event_file in root.rglob("events.out.tfevents.*")}
    return {tag for run in runs for tag in load(run).Tags()["scalars"]}


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("script", ["plain_loop.py", "lightning_callback.py"])
def test_live_examples_write_probe_scalars(tmp_path, script):
    out = run_example(script, "--epochs", "2", "--log-dir", str(tmp_path / "tb"))
    assert "tensorboard --logdir" in out
    tags = scalar_tags(tmp_path / "tb")
    assert {"probe/E_L2_BE", "probe/SQ_p_BE", "probe/F_p_BE", "probe/S_p_BE"} <= tags
