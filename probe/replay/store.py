"""A replay output directory: its layout, its options under a lock, and its record files.

A checkpoint's record is ``records/KEY~ID.json``: ``KEY`` names the checkpoint's path
(``checkpoint_key``), ``ID`` the file's size and modification time (``file_identity``), so a
file rewritten in place gets a new record name. Records are written atomically and never
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
    """A checkpoint's name in ``records/`` and ``errors/``: its file stem and a hash of its absolute path."""
    resolved = str(Path(path).resolve())
    stem = "".join(c if c.isalnum() or c in "-." else "_" for c in Path(resolved).name)[:80]
    return f"{stem}-{hashlib.sha1(resolved.encode()).hexdigest()[:16]}"


def file_identity(path: str | os.PathLike[str]) -> str:
    """A short hash of the file's size and modification time: changes when the file is rewritten."""
    return identity(os.stat(path))


def identity(stat: os.stat_result) -> str:
    """``file_identity`` from a ``stat`` result."""
    return hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


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
    """True if the record parses; a corrupt one is named in a warning and removed."""
    try:
        return isinstance(read_json(record)["checkpoint"]["path"], str)
    except (CorruptRecordError, KeyError, TypeError) as error:
        log.warning("corrupt record %s (%s): removed; measuring %s again", record, error, checkpoint)
        record.unlink(missing_ok=True)
        return False


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
    """Create ``out`` or check that it was made with ``options``, atomically with respect to other runs."""
    wanted = {"version": VERSION, **options}
    with exclusive(out):
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


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target`` (records never change in place), else copy it atomically."""
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError:  # another file system, or links not allowed: copy (atomically)
        with open(source, "rb") as handle, atomic_write(target, "wb") as copy:
            shutil.copyfileobj(handle, copy)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is absent, old or complete (``probe._atomic.atomic_write``)."""
    with atomic_write(path, "wb") as handle:
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
