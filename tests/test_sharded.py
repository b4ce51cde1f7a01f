"""A multi-GiB sharded safetensors checkpoint is measured one tensor at a time (issue 24)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import probe
from probe.cli import main
from probe.layers import every_tensor
from probe.replay.readers import load_checkpoint
from probe.replay.runner import find_checkpoints
from probe.replay.sharded import LazyStateDict

ROOT = Path(__file__).resolve().parent.parent
_CONSTANT = 96 << 20  # Python objects, BLAS buffers, LAPACK workspaces, the reader's chunk


def _tensors(index: int) -> dict[str, torch.Tensor]:
    """Shard ``index``'s tensors: large embedding-like matrices (little compute per byte)
    and small linear layers in bf16/fp16, plus a non-float buffer."""
    g = torch.Generator().manual_seed(index)
    big = torch.empty(1 << 20, 128).uniform_(-1, 1, generator=g)  # 512 MiB float32
    if index == 3:
        return {"model.embed_tokens.weight": big.half(), "model.norm.weight": torch.ones(128),
                "model.layers.0.self_attn.q_proj.weight": torch.randn(256, 1024, generator=g).to(torch.bfloat16),
                "model.layers.0.mlp.up_proj.weight": torch.randn(384, 128, generator=g).half(),
                "model.position_ids": torch.arange(64)}
    return {f"model.layers.{index}.block.weight": big}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five shards, 2.3 GiB on disk, with their ``model.safetensors.index.json`` (deleted after)."""
    folder = tmp_path_factory.mktemp("sharded")
    weight_map = {}
    for index in range(5):
        shard = f"model-{index + 1:05d}-of-00005.safetensors"
        tensors = _tensors(index)
        save_file(tensors, str(folder / shard))
        weight_map.update(dict.fromkeys(tensors, shard))
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert sum(p.stat().st_size for p in folder.iterdir()) > 2 << 30
    yield folder / "model.safetensors.index.json"
    for path in folder.iterdir():
        path.unlink()


