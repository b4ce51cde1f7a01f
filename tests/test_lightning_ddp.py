"""ProbeCallback under a real 2-process CPU DDP fit (``strategy="ddp"``, gloo).

The fit runs in a subprocess (``tests/lightning_ddp_fit.py``) in its own process group,
killed as a whole on timeout, so a deadlock fails the test instead of hanging CI. One fit
carries a synchronous and a background callback (their measures differ).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import probe
from tests.tb_events import close, load, scalars, value_at

SCRIPT = Path(__file__).with_name("lightning_ddp_fit.py")
BACKGROUND = ["ER_mean_t0_BE", "SQ_wp_t0_AE"]  # as in the script
TIMEOUT_S = 240

pytestmark = pytest.mark.timeout(TIMEOUT_S + 60)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, dict, dict, dict]:
    pytest.importorskip("lightning.pytorch")
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # rank 0 and the rank 1 it launched
        output, _ = process.communicate()
        pytest.fail(f"DDP fit did not finish in {TIMEOUT_S} s (deadlock?):\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    return out, rank0, rank1, torch.load(out / "states.pt", weights_only=True)


def test_every_rank_sees_the_same_monitored_values(ddp_run) -> None:
    _, rank0, rank1, states = ddp_run
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["metrics"] == rank1["metrics"]  # callback_metrics agree on every rank at every epoch end
    for epoch, state in states.items():
        expected = probe.measure(state).network
        for name in probe.HEADLINE_NAMES:  # synchronous: this epoch's values, before on_validation_end
            assert close(rank1["metrics"][f"validation_end/{epoch}"][f"probe/{name}"], expected[name]), (epoch, name)


@pytest.mark.parametrize("mode", ["sync", "background"])
def test_only_rank_zero_measures_and_logs(ddp_run, mode) -> None:
    out, rank0, rank1, states = ddp_run
    assert rank0[mode]["measured"] == [0, 1, 2] and rank1[mode]["measured"] == []
    events = load(out / "tb" / "version_0")  # one event file directory: rank zero's
    steps = {int(epoch): step for epoch, step in rank0["steps"].items()}
    names = probe.HEADLINE_NAMES if mode == "sync" else BACKGROUND
    assert [steps[0], steps[1], steps[2]] == [2, 4, 6]  # 2 batches per rank and epoch
    for name in names:
        for epoch, state in states.items():  # NaN (undefined) values are not written
            assert close(value_at(events, f"probe/{name}", steps[epoch]), probe.measure(state).value(name)), (name, epoch)
    assert sorted(scalars(events, f"probe/{names[0]}")) == [2, 4, 6]  # a BE measure: defined every epoch
    assert rank0[mode]["last_epoch"] == 2  # background: flushed at fit end
    last = rank1[mode]["last_epoch"]  # rank 1 holds the report rank zero broadcast (background: the latest done)
    if mode == "sync":
        assert last == 2
    if last is not None:
        expected = probe.measure(states[last]).network
        assert all(close(rank1[mode]["last_network"][k], expected[k], rel=1e-12) for k in expected)
