"""Replay state that cannot go stale or mix: workers die with the run, one option set per
directory, records keyed by file identity, corrupt records repaired, shards and workers checked."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import probe
from probe.cli import main
from probe.evbmf import REFERENCE_XATOL
from probe.options import MeasureOptions
from probe.replay import consolidate, load_checkpoint, merge, replay
from probe.replay.analysis import load_tables
from probe.replay.runner import Options, parse_shard, usable_cpus
from probe.replay.store import CorruptRecordError
from tests.replay_helpers import group_processes, make_family

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("checkpoints.csv", "layers.csv", "errors.csv")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    """16 checkpoints of ~0.1 s each: time to kill a run mid-way."""
    folder = tmp_path_factory.mktemp("family")
    make_family(folder, models=4, epochs=4, base=32)
    return folder


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "probe.cli", "replay", *args, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, **kwargs)


def _wait_for_a_record(process: subprocess.Popen, out: Path) -> None:
    records, deadline = out / "records", time.monotonic() + 120
    while not (records.is_dir() and any(records.glob("*.json"))):
        assert process.poll() is None, "replay ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_killing_the_replay_leaves_no_process_behind(family, tmp_path, sig):
    process = _cli(str(family), "--out", str(tmp_path / "out"), "--workers", "2",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_a_record(process, tmp_path / "out")
        assert len(group_processes(process.pid)) >= 3  # the CLI, the forkserver and its workers
        os.kill(process.pid, sig)  # the parent only, as a scheduler's timeout or a kill -9 would
        process.wait(timeout=60)
        deadline = time.monotonic() + 20
        while (left := group_processes(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # anything left must not outlive the test


@pytest.mark.skipif(usable_cpus() < 2, reason="needs two usable cores for two workers")
def test_an_unsafe_run_with_workers_warns_once(tmp_path):
    make_family(tmp_path / "family", models=2, epochs=2)
    process = _cli(str(tmp_path / "family"), "--out", str(tmp_path / "out"), "--workers", "2", "--unsafe-load",
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert err.decode().count("UNSAFE LOAD") == 1


def test_workers_are_capped_at_the_usable_cores(tmp_path):
    make_family(tmp_path / "family", models=2, epochs=3)
    process = _cli(str(tmp_path / "family"), "--out", str(tmp_path / "out"), "--workers", "64", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    most = 0
    while process.poll() is None:
        most = max(most, len(group_processes(process.pid)))
        time.sleep(0.02)
    _, err = process.communicate()
    assert process.returncode == 0, err.decode()
    assert f"workers=64 is more than the {usable_cpus()} usable CPU cores" in err.decode()
    assert most <= usable_cpus() + 3  # + the CLI, the forkserver and the resource tracker


def test_two_runs_with_different_options_never_share_a_directory(family, tmp_path):
    one = next(family.iterdir())
    runs = [_cli(str(one), "--out", str(tmp_path / "out"), "--layers", preset, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for preset in ("auto", "genprob")]
    results = [(run.wait(timeout=120), run.stderr.read().decode()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "was made with options" in refused
    manifest = json.loads((tmp_path / "out" / "replay.json").read_text())
    checkpoints, _ = load_tables(tmp_path / "out")
    assert list(checkpoints["preset"]) == [manifest["layers"]]


def test_a_checkpoint_rewritten_in_place_is_measured_again(tmp_path):
    paths = make_family(tmp_path / "family", models=1, epochs=2)
    replay([tmp_path / "family"], tmp_path / "out")
    raw = torch.load(paths[1], weights_only=True)
    for tensor in raw["state_dict_network"].values():
        if tensor.is_floating_point():
            tensor.mul_(3.0)
    torch.save(raw, paths[1])  # same path, new weights (as last.ckpt is)
    outcomes, tables = replay([tmp_path / "family"], tmp_path / "out")
    assert {Path(o.path).name: o.status for o in outcomes} == {paths[0].name: "done", paths[1].name: "measured"}
    assert tables.n_checkpoints == 2 and len(list((tmp_path / "out" / "records").iterdir())) == 2
    checkpoints, _ = load_tables(tmp_path / "out")
    row = checkpoints[checkpoints["path"] == str(paths[1].resolve())]
    expected = probe.measure(load_checkpoint(paths[1]).state_dict, layers="genprob", evbmf_xatol=REFERENCE_XATOL).network
    assert len(row) == 1 and row.iloc[0]["E_L2_BE"] == expected["E_L2_BE"]


@pytest.mark.parametrize("damage", [b"", b'{"key": "trunc', b"[1, 2]"])
def test_a_corrupt_record_is_named_and_measured_again(tmp_path, caplog, damage):
    make_family(tmp_path / "family", models=1, epochs=3)
    replay([tmp_path / "family"], tmp_path / "out")
    complete = {name: (tmp_path / "out" / name).read_bytes() for name in TABLES}
    record = sorted((tmp_path / "out" / "records").iterdir())[1]
    record.write_bytes(damage)

    with pytest.raises(CorruptRecordError, match=record.name):  # rebuilding alone cannot repair it: named
        consolidate(tmp_path / "out")
    record.write_bytes(damage)
    outcomes, _ = replay([tmp_path / "family"], tmp_path / "out")  # a re-run measures it again
    assert sorted(o.status for o in outcomes) == ["done", "done", "measured"]
    assert record.name in caplog.text and "corrupt record" in caplog.text
    assert {name: (tmp_path / "out" / name).read_bytes() for name in TABLES} == complete


def test_merge_keeps_the_most_recent_version_of_a_checkpoint(tmp_path):
    paths = make_family(tmp_path / "family", models=1, epochs=1)
    replay(paths, tmp_path / "old")
    raw = torch.load(paths[0], weights_only=True)
    for tensor in raw["state_dict_network"].values():
        if tensor.is_floating_point():
            tensor.mul_(2.0)
    torch.save(raw, paths[0])
    replay(paths, tmp_path / "new")
    tables = merge([tmp_path / "old", tmp_path / "new"], tmp_path / "merged")
    assert tables.n_checkpoints == 1
    assert (tmp_path / "merged" / "checkpoints.csv").read_bytes() == (tmp_path / "new" / "checkpoints.csv").read_bytes()


def test_shards_are_validated_and_an_empty_shard_succeeds(tmp_path, capsys, caplog):
    make_family(tmp_path / "family", models=1, epochs=3)
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress", "--shard", ""]) == 2
    assert "K/N" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress", "--shard", "5/8"]) == 0
    captured = capsys.readouterr()
    assert "0 checkpoints (shard 5/8): 0 measured" in captured.out and "shard 5/8 is empty" in caplog.text
    with open(out / "checkpoints.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == []


def test_shard_auto_reads_slurm_array_variables(tmp_path, capsys, monkeypatch):
    slurm = {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "6",
             "SLURM_ARRAY_TASK_MAX": "15", "SLURM_ARRAY_TASK_STEP": "3"}
    assert parse_shard("auto", slurm) == (2, 4)
    assert parse_shard("auto", {**slurm, "SLURM_ARRAY_TASK_ID": "6"}) == (0, 4)
    with pytest.raises(ValueError, match="evenly spaced"):
        parse_shard("auto", {**slurm, "SLURM_ARRAY_TASK_COUNT": "3"})  # e.g. --array=6,9,15
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID"):
        parse_shard("auto", {})

    make_family(tmp_path / "family", models=1, epochs=3)
    for name, value in {**slurm, "SLURM_ARRAY_TASK_ID": "9"}.items():
        monkeypatch.setenv(name, value)
    assert main(["replay", str(tmp_path / "family"), "--out", str(tmp_path / "out"), "--no-progress", "--shard", "auto"]) == 0
    assert "1 checkpoints (shard 1/4): 1 measured" in capsys.readouterr().out


def test_options_are_measure_options_with_the_reference_tolerance_for_genprob_files(tmp_path, capsys):
    assert Options().for_file("genprob", genprob=True) == ("genprob", MeasureOptions(evbmf_xatol=REFERENCE_XATOL, nonfinite="nan"))
    assert Options().for_file("auto", genprob=False) == ("auto", MeasureOptions(nonfinite="nan"))
    assert Options(layers="auto", evbmf_xatol=0.5).for_file("genprob", genprob=True) == ("auto", MeasureOptions(evbmf_xatol=0.5, nonfinite="nan"))
    assert Options.of(None, MeasureOptions(method="svd")) == Options(method="svd")
    for bad, error in (({"method": "lapack"}, ValueError), ({"evbmf_xatol": -1.0}, ValueError), ({"layers": "all"}, ValueError)):
        with pytest.raises(error):
            Options(**bad)

    path = make_family(tmp_path / "family", models=1, epochs=1)[0]
    assert main(["replay", str(path), "--out", str(tmp_path / "out"), "--no-progress", "--evbmf-xatol", "0.01"]) == 0
    assert json.loads((tmp_path / "out" / "replay.json").read_text())["evbmf_xatol"] == 0.01
    checkpoints, _ = load_tables(tmp_path / "out")
    expected = probe.measure(load_checkpoint(path).state_dict, layers="genprob", evbmf_xatol=0.01).network
    assert checkpoints.loc[0, "SQ_p_AE"] == expected["SQ_p_AE"]


def test_progress_is_called_once_per_checkpoint(tmp_path):
    make_family(tmp_path / "family", models=1, epochs=3)
    seen = []
    outcomes, _ = replay([tmp_path / "family"], tmp_path / "out", progress=lambda outcome, total: seen.append((outcome, total)))
    assert seen == [(outcome, 3) for outcome in outcomes]


def test_parquet_tables_hold_the_csv_values(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    make_family(tmp_path / "family", models=2, epochs=2)
    _, tables = replay([tmp_path / "family"], tmp_path / "out", parquet=True)
    checkpoints, layers = load_tables(tmp_path / "out")
    for table, frame in zip(tables.parquet, (checkpoints, layers)):
        read = pq.read_table(table).to_pandas()
        assert list(read.columns) == list(frame.columns) and len(read) == len(frame)
        for column in frame.columns:
            if frame[column].dtype.kind == "f":
                assert read[column].to_numpy().tolist() == pytest.approx(frame[column].to_numpy().tolist(), rel=0, abs=0, nan_ok=True)
            else:
                assert read[column].astype(str).tolist() == frame[column].astype(str).tolist(), column
    assert str(pq.read_schema(tables.parquet[1]).field("kept").type) == "int64"
    shutil.copy(tables.parquet[1], tmp_path / "kept.parquet")
    consolidate(tmp_path / "out")  # without parquet: the old Parquet tables would be stale
    assert not any((tmp_path / "out").glob("*.parquet"))
