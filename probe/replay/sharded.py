"""safetensors checkpoints read one tensor at a time, including sharded ones
(``model-00001-of-00003.safetensors`` … with ``model.safetensors.index.json``).

:class:`LazyStateDict` maps names to tensors read on access from the memory-mapped file
(``safetensors.safe_open``); half-precision and float8 tensors are upcast to float32 in
row chunks, so a tensor costs its float32 bytes and never also its stored copy.
:func:`measure_lazily` measures such a state dict one layer at a time, so the resident
memory is about one layer plus its measurement (≤ 2× its float32 bytes), whatever the size
of the model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

import probe
from probe.layers import LayerSelector, every_tensor, normalise_name, select_layers
from probe.options import MeasureOptions
from probe.report import Report

INDEX_SUFFIX = ".safetensors.index.json"
"""The file naming a sharded checkpoint's tensors and their shards."""
_CHUNK_BYTES = 64 << 20  # half-precision tensors are upcast this many float32 bytes at a time
_LOW_PRECISION = {"F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                  "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu"}
_UPCAST = tuple(getattr(torch, name) for name in _LOW_PRECISION.values() if hasattr(torch, name))  # read as float32, in chunks
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
           **{key: getattr(torch, name) for key, name in _LOW_PRECISION.items() if hasattr(torch, name)}}

Progress = Callable[[int, int, str, tuple[int, ...], float, float], None]
"""``progress(done, total, name, shape, seconds, seconds_left)`` after each layer."""


class LazyStateDict(Mapping[str, torch.Tensor]):
    """Names to tensors of one or more safetensors files, each tensor read when asked for
    (float32 for bf16/fp16). ``meta()`` gives shape and dtype without reading any data."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        from safetensors import safe_open

        self._files = dict(files)
        self._meta: dict[str, torch.Tensor] = {}
        for shard in dict.fromkeys(self._files.values()):
            with safe_open(str(shard), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                    if self._files.get(name) == shard:
                        tensor_slice = handle.get_slice(name)
                        dtype = _DTYPES.get(tensor_slice.get_dtype(), torch.uint8)  # others: never a weight
                        self._meta[name] = torch.empty(tuple(tensor_slice.get_shape()), dtype=dtype, device="meta")
        missing = set(self._files) - set(self._meta)
        if missing:
            raise ValueError(f"tensors {sorted(missing)[:4]} are named by the index but missing from their shards")

    @classmethod
    def open(cls, path: Path) -> LazyStateDict:
        """A ``.safetensors`` file, or a sharded checkpoint's ``*.safetensors.index.json``."""
        if path.name.endswith(INDEX_SUFFIX):
            weight_map = json.loads(path.read_text()).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{path}: no 'weight_map' of tensor names to shard files")
            outside = sorted({str(shard) for shard in weight_map.values()
                              if Path(str(shard)).is_absolute() or ".." in Path(str(shard)).parts})
            if outside:  # shards sit beside their index (symlinks there, as in a Hugging Face cache, are fine)
                raise ValueError(f"{path}: shard file names must lie in the index's folder, got {outside[:3]}")
            return cls({str(name): path.parent / str(shard) for name, shard in weight_map.items()})
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return cls(dict.fromkeys(handle.keys(), path))

    def meta(self) -> dict[str, torch.Tensor]:
        """Every tensor as a meta tensor (shape and dtype, no data)."""
        return dict(self._meta)

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._files[name]), framework="pt") as handle:
            part = handle.get_slice(name)
            meta = self._meta[name]
            if meta.dtype not in _UPCAST or meta.ndim == 0:
                return handle.get_tensor(name)
            out = torch.empty(meta.shape, dtype=torch.float32)
            step = max(1, _CHUNK_BYTES // max(1, 4 * meta[0:1].numel()))  # rows per chunk (none: an empty tensor)
            for start in range(0, meta.shape[0], step):
                out[start:start + step] = part[start:start + step].to(torch.float32)
            return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)

    def __len__(self) -> int:
        return len(self._meta)


def measure_lazily(state: LazyStateDict, *, layers: LayerSelector = "auto", options: MeasureOptions | None = None,
                   progress: Progress | None = None) -> Report:
    """``probe.measure`` of ``state``, one layer read and measured at a time (the others are
    not resident), with ``probe.measure``'s ``layers`` and ``options``. The layers are chosen on
    shapes and dtypes alone. ``progress`` is called after each layer with an estimate of the
    time left (remaining ``L²·M`` at the rate so far)."""
    meta = state.meta()
    original = {normalise_name(name): name for name in meta}  # select_layers names without wrapper parts
    selected = [original[name] for name, _ in select_layers(meta, layers)]
    costs = [_cost(meta[name].shape) for name in selected]
    total_cost, done_cost, start = sum(costs), 0.0, time.perf_counter()
    results = []
    for index, name in enumerate(selected):
        began = time.perf_counter()
        tensor = state[name]
        results.extend(probe.measure({normalise_name(name): tensor}, layers=every_tensor, options=options).layers)
        del tensor
        done_cost += costs[index]
        if progress is not None:
            elapsed = time.perf_counter() - start
            left = elapsed / done_cost * (total_cost - done_cost) if done_cost else 0.0
            progress(index + 1, len(selected), name, tuple(meta[name].shape), time.perf_counter() - began, left)
    return Report(results)


def measure_state(state: Mapping[str, torch.Tensor], *, layers: LayerSelector = "auto", options: MeasureOptions | None = None,
                  progress: Progress | None = None) -> Report:
    """:func:`measure_lazily` for a :class:`LazyStateDict`, else ``probe.measure``."""
    if isinstance(state, LazyStateDict):
        return measure_lazily(state, layers=layers, options=options, progress=progress)
    return probe.measure(state, layers=layers, options=options)


def checkpoint_parts(path: Path) -> list[Path]:
    """The files a checkpoint's bytes live in: a ``*.safetensors.index.json`` and the shards it
    names (sorted), else the file alone."""
    if path.name.endswith(INDEX_SUFFIX):
        return [path, *sorted(shards_of(path), key=str)]
    return [path]


def shards_of(index: Path) -> set[Path]:
    """The shard files a ``*.safetensors.index.json`` names (empty if it cannot be read)."""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return {(index.parent / str(shard)).resolve() for shard in weight_map.values()}
    except (OSError, ValueError, AttributeError):
        return set()


def _cost(shape: torch.Size) -> float:
    """``L²·M + L·M`` of a weight's largest unfolding (``L ≤ M``): its Gram's cost, plus reading it."""
    rows, cols = shape[0], (shape.numel() // shape[0] if shape[0] else 0)
    short, long = min(rows, cols), max(rows, cols)
    return float(short * short * long + short * long)
