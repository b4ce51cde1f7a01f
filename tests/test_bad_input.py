"""Offline contract holes found with hostile input (issue 20): each case ends in a clear
message naming what is wrong, or in right numbers, never in lost data, a crash or a
silent double count. Inputs that could crash a process are run in a subprocess."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import probe
from probe.cli import main
from probe.replay import load_checkpoint, merge, replay
from probe.replay.analysis import load_checkpoints, write_report
from probe.replay.runner import usable_cpus
from tests.replay_helpers import REFERENCE_FILE, make_crashing, make_family

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "probe.cli", *args], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"fc1.weight": torch.randn(12, 6, generator=g), "fc2.weight": torch.randn(3, 12, generator=g)}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return list(csv.DictReader(handle))


# 12. data loss


def test_replay_and_merge_refuse_a_directory_that_is_not_theirs(tmp_path, capsys):
    family, run = tmp_path / "family", tmp_path / "run"
    make_family(family, models=1, epochs=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "checkpoints.csv").write_text("my,own\n1,2\n")
    assert main(["replay", str(family), "--out", str(mine), "--no-progress"]) == 2
    assert "not a replay output directory" in capsys.readouterr().err
    assert main(["replay", str(family), "--out", str(run), "--no-progress"]) == 0
    assert main(["merge", str(run), "--out", str(mine)]) == 2
    assert "'checkpoints.csv'" in capsys.readouterr().err
    assert os.listdir(mine) == ["checkpoints.csv"] and (mine / "checkpoints.csv").read_text() == "my,own\n1,2\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".gitkeep").touch()  # hidden files are never overwritten: not in the way
    assert main(["merge", str(run), "--out", str(empty)]) == 0  # an empty directory is fine
    assert main(["replay", str(family), "--out", str(run), "--no-progress"]) == 0  # and so is resuming
    assert "1 already done" in capsys.readouterr().out


# 13. crafted sparse tensors


def test_crafted_sparse_tensors_fail_by_name_and_the_others_are_measured(tmp_path):
    """Run in a subprocess: without the checks, densifying the CSR tensor crashes the process."""
    family = tmp_path / "family"
    family.mkdir()
    with torch.sparse.check_sparse_tensor_invariants(False):  # saved as a hostile tool would: unchecked
        csr = torch.sparse_csr_tensor(torch.tensor([0, 2, 1, 3]), torch.tensor([0, 10**9, 1]), torch.ones(3), (3, 4))
        coo = torch.sparse_coo_tensor(torch.tensor([[0, 5], [0, 1]]), torch.ones(2), (3, 4))
    torch.save({"layer.weight": csr}, family / "csr.pt")  # to_dense() wrote out of bounds: a segfault
    torch.save({"layer.weight": coo}, family / "coo.pt")  # to_dense() dropped the element silently
    torch.save(_state(0), family / "good.pt")

    process = _cli("replay", str(family), "--out", str(tmp_path / "out"), "--no-progress")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err  # some failed, the run went on
    assert "1 measured" in out and "2 failed" in out
    assert [Path(r["path"]).name for r in _rows(tmp_path / "out" / "checkpoints.csv")] == ["good.pt"]
    errors = {Path(r["path"]).name: r["error"] for r in _rows(tmp_path / "out" / "errors.csv")}
    assert sorted(errors) == ["coo.pt", "csr.pt"]
    assert "'layer.weight' is an invalid sparse tensor" in errors["csr.pt"] and "col_indices" in errors["csr.pt"]
    assert "'layer.weight' is an invalid sparse tensor" in errors["coo.pt"] and "found index 5" in errors["coo.pt"]


def test_a_file_that_kills_the_run_is_measured_alone_next_time(tmp_path):
    """Any crash in native code, with one worker (in-process): the run dies, and the next one
    measures that file in a fresh process of its own, so it fails alone (was: every rerun died)."""
    make_family(tmp_path / "family", models=1, epochs=2)
    make_crashing(tmp_path / "family" / "crash.ckpt")  # its loading ends the process (an unsafe load runs it)
    argv = ("replay", str(tmp_path / "family"), "--out", str(tmp_path / "out"), "--unsafe-load", "--no-progress")
    process = _cli(*argv)
    process.communicate(timeout=120)
    assert process.returncode == 3  # the crash ended the run
    for _ in range(2):  # and no later run
        process = _cli(*argv)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1, err
        assert "2 already done, 1 failed" in out and "the process measuring it died" in err
    assert [Path(r["path"]).name for r in _rows(tmp_path / "out" / "errors.csv")] == ["crash.ckpt"]


# 14. double counting


def test_a_family_merged_from_two_paths_is_counted_once(tmp_path, caplog):
    family = tmp_path / "family"
    make_family(family, models=3, epochs=2)
    copy = Path(shutil.copytree(family, tmp_path / "mount2"))  # a copy, or one storage under two mount points
    replay([family], tmp_path / "a")
    replay([copy], tmp_path / "b")
    tables = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "all")
    assert (tables.n_checkpoints, tables.n_duplicates) == (6, 6)
    assert "6 duplicate checkpoint(s) counted once" in caplog.text
    assert all(Path(r["path"]).parent == family for r in _rows(tables.checkpoints))
    duplicates = _rows(tmp_path / "all" / "duplicates.csv")
    assert {(Path(r["path"]).parent, Path(r["same_as"]).parent) for r in duplicates} == {(copy, family)}
    assert all(Path(r["path"]).name == Path(r["same_as"]).name and "content" in r["reason"] for r in duplicates)
    report = write_report(tmp_path / "all", plots=False)
    assert set(report.correlations["models"]) == {3}  # was 6: every model twice

    # a GenProb file saved again (other bytes) elsewhere is the same run and epoch
    other = tmp_path / "resaved"
    other.mkdir()
    first = sorted(family.iterdir())[0]
    saved = torch.load(first, weights_only=True)
    torch.save({**saved, "note": 1}, other / first.name)
    replay([other], tmp_path / "c")
    tables = merge([tmp_path / "all", tmp_path / "c"], tmp_path / "all")
    assert (tables.n_checkpoints, tables.n_duplicates) == (6, 7)
    assert any(r["path"] == str(other / first.name) and "run and epoch" in r["reason"]
               for r in _rows(tmp_path / "all" / "duplicates.csv"))


def test_a_duplicated_row_of_the_checkpoint_table_is_counted_once(tmp_path, caplog):
    make_family(tmp_path / "family", models=3, epochs=2)
    replay([tmp_path / "family"], tmp_path / "out")
    table = tmp_path / "out" / "checkpoints.csv"
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join([*lines, lines[1]]))  # e.g. two tables concatenated
    report = write_report(tmp_path / "out", plots=False)
    assert set(report.correlations["models"]) == {3}
    assert "1 duplicate checkpoint row(s) counted once" in caplog.text


# 16. non-UTF-8 file names


def test_a_file_name_with_non_utf8_bytes_is_measured_with_the_others(tmp_path, capsys):
    family = tmp_path / "family"
    family.mkdir()
    odd = os.fsdecode(os.fsencode(family) + b"/caf\xe9-epoch=1.pt")
    try:
        torch.save(_state(0), odd)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 file names")
    torch.save(_state(1), family / "plain-epoch=1.pt")
    assert main(["replay", str(family), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "2 measured" in capsys.readouterr().out
    rows = {r["path"]: r for r in _rows(tmp_path / "out" / "checkpoints.csv")}
    assert set(rows) == {odd, str(family / "plain-epoch=1.pt")}  # the bytes as the OS gave them
    expected = probe.measure(load_checkpoint(odd).state_dict).network["E_L2_BE"]
    assert float(rows[odd]["E_L2_BE"]) == pytest.approx(expected, rel=1e-12)
    assert len(load_checkpoints(tmp_path / "out")) == 2  # the report's reader reads it too


# 17. damaged records


@pytest.mark.parametrize("key", ["layers", "file", "network"])
def test_a_record_missing_a_key_is_named_and_measured_again(tmp_path, capsys, caplog, key):
    make_family(tmp_path / "family", models=1, epochs=2)
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress"]) == 0
    record = sorted((out / "records").glob("*.json"))[0]
    damaged = json.loads(record.read_text())
    del damaged[key]
    record.write_text(json.dumps(damaged))
    error = out / "errors" / "stale.json"
    error.write_text(json.dumps({"path": "/gone.pt"}))  # an error record without its message
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress"]) == 0
    assert f"{record}: no key {key!r}" in caplog.text and "measuring" in caplog.text
    assert "1 measured, 1 already done, 0 failed" in capsys.readouterr().out
    assert len(_rows(out / "checkpoints.csv")) == 2 and not error.exists()

    # merge cannot measure: it names and removes the record, and the next merge succeeds
    record = sorted((out / "records").glob("*.json"))[1]
    damaged = json.loads(record.read_text())
    del damaged[key]
    record.write_text(json.dumps(damaged))
    assert main(["merge", str(out)]) == 2
    assert f"{record}: no key {key!r}" in capsys.readouterr().err and not record.exists()
    assert main(["merge", str(out)]) == 0


# 18. probe report on bad tables


def _damage_header(lines: list[str]) -> list[str]:
    return lines[1:]


def _damage_accuracy(lines: list[str]) -> list[str]:
    header = lines[0].rstrip().split(",")
    cells = lines[2].rstrip().split(",")
    cells[header.index("test_acc")] = "abc"
    return [*lines[:2], ",".join(cells) + "\n", *lines[3:]]


def _damage_epoch(lines: list[str]) -> list[str]:
    header = lines[0].rstrip().split(",")
    cells = lines[1].rstrip().split(",")
    cells[header.index("epoch")] = "1.5"
    return [lines[0], ",".join(cells) + "\n", *lines[2:]]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("replayed")
    make_family(out / "family", models=3, epochs=2)
    replay([out / "family"], out / "run")
    return out / "run"


@pytest.mark.parametrize(("damage", "message"), [
    (_damage_header, "checkpoints.csv: no column 'path': its first line must be the header"),
    (_damage_accuracy, "checkpoints.csv: line 3, column 'test_acc': 'abc' is not a number"),
    (_damage_epoch, "checkpoints.csv: line 2, column 'epoch': '1.5' is not a whole number"),
])
def test_report_names_the_file_line_and_column_of_a_bad_table(replayed, tmp_path, capsys, damage, message):
    run = Path(shutil.copytree(replayed, tmp_path / "run"))
    table = run / "checkpoints.csv"
    table.write_text("".join(damage(table.read_text().splitlines(keepends=True))))
    assert main(["report", str(run)]) == 2
    assert message in capsys.readouterr().err
    assert not (run / "report").exists()


def test_report_checks_layer_table_cells_and_arguments_before_writing(replayed, tmp_path, capsys):
    run = Path(shutil.copytree(replayed, tmp_path / "run"))
    assert main(["report", str(run), "--scatter-epochs", "0,9"]) == 2
    err = capsys.readouterr().err
    assert "scatter epoch 9 is not in the table; epochs present: [0, 1]" in err and "np." not in err
    assert not (run / "report").exists()  # was: plots written, then the error

    layers = run / "layers.csv"
    rows = layers.read_text().splitlines(keepends=True)
    header = rows[0].rstrip().split(",")
    cells = rows[5].rstrip().split(",")
    cells[header.index("ER")] = "x"
    layers.write_text("".join([*rows[:5], ",".join(cells) + "\n", *rows[6:]]))
    assert main(["report", str(run), "--measures", "ER_mean_t0_BE", "--no-plots"]) == 2
    assert "layers.csv: line 6, column 'ER': 'x' is not a number" in capsys.readouterr().err
    assert not (run / "report").exists()


# 19. float8 weights


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_float8_weights_are_upcast_and_measured(tmp_path, capsys, dtype, suffix):
    from safetensors.torch import save_file

    state = {name: t.to(dtype) for name, t in _state(0).items()}
    path = tmp_path / f"weights{suffix}"
    torch.save(state, path) if suffix == ".pt" else save_file(state, path)
    assert main(["measure", str(path)]) == 0
    assert "E_L2_BE" in capsys.readouterr().out
    got = probe.measure(load_checkpoint(path).state_dict).network
    expected = probe.measure({name: t.float() for name, t in state.items()}).network  # float32 holds every float8 exactly
    assert got == pytest.approx(expected, rel=1e-12, nan_ok=True)


# 20. small CLI gaps


def test_an_infinite_evbmf_tolerance_is_refused(tmp_path, capsys):
    for argv in (["measure", str(REFERENCE_FILE)], ["replay", str(REFERENCE_FILE), "--out", str(tmp_path / "out")]):
        assert main([*argv, "--evbmf-xatol", "inf"]) == 2
        assert "evbmf_xatol must be a positive finite number or None, got inf" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_during_replay_prints_one_line_and_the_run_resumes(tmp_path, workers):
    if workers > usable_cpus():
        pytest.skip("needs two usable cores for two workers")
    make_family(tmp_path / "family", models=3, epochs=3, base=32)
    out = tmp_path / "out"
    argv = ("replay", str(tmp_path / "family"), "--out", str(out), "--workers", str(workers), "--no-progress")
    process = _cli(*argv)
    try:
        deadline = time.monotonic() + 120
        while not any((out / "records").glob("*.json")) if (out / "records").is_dir() else True:
            assert process.poll() is None and time.monotonic() < deadline, "the replay ended before Ctrl-C"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130
    assert err.strip().splitlines() == ["probe replay: interrupted; the checkpoints measured so far are kept: "
                                        "run the same command again to resume"]
    if workers == 1:  # resuming is the same with workers (test_replay_state)
        process = _cli(*argv)
        out_text, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        done = int(out_text.split(" measured, ")[1].split(" already done")[0])
        assert done >= 1 and "9 checkpoints" in out_text


def test_a_full_disk_names_the_file(tmp_path, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full, a device on which every write fails with ENOSPC")
    make_family(tmp_path / "family", models=1, epochs=1)
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "family"), "--out", str(out), "--no-progress"]) == 0
    (out / f".checkpoints.csv.{os.getpid()}.tmp").symlink_to("/dev/full")  # the table's temporary file: a full disk
    capsys.readouterr()
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and repr(str(out / "checkpoints.csv")) in err


def test_float64_spectrum_over_1e300_gives_finite_measures_without_warnings():
    """A float64 layer whose singular values span 1e300 (squares far below float64's range):
    every quantity finite, BE and AE, and no numpy warning on the way."""
    w = torch.zeros(40, 120, dtype=torch.float64)
    w[range(40), range(40)] = torch.logspace(0, -300, 40, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = probe.measure({"w.weight": w})
    unfolding = report.layers[0].unfoldings["out"]
    assert unfolding.BE["C"] == pytest.approx(1e300, rel=1e-9)
    assert all(math.isfinite(v) for v in (*unfolding.BE.values(), *unfolding.AE.values(), unfolding.sigma2))
    assert all(math.isfinite(v) for v in report.network.values())
