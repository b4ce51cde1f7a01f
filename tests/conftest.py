"""Shared fixtures: the reference values of ``../shared/reference`` (copied to tests/data)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
GENPROB_DIR = DATA / "genprob"
GENPROB_FILE = GENPROB_DIR / "SGD_NIN10001_lr0.08_wd0.0005_mom0.9_bs64_step10_DIGITS10_epoch_4.pth.tar"

# A run started as a background job (`make test &`, some CI runners) inherits SIGINT ignored, and so would every
# Python the tests start: the Ctrl-C tests would test nothing. A handler (unlike "ignored") resets to the default
# in an exec'd child, which then turns Ctrl-C into KeyboardInterrupt as under a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)

METRIC_COLUMNS = [f"{u}_{q}_{v}" for v in ("BE", "AE") for u in ("in", "out") for q in ("S", "C", "ER", "spec", "fro")]
WEIGHT_COLUMNS = ["in_weight_BE", "out_weight_BE", "in_weight_AE", "out_weight_AE"]


@pytest.fixture(scope="session")
def reference_tensors() -> dict[str, torch.Tensor]:
    return torch.load(DATA / "tensors.pt", weights_only=True)


@pytest.fixture(scope="session")
def reference_measures() -> dict:
    return json.loads((DATA / "measures.json").read_text())


@pytest.fixture(scope="session")
def genprob_reference() -> dict:
    return json.loads((GENPROB_DIR / "reference.json").read_text())[GENPROB_FILE.name]


@pytest.fixture(scope="session")
def genprob_checkpoint() -> dict:
    return torch.load(GENPROB_FILE, map_location="cpu", weights_only=True)


@pytest.fixture
def one_torch_thread():
    """Measure in-process with one torch thread, as replay's worker processes do."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
