"""Checkpoint readers: GenProb files, Lightning ``.ckpt``, plain state dicts, safetensors.

Loading is safe by default: ``torch.load(weights_only=True)`` (plus NumPy scalars, which
carry no code). A file that needs arbitrary unpickling raises ``UnsafeCheckpointError``
naming the opt-in (``unsafe=True``, CLI ``--unsafe-load``); a corrupt or truncated file
raises ``CheckpointError``. Both name the file.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probe.replay.genprob import (
    PERFORMANCE_COLUMNS,
    PERFORMANCE_KEYS,
    parse_genprob_name,
    performance_from_statistics,
)

log = logging.getLogger(__name__)

SUFFIXES = (".pth.tar", ".ckpt", ".pt", ".pth", ".safetensors", ".safetensors.index.json")
"""File endings replay picks up when given a directory (a sharded checkpoint's shards are
left to its ``.safetensors.index.json``)."""
DENSE_LIMIT_BYTES = 1 << 30
"""Largest dense size of a tensor the file does not store densely (sparse, or an expanded
stride-0 view): such a tensor is densified up to this size and refused above it."""
NESTED_KEYS = ("state_dict", "model_state_dict", "model")
"""Keys under which a dict checkpoint may hold the state dict (the first that holds one is read)."""

_EPOCH_IN_NAME = re.compile(r"epoch[=_-]?(\d+)", re.IGNORECASE)
_MULTIARRAY = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")  # NumPy 2 / 1
_NUMPY_SCALARS = [_MULTIARRAY.scalar, np.dtype, *(type(np.dtype(t)) for t in ("f2", "f4", "f8", "i4", "i8", "?"))]
_UNSAFE_HINT = "if you trust its source, pass --unsafe-load (CLI) or unsafe=True (load_checkpoint / replay)"
UNSAFE_WARNING = (
    "UNSAFE LOAD: checkpoints are read with arbitrary unpickling (--unsafe-load / unsafe=True), which runs any code "
    "a file holds; use it only for files from a source you trust"
)


class CheckpointError(ValueError):
    """A checkpoint could not be read: corrupt, truncated, or holding no tensors."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs arbitrary unpickling (which can run code) and was refused."""


@dataclass(frozen=True)
class Checkpoint:
    """One loaded checkpoint and what is known about it.

    ``state_dict`` maps names to CPU tensors (for safetensors files, a
    :class:`probe.replay.sharded.LazyStateDict` reading each tensor when asked for); ``layers`` is the layer preset it calls for
    (``genprob`` for GenProb files, ``auto`` otherwise); ``performance`` has
    ``test_acc, test_loss, train_acc, train_loss, gap`` (NaN where unknown). ``run``
    identifies the training run across epochs (GenProb: the file name without the epoch;
    otherwise the directory, plus any file-name prefix before ``epoch``); ``model_id`` is
    GenProb's channel code, else the run's last component. ``hparams`` are GenProb's
    hyperparameter tokens or a Lightning module's scalar ``hyper_parameters`` as ``k=v``
    (those without spaces).
    """

    path: Path
    format: str
    state_dict: Mapping[str, torch.Tensor]
    layers: str
    performance: dict[str, float]
    epoch: int | None
    run: str
    model_id: str
    optimizer: str | None = None
    dataset: str | None = None
    hparams: tuple[str, ...] = field(default=())

    def metadata(self) -> dict[str, object]:
        """A flat row: ``path, format, run, model_id, optimizer, dataset, hparams`` (space-separated), ``epoch``."""
        return {
            "path": str(self.path), "format": self.format, "run": self.run, "model_id": self.model_id,
            "optimizer": self.optimizer, "dataset": self.dataset, "hparams": " ".join(self.hparams), "epoch": self.epoch,
        }


def is_checkpoint_file(path: str | os.PathLike[str]) -> bool:
    """True if the file name ends in one of ``SUFFIXES``."""
    return str(path).lower().endswith(SUFFIXES)


