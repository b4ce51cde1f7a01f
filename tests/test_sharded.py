"""A multi-GiB sharded safetensors checkpoint is measured one tensor at a time (issue 24)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import probe
from probe.layers import every_tensor
from probe.replay.readers import load_checkpoint
from probe.replay.runner import find_checkpoints
from probe.replay.sharded import LazyStateDict, measure_lazily

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


def test_cli_measures_a_sharded_checkpoint_within_twice_its_largest_tensor(checkpoint):
    code = (
        "import torch, probe\n"
        "from benchmarks.memory import peak, reset_peak\n"
        "from probe.cli import main\n"
        "torch.set_num_threads(1)\n"
        "probe.measure({'warm.weight': torch.randn(128, 4096)})\n"
        "before = reset_peak()\n"
        f"status = main(['measure', {str(checkpoint)!r}])\n"
        "print('EXTRA', status, peak() - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    _, status, extra = result.stdout.strip().splitlines()[-1].split()
    largest = (1 << 20) * 128 * 4  # float32 bytes of the largest tensor
    assert status == "0" and int(extra) <= 2 * largest + _CONSTANT, int(extra) / largest
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 5 and all("left" in line for line in progress), result.stderr  # one per large layer
    assert "model.embed_tokens.weight" in result.stdout and "model.layers.0.self_attn.q_proj.weight" in result.stdout


def test_lazy_values_match_measure_of_the_same_tensors_in_float32(checkpoint):
    lazy = load_checkpoint(checkpoint).state_dict
    assert isinstance(lazy, LazyStateDict) and "model.position_ids" in lazy
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight"]
    report = measure_lazily(lazy, layers="auto")
    layers = {layer.name: layer for layer in report.layers}
    assert set(names) <= set(layers) and "model.norm.weight" not in layers
    shard = load_file(str(checkpoint.parent / "model-00004-of-00005.safetensors"))
    for name in names:
        stored = shard[name]
        assert stored.dtype in (torch.float16, torch.bfloat16)
        want = probe.measure({name: stored.float()}, layers=every_tensor).layers[0]
        for u, unfolding in want.unfoldings.items():
            for variant in ("BE", "AE"):
                for quantity, value in getattr(unfolding, variant).items():
                    assert getattr(layers[name].unfoldings[u], variant)[quantity] == pytest.approx(value, rel=1e-5)


def test_replay_finds_the_index_not_its_shards(checkpoint):
    assert find_checkpoints([checkpoint.parent]) == [checkpoint.resolve()]
