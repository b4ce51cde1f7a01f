"""Multi-process runs (DDP, FSDP2, torchrun) as subprocesses that cannot hang the suite."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def run_ranks(command: list[str], *, timeout_s: int, what: str, **env: str) -> str:
    """Run ``command`` (which starts every rank) in its own process group and return its output.

    On timeout the whole group is killed (the launcher and the ranks it started) and the test fails
    naming ``what``, so a deadlock (a rank skipping a collective) fails instead of hanging CI. A
    non-zero exit fails with the output's tail. ``env``: added to the environment (one thread each,
    warnings off by default).
    """
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **env}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{what} did not finish in {timeout_s} s (deadlock?):\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output