def load_checkpoint(path: str | os.PathLike[str], *, unsafe: bool = False) -> Checkpoint:
    """Read a checkpoint of any supported format onto the CPU.

    Parameters
    ----------
    path:
        A GenProb ``.pth.tar``, a Lightning ``.ckpt``, a ``.pt``/``.pth`` state dict (or a
        dict holding one under ``state_dict``, ``model_state_dict`` or ``model``), or a
        ``.safetensors`` file or a sharded one's ``.safetensors.index.json`` (read lazily,
        one tensor at a time, bf16/fp16 as float32). Sparse tensors and expanded (stride-0) views
        are densified up to ``DENSE_LIMIT_BYTES`` and refused, by name, above it; a sparse tensor's
        invariants (index bounds and order) are checked first.
    unsafe:
        Allow arbitrary unpickling (``torch.load(weights_only=False)``). Only for files you
        trust: unpickling can run code, and a ``UserWarning`` says so. Default ``False``.

    Returns
    -------
    Checkpoint
        The state dict and metadata (epoch, run, performance, GenProb name fields).

    Raises
    ------
    UnsafeCheckpointError
        The file needs arbitrary unpickling and ``unsafe`` is False.
    CheckpointError
        The file is corrupt, truncated, holds no tensors, holds a tensor too large to
        densify or an invalid sparse tensor, or holds malformed performance statistics.
    FileNotFoundError
        No such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    if path.name.lower().endswith((".safetensors", ".safetensors.index.json")):
        return _from_safetensors(path)
    obj = _torch_load(path, unsafe=unsafe)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict (state dict or checkpoint), got {type(obj).__name__}")
    if isinstance(obj.get("state_dict_network"), Mapping):
        return _from_genprob(path, obj)
    if isinstance(obj.get("state_dict"), Mapping) and ("pytorch-lightning_version" in obj or path.suffix == ".ckpt"):
        return _from_lightning(path, obj)
    nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), (Mapping, nn.Module))), obj)
    if isinstance(nested, nn.Module):
        nested = nested.state_dict()
    return _plain(path, "state_dict", _tensors(path, nested), obj)


def _check_torch_file(path: Path) -> None:
    """Refuse a file that is neither a zip archive (``torch.save``) nor a pickle (legacy ``torch.save``)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint (an interrupted save?)")
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise CheckpointError(
            f"{path}: not a checkpoint: a torch.save file is a zip archive or a pickle, and this file is neither "
            f"(it starts with {head!r}); give a GenProb .pth.tar, a Lightning .ckpt, a .pt/.pth state dict or a .safetensors file"
        )


def _torch_load(path: Path, *, unsafe: bool) -> object:
    _check_torch_file(path)
    try:
        if unsafe:
            warnings.warn(UNSAFE_WARNING, UserWarning, stacklevel=3)
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_NUMPY_SCALARS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _detail(error)
        if unsafe:
            raise CheckpointError(f"{path}: corrupt or not a torch checkpoint ({detail})") from error
        if "GLOBAL" in detail or "global" in detail:
            raise UnsafeCheckpointError(
                f"{path}: refused: loading it needs arbitrary unpickling, which can run code ({detail}); {_UNSAFE_HINT}"
            ) from error
        raise CheckpointError(
            f"{path}: not a weights-only checkpoint ({detail}): the file is corrupt, or a pickle that only loads "
            f"with arbitrary unpickling; {_UNSAFE_HINT}"
        ) from error
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as error:  # torch raises RuntimeError, EOFError, zipfile/OSError... for damaged files
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(error).__name__}: {_detail(error)})") from error


def _detail(error: BaseException) -> str:
    """The first line of the error's own message, or of the one it was raised from (torch's
    weights-only ``UnpicklingError`` hides the concise reason there), cut at a word within 300
    characters."""
    cause = error.__cause__ or (error.__context__ if isinstance(error, pickle.UnpicklingError) else None)
    text = str(cause) if cause is not None and str(cause) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0] if len(lines[0]) <= 300 else lines[0][:300].rsplit(" ", 1)[0] + " …"


