"""ProbeCallback under a real 2-process CPU DDP fit (``strategy="ddp"``, gloo).

The fit runs in a subprocess (``tests/lightning_ddp_fit.py``) in its own process group,
killed as a whole on timeout, so a deadlock fails the test instead of hanging CI. One fit
carries a synchronous and a background callback (their measures differ).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import probe
from tests.distributed import run_ranks
from tests.tb_events import close, load, scalars, value_at

SCRIPT = Path(__file__).with_name("lightning_ddp_fit.py")
BACKGROUND = ["ER_mean_t0_BE", "SQ_wp_t0_AE"]  # as in the script
TIMEOUT_S = 240

pytestmark = pytest.mark.timeout(TIMEOUT_S + 60)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, dict, dict, dict]:
    pytest.importorskip("lightning.pytorch")
    out = tmp_path_factory.mktemp("ddp")
    run_ranks([sys.executable, str(SCRIPT), str(out)], timeout_s=TIMEOUT_S, what="DDP fit")
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
    steps = sorted(scalars(events, "val_loss"))  # Lightning's own epoch-level metric
    assert steps == [1, 3, 5]  # 2 batches per rank and epoch
    names = probe.HEADLINE_NAMES if mode == "sync" else BACKGROUND
    for name in names:
        for epoch, state in states.items():  # NaN (undefined) values are not written
            assert close(value_at(events, f"probe/{name}", steps[epoch]), probe.measure(state).value(name)), (name, epoch)
    assert sorted(scalars(events, f"probe/{names[0]}")) == steps  # a BE measure: defined every epoch
    assert rank0[mode]["last_epoch"] == 2  # background: flushed at fit end
    last = rank1[mode]["last_epoch"]  # rank 1 holds the report rank zero broadcast (background: the latest done)
    if mode == "sync":
        assert last == 2
    if last is not None:
        expected = probe.measure(states[last]).network
        assert all(close(rank1[mode]["last_network"][k], expected[k], rel=1e-12) for k in expected)
