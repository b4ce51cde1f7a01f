"""``ProbeCallback(background="process")``: its measuring process never outlives the trainer,
and its death (e.g. killed for memory) never ends the fit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import probe
from integrations.lightning import ProbeCallback
from tests.lightning_helpers import module, recorder, trainer
from tests.tb_events import close

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:.*(num_workers|log_every_n_steps|LeafSpec).*")]

L = pytest.importorskip("lightning.pytorch")
SCRIPT = Path(__file__).with_name("lightning_kill_fit.py")
CTRL_C_SCRIPT = Path(__file__).with_name("lightning_ctrl_c_fit.py")


def test_a_dead_measuring_process_degrades_to_the_thread_with_a_warning(tmp_path) -> None:
    class KillMeasurer(L.Callback):
        def on_train_epoch_start(self, trainer, net) -> None:
            if trainer.current_epoch == 1:
                assert callback._measurer.wait_ready(60)  # its start-up overlaps the first epochs
                os.kill(callback._measurer.pid, signal.SIGKILL)  # as the kernel's OOM killer would

    callback = ProbeCallback(background="process", use_loggers=False)
    record = recorder(L, callback)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(L, tmp_path, [KillMeasurer(), callback, record], logger=False).fit(module(L))
    assert sum("the measuring process died" in str(w.message) for w in caught) == 1
    assert [t.epoch for t in callback.timings] == [0, 1, 2] and callback.last_epoch == 2
    assert all(t.measure_s > 0 for t in callback.timings)  # each epoch was measured
    assert callback.last_report.network == pytest.approx(probe.measure(record.states[2]).network, nan_ok=True)
    assert close(callback.last_report.network["F_p_BE"], probe.measure(record.states[2]).network["F_p_BE"])


def test_start_up_overlaps_training_and_the_thread_measures_meanwhile(tmp_path) -> None:
    class Watch(L.Callback):
        """Notes whether the process was ready when training started; waits for it at epoch 2."""

        def __init__(self) -> None:
            self.ready_at_train_start: bool | None = None

        def on_train_start(self, trainer, net) -> None:
            self.ready_at_train_start = callback._measurer.ready

        def on_train_epoch_start(self, trainer, net) -> None:
            if trainer.current_epoch == 2:
                assert callback._measurer.wait_ready(60)

    callback = ProbeCallback(background="process", use_loggers=False)
    record, watch = recorder(L, callback), Watch()
    trainer(L, tmp_path, [watch, callback, record], logger=False).fit(module(L))
    assert watch.ready_at_train_start is False  # fit start did not wait for the process (it imports torch: seconds)
    assert [t.epoch for t in callback.timings] == [0, 1, 2] and callback.last_epoch == 2
    for epoch, timing in enumerate(callback.timings):  # measured meanwhile in the thread, then in the process
        assert timing.measure_s > 0, epoch
    assert callback.last_report.network == pytest.approx(probe.measure(record.states[2]).network, nan_ok=True)


def test_ctrl_c_shuts_down_gracefully_and_keeps_the_measurement_in_flight(tmp_path) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C: the measuring process gets it too."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(CTRL_C_SCRIPT), str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("submitted "), line + process.stderr.read()
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    assert process.returncode == 1, err  # Lightning's graceful shutdown ends in exit(1)
    assert "Detected KeyboardInterrupt, attempting graceful shutdown" in err and "Traceback" not in err, err
    result = json.loads(out.strip().splitlines()[-1])
    epoch = int(line.split()[1])
    assert result["last_epoch"] == epoch  # the measurement in flight at Ctrl-C was finished and kept
    assert epoch in result["measured"]
    assert close(result["value"], result["expected"])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


def test_no_process_survives_a_killed_trainer(tmp_path) -> None:
    """One trainer per signal, run side by side; each is killed alone, as `timeout`, SLURM or a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    processes = {sig: subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path)], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
                 for sig in SIGNALS}
    try:
        for sig, process in processes.items():
            line = process.stdout.readline()
            assert line.startswith("measuring "), (sig.name, line)
            os.kill(process.pid, sig)
        for sig, process in processes.items():
            reader = threading.Thread(target=process.stdout.read, daemon=True)
            reader.start()
            reader.join(30)
            assert not reader.is_alive(), f"{sig.name}: the trainer's stdout is still held open after it was killed"
            process.wait(30)  # reaped: a zombie still counts as a member of the group
            deadline = time.monotonic() + 20
            while _group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            survivors = subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(process.pid)],
                                       capture_output=True, text=True, check=False).stdout
            assert not _group_alive(process.pid), f"{sig.name}: processes survive:\n{survivors}"
    finally:
        for process in processes.values():
            if _group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
