"""A replay output directory: its layout, its options under a lock, and its record files.

A checkpoint's record is ``records/KEY~ID.json``: ``KEY`` names the checkpoint's path
(``checkpoint_key``), ``ID`` the size and modification time of its file, or of a sharded
checkpoint's index and every shard (``file_identity``), so a checkpoint rewritten in place gets
a new record name. Records are written atomically and never
modified, so they may be hard-linked between directories.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from probe._atomic import atomic_write
from probe.quantities import QUANTITIES
from probe.replay.sharded import checkpoint_parts

log = logging.getLogger(__name__)

MANIFEST = "replay.json"
LOCK = ".lock"
RECORDS = "records"
ERRORS = "errors"
SEPARATOR = "~"  # between a record's path key and its file identity
VERSION = 2


class CorruptRecordError(ValueError):
    """A record file of a replay directory does not parse (it is named in the message)."""


def checkpoint_key(path: str | os.PathLike[str]) -> str:
    """A checkpoint's name in ``records/`` and ``errors/``: its file stem and a hash of its absolute path.

    Any file name the OS gives works, non-UTF-8 bytes included: the hash is of the path's
    bytes, and the stem keeps only ASCII letters, digits, ``-`` and ``.``.
    """
    resolved = str(Path(path).resolve())
    stem = "".join(c if (c.isascii() and c.isalnum()) or c in "-." else "_" for c in Path(resolved).name)[:80]
    return f"{stem}-{hashlib.sha1(os.fsencode(resolved)).hexdigest()[:16]}"


def content_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of the checkpoint's bytes: the file's, or a sharded checkpoint's index and
    shards in turn (each preceded by its size). The same checkpoint under two paths (a copy,
    another mount point) has the same digest; two fine-tunes sharing one index do not."""
    parts = checkpoint_parts(Path(path))
    digest = hashlib.sha256()
    for part in parts:
        if len(parts) > 1:
            digest.update(f"{os.stat(part).st_size}:".encode())
        with open(part, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def file_stats(path: str | os.PathLike[str]) -> list[os.stat_result]:
    """``os.stat`` of each file of the checkpoint (``checkpoint_parts``): ``OSError`` if one is missing."""
    return [os.stat(part) for part in checkpoint_parts(Path(path))]


def file_identity(path: str | os.PathLike[str]) -> str:
    """A short hash of the size and modification time of the checkpoint's files: changes when
    one of them is rewritten."""
    return identity(file_stats(path))


def identity(stats: list[os.stat_result]) -> str:
    """``file_identity`` from the files' ``stat`` results."""
    return hashlib.sha1(";".join(f"{stat.st_size}:{stat.st_mtime_ns}" for stat in stats).encode()).hexdigest()[:12]


def recorded(out: Path) -> dict[str, str]:
    """``{key: record file name}`` of every record (one directory listing, no reads)."""
    return {entry.name.split(SEPARATOR)[0]: entry.name for entry in os.scandir(out / RECORDS) if entry.name.endswith(".json")}


def current_record(out: Path, path: Path, names: dict[str, str]) -> Path | None:
    """The record of ``path`` as the file is now, or ``None``; a record of an older version is removed."""
    key = checkpoint_key(path)
    name = names.get(key)
    if name is None:
        return None
    try:
        current = f"{key}{SEPARATOR}{file_identity(path)}.json"
    except OSError:
        current = None
    if name != current:
        log.info("%s changed since it was measured: measuring it again", path)
        (out / RECORDS / name).unlink(missing_ok=True)
        return None
    return out / RECORDS / name


def readable(record: Path, checkpoint: Path) -> bool:
    """True if the record parses and has every key (``read_record``); a damaged one is named
    in a warning and removed."""
    try:
        read_record(record)
    except CorruptRecordError as error:
        log.warning("corrupt record (%s): removed; measuring %s again", error, checkpoint)
        record.unlink(missing_ok=True)
        return False
    return True


_Kind = type | tuple[type, ...]
_RECORD_KEYS: dict[str, _Kind] = {"file": dict, "checkpoint": dict, "performance": dict, "network": dict, "layers": list}
_FILE_KEYS: dict[str, _Kind] = {"size": int, "mtime_ns": int}
_CHECKPOINT_KEYS: dict[str, _Kind] = {"path": str, "run": str, "epoch": (int, type(None)), "dataset": (str, type(None))}
LAYER_KEYS = ("layer_index", "layer", "ndim", "unfolding", "variant", "rows", "cols", "weight", "kept", *QUANTITIES, "SQ")
"""The keys of each row of a record's ``layers`` (the per-layer table's columns after path, run, epoch)."""
_LAYER_KEY_SET = frozenset(LAYER_KEYS)


def read_record(path: Path) -> dict:
    """A record (``records/*.json``); ``CorruptRecordError`` naming the file and the first
    missing or mistyped key if it does not parse or lacks one."""
    record = read_json(path)
    for where, value, keys in (("", record, _RECORD_KEYS), ("file.", record.get("file"), _FILE_KEYS),
                               ("checkpoint.", record.get("checkpoint"), _CHECKPOINT_KEYS)):
        for key, kind in keys.items():
            if not isinstance(value, dict) or key not in value:
                raise CorruptRecordError(f"{path}: no key {where + key!r}")
            if not isinstance(value[key], kind) or isinstance(value[key], bool):
                raise CorruptRecordError(f"{path}: key {where + key!r} is a {type(value[key]).__name__}")
    for index, row in enumerate(record["layers"]):
        if not isinstance(row, dict) or not row.keys() >= _LAYER_KEY_SET:
            missing = [key for key in LAYER_KEYS if key not in row] if isinstance(row, dict) else ["(not an object)"]
            raise CorruptRecordError(f"{path}: layers[{index}] lacks {missing[:3]}")
    return record


def read_error(path: Path) -> dict | None:
    """An error record (``errors/*.json``: ``path``, ``error``), or ``None`` for a damaged one,
    which is named in a warning and removed (it only marks a checkpoint to retry)."""
    try:
        error = read_json(path)
        if isinstance(error.get("path"), str) and isinstance(error.get("error"), str):
            return error
        message = f"{path}: lacks 'path' or 'error'"
    except CorruptRecordError as damaged:
        message = str(damaged)
    log.warning("damaged error record (%s): removed", message)
    path.unlink(missing_ok=True)
    return None


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (released when the block ends or the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+b") as handle:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]  # Windows only
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def init_dir(out: Path, options: dict) -> None:
    """Create ``out`` or check that it was made with ``options``, atomically with respect to other runs.

    A directory that exists, holds anything but hidden files, and is not a replay output (no ``replay.json``)
    is refused with ``ValueError`` before anything is written in it: its files
    (``checkpoints.csv`` …) would be overwritten.
    """
    wanted = {"version": VERSION, **options}
    _refuse_foreign(out)  # before the lock file is created in it
    with exclusive(out):
        _refuse_foreign(out)  # again under the lock: another run may have begun meanwhile
        for sub in (RECORDS, ERRORS):
            (out / sub).mkdir(exist_ok=True)
        manifest = out / MANIFEST
        if manifest.is_file():
            found = read_json(manifest)
            if found != wanted:
                raise ValueError(
                    f"output directory {str(out)!r} was made with options {found}, not {wanted}; "
                    "use the same options to resume, or another --out"
                )
        else:
            write_atomic(manifest, json.dumps(wanted, indent=1).encode())


def _refuse_foreign(out: Path) -> None:
    """Raise ``ValueError`` if ``out`` is a file, or a non-empty directory that no replay made."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a directory (new, empty, or an earlier replay's)")
    if not out.is_dir() or (out / MANIFEST).is_file():
        return
    foreign = sorted(name for name in os.listdir(out) if name not in _OWN and not name.startswith("."))
    if foreign:
        raise ValueError(
            f"refusing to write into {str(out)!r}: it is not empty ({', '.join(map(repr, foreign[:5]))}"
            f"{' ...' if len(foreign) > 5 else ''}) and not a replay output directory (no {MANIFEST}); its files "
            "(checkpoints.csv, layers.csv, errors.csv ...) would be overwritten: give a new or empty --out"
        )


_OWN = frozenset({RECORDS, ERRORS})
"""What a replay directory holds before its manifest is written (a run killed while starting),
besides hidden files (its lock, temporary files; a ``.gitkeep``), which replay never overwrites."""


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target`` (records never change in place), else copy it atomically."""
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError:  # another file system, or links not allowed: copy (atomically)
        with open(source, "rb") as handle, atomic_write(target, "wb") as copy:
            shutil.copyfileobj(handle, copy)


def write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` so that ``path`` is absent, old or complete (``probe._atomic.atomic_write``;
    ``sync=False``: not fsynced, for a file that need not survive a power loss)."""
    with atomic_write(path, "wb", sync=sync) as handle:
        handle.write(data)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; ``CorruptRecordError`` naming the file if it is not one."""
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise CorruptRecordError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CorruptRecordError(f"{path}: not a JSON object")
    return value
