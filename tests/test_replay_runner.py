"""The replay runner: tables, reference parity, bad files, resume after kill -9, shards + merge."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import probe
from probe.cli import main
from probe.evbmf import REFERENCE_XATOL
from probe.replay import find_checkpoints, load_checkpoint, merge, replay
from probe.replay.analysis import load_tables, network_measure
from probe.replay.runner import parse_shard, select_shard, usable_cpus
from probe.replay.store import checkpoint_key
from tests.conftest import GENPROB_FILE
from tests.replay_helpers import garbage, make_crashing, make_family, make_malicious, truncate

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("checkpoints.csv", "layers.csv", "errors.csv")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bytes(directory: Path, names=TABLES) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in names}


def test_tables_hold_every_checkpoint_layer_unfolding_and_variant(tmp_path):
    paths = make_family(tmp_path / "family", models=2, epochs=2)
    outcomes, tables = replay([tmp_path / "family"], tmp_path / "out")
    assert sorted(o.status for o in outcomes) == ["measured"] * 4
    assert (tables.n_checkpoints, tables.n_errors) == (4, 0)
    checkpoints, layers = load_tables(tmp_path / "out")
    assert len(checkpoints) == 4 and len(layers) == 4 * 21 * 2 * 2
    assert layers.groupby(["path", "layer", "unfolding", "variant"]).size().max() == 1
    for path in paths:
        loaded = load_checkpoint(path)
        expected = probe.measure(loaded.state_dict, layers="genprob")
        row = checkpoints[checkpoints["path"] == str(path.resolve())].iloc[0]
        assert (row["optimizer"], row["model_id"], row["dataset"], row["epoch"], row["preset"]) == (
            loaded.optimizer, loaded.model_id, "DIGITS10", loaded.epoch, "genprob")
        assert row["hparams"] == " ".join(loaded.hparams) and row["n_layers"] == 21
        for name, value in {**expected.network, **loaded.performance}.items():
            assert row[name] == value or (math.isnan(value) and math.isnan(row[name]))
        mine = layers[layers["path"] == str(path.resolve())]
        assert list(mine["layer"].unique()) == [layer.name for layer in expected.layers]
        np.testing.assert_array_equal(mine["SQ"].to_numpy(), [r["SQ"] for r in expected.records()])


def test_replayed_values_match_the_genprob_reference(tmp_path, genprob_reference):
    _, tables = replay([GENPROB_FILE], tmp_path / "out", genprob_csv=True)
    assert [p.name for p in tables.genprob] == ["results-DIGITS10-4.csv"]
    with open(tables.genprob[0], newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[-1] == [] and len(rows) == 1 + 21 + 1
    header, body = rows[0], [dict(zip(rows[0], r)) for r in rows[1:-1]]
    metric_names = header[5:25]
    for row, ref in zip(body, genprob_reference["layers"]):
        performance = [float(row[c]) for c in header[:5]]
        np.testing.assert_allclose(performance, genprob_reference["performance"], rtol=1e-12)
        assert (row["model_id"], int(row["type"])) == ("10001", ref["type"])
        assert [int(row[c]) for c in header[28:]] == ref["weights"]
        for name, expected in zip(metric_names, ref["metrics"]):
            got = float(row[name])
            if name.endswith("fro_AE"):
                continue  # the reference's defect (SPEC §4): checked against sqrt(sum d^2) below
            variant, quantity = name.split("_")[-1], name.split("_")[1]
            tol = {("BE", "C"): 1e-3, ("AE", "C"): 2e-2}.get((variant, quantity), 1e-4 if variant == "BE" else 2e-3)
            assert got == pytest.approx(expected, rel=tol, abs=1e-12), (ref["key"], name)
    report = probe.measure(load_checkpoint(GENPROB_FILE).state_dict, layers="genprob", evbmf_xatol=REFERENCE_XATOL)
    for row, layer in zip(body, report.layers):
        for u in ("in", "out"):
            assert float(row[f"{u}_fro_AE"]) == pytest.approx(float(np.sqrt(np.sum(layer.unfoldings[u].d ** 2))), rel=1e-12)

    checkpoints, layers = load_tables(tmp_path / "out")
    aggregates = genprob_reference["aggregates"]
    for name in probe.HEADLINE_NAMES:
        if name != "F_p_AE":
            assert checkpoints.loc[0, name] == pytest.approx(aggregates[name], rel=2e-3 if name.endswith("AE") else 1e-4)
    for measure, stem in (("ER", "ER"), ("SQ", "QS"), ("spec", "spec"), ("fro", "fro")):
        for variant in ("BE", "AE"):
            if (measure, variant) == ("fro", "AE"):
                continue
            grid = aggregates[f"grid_{stem}_{variant}"]
            for i, how in enumerate(("mean", "L2", "p", "wmean", "wp")):
                for t in range(8):
                    got = network_measure(layers, f"{measure}_{how}_t{t}_{variant}").iloc[0]
                    expected = grid[i][t]
                    rel = 2e-3 if variant == "AE" else 1e-4
                    assert got == pytest.approx(expected, rel=rel, abs=rel * 1e-2, nan_ok=True), (measure, how, t, variant)


def test_bad_files_are_skipped_and_reported_not_fatal(tmp_path, caplog):
    family = make_family(tmp_path / "ckpts", models=1, epochs=2)
    bad = [
        truncate(family[0], tmp_path / "ckpts" / "cut_epoch_1.pth.tar"),
        garbage(tmp_path / "ckpts" / "noise.pt"),
        make_malicious(tmp_path / "ckpts" / "evil.pt", tmp_path / "PWNED"),
    ]
    outcomes, tables = replay([tmp_path / "ckpts"], tmp_path / "out")
    status = {Path(o.path).name: o.status for o in outcomes}
    assert status == {**{p.name: "measured" for p in family}, **{p.name: "failed" for p in bad}}
    assert not (tmp_path / "PWNED").exists()
    with open(tables.errors, newline="") as handle:
        errors = {Path(r["path"]).name: r["error"] for r in csv.DictReader(handle)}
    assert set(errors) == {p.name for p in bad}
    assert "--unsafe-load" in errors["evil.pt"] and "UnsafeCheckpointError" in errors["evil.pt"]
    assert "corrupt" in errors["cut_epoch_1.pth.tar"]
    assert tables.n_checkpoints == 2
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert sorted(skipped) == sorted(f"skipping {(tmp_path / 'ckpts' / name).resolve()}: {error}" for name, error in errors.items())
    # A re-run retries the failures (still failing) and skips the rest.
    again, _ = replay([tmp_path / "ckpts"], tmp_path / "out")
    assert sorted(o.status for o in again) == ["done", "done", "failed", "failed", "failed"]


@pytest.mark.skipif(usable_cpus() < 2, reason="needs two usable cores for two workers")
def test_a_worker_that_dies_fails_its_checkpoint_not_the_run(tmp_path, caplog):
    make_family(tmp_path / "family", models=2, epochs=3)
    crashing = make_crashing(tmp_path / "family" / "crash.ckpt")
    with pytest.warns(UserWarning, match="UNSAFE LOAD") as warned:
        outcomes, tables = replay([tmp_path / "family"], tmp_path / "out", workers=2, unsafe=True)
    assert len(warned) == 1  # once for the run, not once per worker process
    status = {Path(o.path).name: o.status for o in outcomes}
    assert len(outcomes) == len(status) == 7  # one outcome per file, none lost or repeated
    assert status.pop("crash.ckpt") == "failed" and set(status.values()) == {"measured"}
    assert (tables.n_checkpoints, tables.n_errors) == (6, 1)
    error = json.loads((tmp_path / "out" / "errors" / f"{checkpoint_key(str(crashing.resolve()))}.json").read_text())
    assert "the process measuring it died" in error["error"]
    assert "a replay worker died" in caplog.text
    again, _ = replay([tmp_path / "family"], tmp_path / "out", workers=2)  # resumes: only the crash is retried (and fails safely now)
    assert sorted(o.status for o in again) == ["done"] * 6 + ["failed"]


def test_a_diverged_checkpoint_is_measured_as_nan_not_failed_and_named_in_a_warning(tmp_path, caplog):
    import torch

    path = make_family(tmp_path / "ckpts", models=1, epochs=1)[0]
    raw = torch.load(path, weights_only=True)
    raw["state_dict_network"]["cell2.RELUConvBN3.1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(raw, path)
    outcomes, _ = replay([path], tmp_path / "out")
    assert [o.status for o in outcomes] == ["measured"]
    assert outcomes[0].warning == "weights not finite (NaN/Inf) in 'cell2.RELUConvBN3.1.weight': recorded with NaN measures"
    assert [r.getMessage() for r in caplog.records] == [f"{path.resolve()}: {outcomes[0].warning}"]
    checkpoints, layers = load_tables(tmp_path / "out")
    assert checkpoints[list(probe.HEADLINE_NAMES)].isna().all(axis=None)
    nan_layers = set(layers[layers["ER"].isna()]["layer"])
    assert nan_layers == {"cell2.RELUConvBN3.1.weight"}
    assert checkpoints.loc[0, "test_acc"] == pytest.approx(0.5)


def test_resume_after_kill_9_gives_exactly_the_rows_of_an_uninterrupted_run(tmp_path, capsys):
    make_family(tmp_path / "family", models=4, epochs=4, base=32)  # ~0.1 s each: time to kill mid-run
    total = 16
    replay([tmp_path / "family"], tmp_path / "complete")

    command = [sys.executable, "-m", "probe.cli", "replay", str(tmp_path / "family"), "--out", str(tmp_path / "resumed"),
               "--workers", "2", "--no-progress"]
    killed = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = tmp_path / "resumed" / "records"
    deadline = time.monotonic() + 240
    while not (records.is_dir() and any(records.glob("*.json"))):
        assert killed.poll() is None, f"replay ended before it could be killed: {killed.stderr.read().decode()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(killed.pid, signal.SIGKILL)  # the CLI and its worker processes, mid-run
    killed.wait(timeout=60)
    finished = len(list(records.glob("*.json")))
    assert 0 < finished < total
    assert not (tmp_path / "resumed" / "checkpoints.csv").exists()

    assert main(command[3:-3] + ["--no-progress"]) == 0  # resume (here in-process, one worker)
    assert f"{total - finished} measured, {finished} already done, 0 failed" in capsys.readouterr().out
    assert _bytes(tmp_path / "resumed") == _bytes(tmp_path / "complete")
    assert len(list(records.glob("*.json"))) == total


def test_shards_and_merge_equal_a_single_run(tmp_path):
    make_family(tmp_path / "family", models=3, epochs=2)
    paths = find_checkpoints([tmp_path / "family"])
    shards = [select_shard(paths, k, 3) for k in range(3)]
    assert sorted(p for shard in shards for p in shard) == paths and all(len(s) == 2 for s in shards)

    replay([tmp_path / "family"], tmp_path / "single", genprob_csv=True)
    for k in range(3):
        replay([tmp_path / "family"], tmp_path / f"shard{k}", shard=(k, 3))
        replay([tmp_path / "family"], tmp_path / "shared", shard=(k, 3))  # array tasks sharing one directory
    tables = merge([tmp_path / f"shard{k}" for k in range(3)], tmp_path / "merged", genprob_csv=True)
    assert tables.n_checkpoints == 6
    merge([tmp_path / "shared"], tmp_path / "shared", genprob_csv=True)

    names = (*TABLES, *(f"genprob_csv/{p.name}" for p in tables.genprob))
    assert len(tables.genprob) == 2
    assert _bytes(tmp_path / "merged", names) == _bytes(tmp_path / "single", names)
    assert _bytes(tmp_path / "shared", names) == _bytes(tmp_path / "single", names)


def test_options_must_match_to_resume_or_merge(tmp_path):
    make_family(tmp_path / "family", models=1, epochs=1)
    replay([tmp_path / "family"], tmp_path / "a")
    with pytest.raises(ValueError, match="was made with options"):
        replay([tmp_path / "family"], tmp_path / "a", layers="auto")
    replay([tmp_path / "family"], tmp_path / "b", layers="auto")
    assert json.loads((tmp_path / "b" / "replay.json").read_text())["layers"] == "auto"
    with pytest.raises(ValueError, match="cannot merge"):
        merge([tmp_path / "a", tmp_path / "b"], tmp_path / "c")


def test_finding_and_sharding_inputs(tmp_path):
    family = make_family(tmp_path / "d" / "deep", models=1, epochs=3)
    (tmp_path / "d" / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "d" / ".x.pth.tar.123.tmp").write_bytes(b"partial")
    resolved = sorted(p.resolve() for p in family)
    assert find_checkpoints([tmp_path / "d"]) == resolved
    assert find_checkpoints([str(tmp_path / "d" / "**" / "*_epoch_[01].pth.tar"), family[0]]) == resolved[:2]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        find_checkpoints([tmp_path / "nothing-here.pt"])
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "a/b", "3"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)
    assert checkpoint_key(family[0]) == checkpoint_key(os.path.relpath(family[0]))