def _tensors(path: Path, mapping: Mapping[Any, object]) -> dict[str, torch.Tensor]:
    tensors = {str(k): _dense(path, str(k), v) for k, v in mapping.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (keys: {list(mapping)[:8]})")
    return tensors


def _dense(path: Path, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as an ordinary strided tensor; its dense size is checked before any is allocated."""
    sparse = tensor.layout != torch.strided
    if not sparse and tensor.untyped_storage().nbytes() >= tensor.numel() * tensor.element_size():
        return tensor
    size = math.prod(tensor.shape) * tensor.element_size()
    if size > DENSE_LIMIT_BYTES:
        kind = f"sparse ({tensor.layout})" if sparse else "an expanded view (stride 0)"
        raise CheckpointError(f"{path}: tensor {name!r} is {kind} of shape {tuple(tensor.shape)}: densifying it would "
                              f"take {size / 2**30:.3g} GiB, more than DENSE_LIMIT_BYTES ({DENSE_LIMIT_BYTES / 2**30:.3g} GiB)")
    if sparse:
        _check_sparse(path, name, tensor)
        return tensor.to_dense()
    return tensor.contiguous()


_COMPRESSED = {torch.sparse_csr: ("crow_indices", "col_indices"), torch.sparse_csc: ("ccol_indices", "row_indices"),
               torch.sparse_bsr: ("crow_indices", "col_indices"), torch.sparse_bsc: ("ccol_indices", "row_indices")}


def _check_sparse(path: Path, name: str, tensor: torch.Tensor) -> None:
    """Check a sparse tensor's invariants (index bounds, ordered compressed indices) before it
    is densified: a crafted one, saved without checks, makes ``to_dense`` write out of bounds
    (a crash) or drop elements silently."""
    try:
        if tensor.layout == torch.sparse_coo:
            torch._validate_sparse_coo_tensor_args(tensor._indices(), tensor._values(), tensor.size())
        elif tensor.layout in _COMPRESSED:
            compressed, plain = (getattr(tensor, attr)() for attr in _COMPRESSED[tensor.layout])
            torch._validate_sparse_compressed_tensor_args(compressed, plain, tensor.values(), tensor.size(), tensor.layout)
        else:
            raise CheckpointError(f"{path}: tensor {name!r} has the unsupported layout {tensor.layout}")
    except RuntimeError as error:
        raise CheckpointError(f"{path}: tensor {name!r} is an invalid sparse tensor ({tensor.layout}): "
                              f"{_detail(error)}") from None


def _from_genprob(path: Path, obj: Mapping[str, object]) -> Checkpoint:
    name = parse_genprob_name(path)
    statistics = obj.get("performance_statistics")
    statistics = statistics if isinstance(statistics, Mapping) else {}
    epoch = name.epoch if name is not None else _content_epoch(obj, statistics)
    if epoch is None:
        performance = _unknown_performance()
    else:
        performance = _statistics(path, statistics, epoch)
        if math.isnan(performance["test_acc"]):
            log.warning("%s: performance_statistics has no entries for epoch %s", path, epoch)
    state = _tensors(path, obj["state_dict_network"])  # type: ignore[arg-type]
    if name is None:
        return _plain(path, "genprob", state, obj, layers="genprob", performance=performance, epoch=epoch)
    return Checkpoint(
        path=path, format="genprob", state_dict=state, layers="genprob", performance=performance, epoch=epoch,
        run=name.run, model_id=name.model_id, optimizer=name.optimizer, dataset=name.dataset, hparams=name.hparams,
    )


def _content_epoch(obj: Mapping[str, object], statistics: Mapping[str, object]) -> int | None:
    if isinstance(obj.get("epoch"), int):
        return int(obj["epoch"])  # type: ignore[call-overload]
    epochs = [int(m[1]) for key in statistics if (m := re.fullmatch(r"test_acc1_epoch_(\d+)", str(key)))]
    return max(epochs) if epochs else None


def _from_lightning(path: Path, obj: Mapping[str, object]) -> Checkpoint:
    hyper = obj.get("hyper_parameters")
    scalars = hyper.items() if isinstance(hyper, Mapping) else ()
    tokens = tuple(f"{k}={v}" for k, v in scalars if isinstance(v, (str, int, float, bool)) and " " not in f"{k}={v}")
    return _plain(path, "lightning", _tensors(path, obj["state_dict"]), obj, hparams=tokens)  # type: ignore[arg-type]


def _from_safetensors(path: Path) -> Checkpoint:
    from probe.replay.sharded import INDEX_SUFFIX, LazyStateDict

    try:
        state = LazyStateDict.open(path)  # headers only: tensors are read when measured
    except Exception as error:  # safetensors raises its own SafetensorError for damaged headers/data
        kind = "sharded checkpoint index" if path.name.endswith(INDEX_SUFFIX) else "safetensors file"
        raise CheckpointError(f"{path}: corrupt or truncated {kind} ({type(error).__name__}: {_detail(error)})") from error
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return _plain(path, "safetensors", state, {})


def _plain(
    path: Path,
    fmt: str,
    state: Mapping[str, torch.Tensor],
    obj: Mapping[str, object],
    *,
    layers: str = "auto",
    performance: dict[str, float] | None = None,
    epoch: int | None = None,
    hparams: tuple[str, ...] = (),
) -> Checkpoint:
    stem = path.name[: -len(".pth.tar")] if path.name.endswith(".pth.tar") else path.stem
    match = _EPOCH_IN_NAME.search(stem)
    if epoch is None:
        epoch = int(obj["epoch"]) if isinstance(obj.get("epoch"), int) else (int(match[1]) if match else None)  # type: ignore[call-overload]
    if match:
        prefix = stem[: match.start()].strip("_-=. ")
        run = str(path.parent / prefix) if prefix else str(path.parent)
    else:
        run = str(path.parent / stem)
    if performance is None:
        performance = _performance_entry(path, obj, epoch)
    return Checkpoint(path=path, format=fmt, state_dict=state, layers=layers, performance=performance, epoch=epoch,
                      run=run, model_id=Path(run).name, hparams=hparams)


def _performance_entry(path: Path, obj: Mapping[str, object], epoch: int | None) -> dict[str, float]:
    """A ``performance`` dict (``test_acc``...) or GenProb-style ``performance_statistics``, else NaN."""
    given = obj.get("performance")
    if isinstance(given, Mapping) and all(k in given for k in PERFORMANCE_KEYS):
        row = {k: _number(path, k, given[k]) for k in PERFORMANCE_KEYS}
        row["gap"] = row["test_acc"] - row["train_acc"]
        return row
    statistics = obj.get("performance_statistics")
    if isinstance(statistics, Mapping) and epoch is not None:
        return _statistics(path, statistics, epoch)
    return _unknown_performance()


def _number(path: Path, key: str, value: object) -> float:
    """A ``performance`` entry as a float; ``None`` (not evaluated) is NaN; anything else is refused by name."""
    if value is None:
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: performance[{key!r}] is {value!r}, not a number") from None


def _statistics(path: Path, statistics: Mapping[str, object], epoch: int) -> dict[str, float]:
    try:
        return performance_from_statistics(statistics, epoch)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _unknown_performance() -> dict[str, float]:
    return dict.fromkeys(PERFORMANCE_COLUMNS, math.nan)
