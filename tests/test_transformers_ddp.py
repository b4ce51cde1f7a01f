"""ProbeTrainerCallback under ``torchrun --nproc_per_node 2`` on CPU (gloo).

The run is a subprocess (``tests/hf_ddp_fit.py``) in its own process group, killed as a whole on
timeout, so a deadlock fails the test instead of hanging CI.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from safetensors.torch import load_file

import probe
from probe.options import LIVE
from tests.distributed import run_ranks

SCRIPT = Path(__file__).with_name("hf_ddp_fit.py")
TIMEOUT_S = 180

pytestmark = pytest.mark.timeout(TIMEOUT_S + 30)


def test_two_processes_see_equal_values_and_take_equal_decisions(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tmp_path)]
    run_ranks(command, timeout_s=TIMEOUT_S, what="torchrun", HF_HUB_OFFLINE="1")
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (rank0["world_size"], rank1["world_size"]) == (2, 2)

    def probe_values(record):
        return [{k: v for k, v in e.items() if "probe/" in k} for e in record["evaluations"]]

    assert json.dumps(probe_values(rank0)) == json.dumps(probe_values(rank1))  # equal on both ranks, NaN included
    steps = [e["step"] for e in rank0["evaluations"]]
    assert rank0["measured_steps"] == steps and rank1["measured_steps"] == []  # rank 0 measured, once per evaluation
    for key in ("global_step", "best_metric", "best_model_checkpoint"):
        assert rank0[key] == rank1[key], key
    # the decisions follow the rules on the logged values: lowest F_p_BE is best, stop after one without improvement
    values = [e["eval_probe/F_p_BE"] for e in rank0["evaluations"]]
    best, stop_at = values[0], None
    for step, value in zip(steps[1:], values[1:]):
        if not value < best:
            stop_at = step
            break
        best = value
    assert stop_at is not None, f"F_p_BE never rose: {values}"
    assert rank0["global_step"] == stop_at < 16  # both ranks stopped there, before the 4 epochs' 16 steps
    assert rank0["best_metric"] == best
    best_step = steps[values.index(best)]
    checkpoint = Path(rank0["best_model_checkpoint"])
    assert checkpoint.name == f"checkpoint-{best_step}"
    measured = probe.measure(load_file(str(checkpoint / "model.safetensors")), options=LIVE).value("F_p_BE")
    assert math.isclose(measured, best, rel_tol=1e-9)