@pytest.fixture(scope="module")
def replayed(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """``probe replay`` of the checkpoint in a fresh process: its extra peak memory, and the output folder."""
    out = tmp_path_factory.mktemp("replayed")
    code = (
        "import torch, probe\n"
        "from benchmarks.memory import peak, reset_peak\n"
        "from probe.cli import main\n"
        "torch.set_num_threads(1)\n"
        "probe.measure({'warm.weight': torch.randn(128, 4096)})\n"
        "before = reset_peak()\n"
        f"status = main(['replay', {str(checkpoint)!r}, '--out', {str(out)!r}, '--no-progress'])\n"
        "print('EXTRA', status, peak() - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    _, status, extra = result.stdout.strip().splitlines()[-1].split()
    assert status == "0", result.stdout
    return int(extra), out


def test_replay_of_a_sharded_checkpoint_stays_within_twice_its_largest_tensor(replayed):
    extra, _ = replayed
    largest = (1 << 20) * 128 * 4  # float32 bytes of the largest tensor
    assert 0 < extra <= 2 * largest + _CONSTANT, extra / largest


def test_replayed_values_match_measure_of_the_same_tensors_in_float32(checkpoint, replayed):
    rows = pd.read_csv(replayed[1] / "layers.csv")
    assert set(rows["layer"]) == {*(f"model.layers.{i}.block.weight" for i in (0, 1, 2, 4)), "model.embed_tokens.weight",
                                  "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"}
    shard = load_file(str(checkpoint.parent / "model-00004-of-00005.safetensors"))
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight"):
        assert shard[name].dtype in (torch.float16, torch.bfloat16)
        want = probe.measure({name: shard[name].float()}, layers=every_tensor).layers[0]
        for u, unfolding in want.unfoldings.items():
            for variant in ("BE", "AE"):
                got = rows[(rows["layer"] == name) & (rows["unfolding"] == u) & (rows["variant"] == variant)].iloc[0]
                for quantity, value in getattr(unfolding, variant).items():
                    assert got[quantity] == pytest.approx(value, rel=1e-5), (name, u, variant, quantity)


def test_replay_finds_the_index_not_its_shards(checkpoint):
    assert find_checkpoints([checkpoint.parent]) == [checkpoint.resolve()]


def test_measure_prints_a_progress_line_per_large_layer(tmp_path, capsys):
    weight_map = {}
    for index in range(3):
        shard = f"model-{index + 1:05d}-of-00003.safetensors"
        tensors = {f"layers.{index}.weight": torch.randn(4096, 1024).to(torch.bfloat16), f"layers.{index}.norm": torch.ones(4)}
        save_file(tensors, str(tmp_path / shard))
        weight_map.update(dict.fromkeys(tensors, shard))
    index_file = tmp_path / "model.safetensors.index.json"
    index_file.write_text(json.dumps({"weight_map": weight_map}))
    assert main(["measure", str(index_file)]) == 0
    out, err = capsys.readouterr()
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert [line.split()[:2] for line in progress] == [[f"[{i}/3]", f"layers.{i - 1}.weight"] for i in (1, 2, 3)]
    assert all(line.endswith("left") and "4096x1024" in line for line in progress), err
    assert "layers.2.weight" in out and "layers.0.norm" not in out
    lazy = load_checkpoint(index_file).state_dict
    assert isinstance(lazy, LazyStateDict) and lazy["layers.1.weight"].dtype == torch.float32


def test_low_precision_tensors_are_read_as_float32_and_others_as_stored(tmp_path):
    w = torch.randn(64, 32)
    stored = {"a.weight": w.to(torch.float8_e4m3fn), "b.weight": w.bfloat16(), "c.weight": w.half(),
              "d.weight": w.double(), "steps": torch.arange(3, dtype=torch.int16)}
    save_file(stored, str(tmp_path / "m.safetensors"))
    lazy = LazyStateDict.open(tmp_path / "m.safetensors")
    assert {name: lazy.meta()[name].dtype for name in stored} == {name: t.dtype for name, t in stored.items()}
    for name in ("a.weight", "b.weight", "c.weight"):
        assert lazy[name].dtype == torch.float32 and torch.equal(lazy[name], stored[name].float())
    assert lazy["d.weight"].dtype == torch.float64 and torch.equal(lazy["steps"], stored["steps"])


def _write_sharded(folder: Path, scale: float, seed: int = 0) -> Path:
    """Two shards and their index, the same index bytes whatever ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for index, shape in enumerate(((32, 64), (10, 32))):
        shard = f"model-{index + 1:05d}-of-00002.safetensors"
        save_file({f"l{index}.weight": scale * torch.randn(*shape, generator=generator)}, str(folder / shard))
        weight_map[f"l{index}.weight"] = shard
    index_file = folder / "model.safetensors.index.json"
    index_file.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index_file


def test_sharded_checkpoints_sharing_an_index_are_two_and_a_rewritten_shard_is_measured_again(tmp_path, capsys):
    """The content digest and the file identity cover the shards, not the index alone."""
    first, second = _write_sharded(tmp_path / "run1", 1.0), _write_sharded(tmp_path / "run2", 3.0)
    assert first.read_bytes() == second.read_bytes()
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "checkpoints.csv").set_index("path")
    assert sorted(table.index) == sorted(str(p.resolve()) for p in (first, second))
    assert pd.read_csv(out / "duplicates.csv").empty
    for index_file in (first, second):
        want = probe.measure(load_checkpoint(index_file).state_dict).value("S_p_BE")
        assert table.loc[str(index_file.resolve()), "S_p_BE"] == pytest.approx(want, rel=1e-12)

    shard = first.parent / "model-00002-of-00002.safetensors"
    stat = shard.stat()
    save_file({"l1.weight": torch.randn(10, 32, generator=torch.Generator().manual_seed(7))}, str(shard))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewrite, whatever the clock's resolution
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(out), "--no-progress"]) == 0
    assert "1 measured, 1 already done" in capsys.readouterr().out
    rewritten = pd.read_csv(out / "checkpoints.csv").set_index("path").loc[str(first.resolve()), "S_p_BE"]
    assert rewritten == pytest.approx(probe.measure(load_checkpoint(first).state_dict).value("S_p_BE"), rel=1e-12)
    assert rewritten != pytest.approx(table.loc[str(first.resolve()), "S_p_BE"], rel=1e-6)


@pytest.mark.parametrize("dtype", ["float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"])
def test_every_float8_variant_in_safetensors_is_measured_like_the_same_tensor_in_a_pt(tmp_path, dtype):
    w = torch.randn(32, 16, generator=torch.Generator().manual_seed(0)).abs().to(getattr(torch, dtype))
    save_file({"a.weight": w}, str(tmp_path / "m.safetensors"))
    torch.save({"a.weight": w}, tmp_path / "m.pt")
    lazy = load_checkpoint(tmp_path / "m.safetensors").state_dict
    want = probe.measure(load_checkpoint(tmp_path / "m.pt").state_dict)
    assert lazy.meta()["a.weight"].dtype == w.dtype and lazy["a.weight"].dtype == torch.float32
    assert probe.measure(lazy).value("F_p_BE") == want.value("F_p_BE")


def test_an_empty_half_precision_tensor_in_safetensors_is_refused_by_name(tmp_path, capsys):
    save_file({"e.weight": torch.zeros(0, 30, dtype=torch.bfloat16)}, str(tmp_path / "m.safetensors"))
    assert load_checkpoint(tmp_path / "m.safetensors").state_dict["e.weight"].shape == (0, 30)
    assert main(["measure", str(tmp_path / "m.safetensors")]) == 2
    assert capsys.readouterr().err.strip() == "probe: error: layer 'e.weight' is empty (shape (0, 30))"


def test_an_index_naming_shards_outside_its_folder_is_refused(tmp_path, capsys):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "../../etc/passwd"}}))
    assert main(["measure", str(tmp_path / "model.safetensors.index.json")]) == 2
    assert "shard file names must lie in the index's folder, got ['../../etc/passwd']" in capsys.readouterr().err
