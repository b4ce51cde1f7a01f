"""Sharded weights (FSDP2 ``fully_shard``, DTensor) on 2 CPU processes (gloo).

The runs are subprocesses (``tests/fsdp_fit.py``) in their own process group, killed as a
whole on timeout, so a deadlock (a rank skipping a gather) fails the test instead of hanging.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tests.distributed import run_ranks

SCRIPT = Path(__file__).with_name("fsdp_fit.py")
TIMEOUT_S = 180

pytestmark = pytest.mark.timeout(TIMEOUT_S + 60)


def _run(mode: str, out: Path) -> list[dict]:
    run_ranks([sys.executable, str(SCRIPT), mode, str(out)], timeout_s=TIMEOUT_S, what=f"{mode} FSDP run")
    return [json.loads((out / f"{mode}{rank}.json").read_text()) for rank in (0, 1)]


def _equal(got: dict, expected: dict, tol: float = 1e-6) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, rel=tol, abs=tol), key


def test_measure_and_probe_hook_gather_one_layer_at_a_time(tmp_path) -> None:
    pytest.importorskip("torch.distributed.fsdp")
    for rank in _run("plain", tmp_path):
        assert rank["sharded"] == "DTensor" and rank["local_rows"] == 4  # half of the first conv's 8 rows
        assert rank["names"] == ["0.weight", "2.weight", "4.weight", "5.weight", "6.weight", "7.weight"]
        _equal(rank["measure"], rank["expected"])
        _equal(rank["hook"], rank["expected"])
        assert rank["peak_gathered_layers"] == 1


def test_probe_callback_under_model_parallel_strategy(tmp_path) -> None:
    pytest.importorskip("lightning.pytorch")
    rank0, rank1 = _run("lightning", tmp_path)
    assert rank0["metrics"] == rank1["metrics"]  # every rank monitors the same numbers
    for epoch, expected in rank0["expected"].items():
        # fro_p_t7_BE (= F_p_BE): the background callback publishes its latest finished report
        published = {k.removeprefix("probe/"): v for k, v in rank1["metrics"][epoch].items() if k != "probe/fro_p_t7_BE"}
        _equal(published, expected, tol=1e-6)  # float32 in callback_metrics
    last = rank0["expected"]["1"]
    for rank in (rank0, rank1):
        assert rank["sync"]["last_epoch"] == rank["thread"]["last_epoch"] == 1
        _equal(rank["sync"]["network"], last, tol=1e-12)
        assert rank["thread"]["network"]["F_p_BE"] == pytest.approx(last["F_p_BE"], rel=1e-12)
