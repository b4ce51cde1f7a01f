"""Replay a family of checkpoints into tables: parallel, resumable, shardable.

Layout of an output directory::

    replay.json        the options the values depend on (every run into it must use the same)
    records/KEY~ID.json  one file per measured checkpoint, written atomically
    errors/KEY.json    one file per checkpoint that could not be read or measured
    checkpoints.csv    one row per checkpoint: metadata, performance, the 8 network measures
    layers.csv         one row per checkpoint × layer × unfolding × variant
    errors.csv         path, error of every checkpoint that failed
    *.parquet          (optional) the two tables as Parquet (typed, columnar)
    genprob_csv/       (optional) the reference's per-layer CSV, one file per dataset and epoch

Why a run can be killed at any point (even ``kill -9``) and resumed without losing or
duplicating a row: a checkpoint's result exists only as ``records/KEY~ID.json`` (``KEY`` a
hash of the checkpoint's absolute path, ``ID`` one of its size and modification time), and
that file appears through ``os.replace`` of a complete, fsynced temporary file — so it is
either whole or absent. A re-run skips the checkpoints whose record exists for the file as
it is now and measures the rest: a file rewritten in place (``last.ckpt``) has a new ``ID``
and is measured again; a record that does not parse is named in a warning and measured
again. The tables are rebuilt from the records, one row set per key, in a fixed order.

Runs may share a directory (e.g. the shards of an array job) only with the same options:
the options are checked and written under an exclusive lock on ``DIR/.lock``. Worker
processes end with the run, however it ends (``kill -9`` included).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from probe._atomic import atomic_write
from probe.evbmf import DEFAULT_XATOL
from probe.options import MeasureOptions
from probe.replay.genprob import PERFORMANCE_COLUMNS, write_genprob_csv
from probe.replay.readers import is_checkpoint_file, load_checkpoint
from probe.spectrum import Method

log = logging.getLogger(__name__)

MANIFEST = "replay.json"
LOCK = ".lock"
RECORDS = "records"
ERRORS = "errors"
CHECKPOINTS_CSV = "checkpoints.csv"
LAYERS_CSV = "layers.csv"
ERRORS_CSV = "errors.csv"
CHECKPOINTS_PARQUET = "checkpoints.parquet"
LAYERS_PARQUET = "layers.parquet"
GENPROB_DIR = "genprob_csv"
NETWORK_COLUMNS = ("E_L2_BE", "SQ_p_BE", "S_p_BE", "F_p_BE", "E_L2_AE", "SQ_p_AE", "S_p_AE", "F_p_AE")
META_COLUMNS = ("path", "format", "run", "model_id", "optimizer", "dataset", "hparams", "epoch", "preset", "n_layers")
LAYER_COLUMNS = ("path", "run", "epoch", "layer_index", "layer", "ndim", "unfolding", "variant",
                 "rows", "cols", "weight", "kept", "S", "C", "ER", "spec", "fro", "SQ")
CHECKPOINT_COLUMNS = (*META_COLUMNS, *PERFORMANCE_COLUMNS, *NETWORK_COLUMNS)
_INT_COLUMNS = frozenset({"epoch", "n_layers", "layer_index", "ndim", "rows", "cols", "weight", "kept"})
_FLOAT_COLUMNS = frozenset({*PERFORMANCE_COLUMNS, *NETWORK_COLUMNS, "S", "C", "ER", "spec", "fro", "SQ"})
_SEPARATOR = "~"  # between a record's path key and its file identity
_PARQUET_ROWS = 1 << 16  # rows per Parquet row group: bounds the memory of writing
_VERSION = 2


class CorruptRecordError(ValueError):
    """A record file of a replay directory does not parse (it is named in the message)."""


@dataclass(frozen=True)
class Options:
    """Replay's settings: the ``probe.options.MeasureOptions`` each file is measured with.

    ``layers``: a preset forced on every file, or ``None`` for each file's own (``genprob``
    for GenProb files, ``auto`` otherwise). ``method`` as in ``probe.measure``.
    ``evbmf_xatol``: EVBMF's tolerance, or ``None`` for each file's own: the reference's
    ``probe.evbmf.DEFAULT_XATOL`` for GenProb files (their values match the reference),
    ``MeasureOptions``' default otherwise. Replay always measures with ``nonfinite="nan"``.
    Invalid values raise ``ValueError`` here, when built.
    """

    layers: str | None = None
    method: Method = "auto"
    evbmf_xatol: float | None = None

    def __post_init__(self) -> None:
        if self.layers is not None and not isinstance(self.layers, str):
            raise TypeError(f"replay's layers must be a preset name or None, got {type(self.layers).__name__}")
        self.for_file("genprob", genprob=True)  # MeasureOptions checks every value

    def for_file(self, preset: str, *, genprob: bool) -> MeasureOptions:
        """The settings for one file whose own layer preset is ``preset``."""
        xatol = self.evbmf_xatol if self.evbmf_xatol is not None else DEFAULT_XATOL if genprob else None
        return MeasureOptions(layers=self.layers or preset, method=self.method, nonfinite="nan",
                              **({} if xatol is None else {"evbmf_xatol": xatol}))


@dataclass(frozen=True)
class Outcome:
    """What happened to one checkpoint: ``measured`` now, ``done`` in an earlier run, or ``failed``."""

    path: str
    status: Literal["measured", "done", "failed"]
    error: str | None = None


@dataclass(frozen=True)
class Tables:
    """Paths of the consolidated tables and their sizes (``parquet``: empty unless asked for)."""

    checkpoints: Path
    layers: Path
    errors: Path
    genprob: tuple[Path, ...]
    n_checkpoints: int
    n_errors: int
    parquet: tuple[Path, ...] = ()


Progress = Callable[[Outcome, int], None]
"""``progress(outcome, total)``: called once per checkpoint as it finishes (``total``: of this run)."""


def find_checkpoints(patterns: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, directories (searched recursively for checkpoint suffixes) and globs.

    Parameters
    ----------
    patterns:
        Paths or glob patterns (``**`` recurses), e.g. ``"genprob/*_CIFAR10_epoch_*.pth.tar"``.

    Returns
    -------
    list of Path
        Absolute, unique, sorted paths (a fixed order, so shards agree).
    """
    found: set[Path] = set()
    for pattern in map(str, patterns):
        path = Path(pattern)
        if path.is_dir():
            matches = [p for p in path.rglob("*") if p.is_file() and is_checkpoint_file(p)]
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(pattern):
            matches = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
            if not matches:
                log.warning("no file matches %r", pattern)
        else:
            raise FileNotFoundError(f"no such checkpoint, directory or glob match: {pattern!r}")
        found.update(p.resolve() for p in matches)
    return sorted(found, key=str)


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Parse ``"K/N"`` (0 ≤ K < N) into ``(K, N)``; ``"auto"`` reads a SLURM array job's variables.

    With ``"auto"``, ``K`` is the task's position in the array (``SLURM_ARRAY_TASK_ID`` counted
    from ``SLURM_ARRAY_TASK_MIN`` in steps of ``SLURM_ARRAY_TASK_STEP``) and ``N`` is
    ``SLURM_ARRAY_TASK_COUNT``; ``environ`` defaults to ``os.environ``.
    """
    if text.strip().lower() == "auto":
        return _slurm_shard(os.environ if environ is None else environ)
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like K/N with integers 0 <= K < N (e.g. 0/8), or auto, got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"shard K/N must satisfy 0 <= K < N, got {text!r}")
    return index, count


def _slurm_shard(environ: Mapping[str, str]) -> tuple[int, int]:
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX")
    missing = [name for name in names if name not in environ]
    if missing:
        raise ValueError(f"--shard auto reads a SLURM array job's variables, and {', '.join(missing)} is not set: "
                         "run it as an array task (sbatch --array=0-N) or pass --shard K/N")
    try:
        task, count, low, high = (int(environ[name]) for name in names)
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1"))
    except ValueError:
        raise ValueError(f"--shard auto: SLURM array variables are not integers: {[environ[n] for n in names]}") from None
    if step < 1 or (high - low) // step + 1 != count or (task - low) % step:
        raise ValueError(f"--shard auto needs an evenly spaced array (e.g. --array=0-15 or 0-30:2); this one has "
                         f"{count} tasks from {low} to {high} in steps of {step}: pass --shard K/N yourself")
    return parse_shard(f"{(task - low) // step}/{count}")


def select_shard(paths: Sequence[Path], index: int, count: int) -> list[Path]:
    """Every ``count``-th path starting at ``index`` of the sorted list: shards are disjoint and cover it."""
    if not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= index < count, got index={index}, count={count}")
    return sorted(paths, key=str)[index::count]


def checkpoint_key(path: str | os.PathLike[str]) -> str:
    """A checkpoint's name in ``records/`` and ``errors/``: its file stem and a hash of its absolute path."""
    resolved = str(Path(path).resolve())
    stem = "".join(c if c.isalnum() or c in "-." else "_" for c in Path(resolved).name)[:80]
    return f"{stem}-{hashlib.sha1(resolved.encode()).hexdigest()[:16]}"


def file_identity(path: str | os.PathLike[str]) -> str:
    """A short hash of the file's size and modification time: changes when the file is rewritten."""
    return _identity(os.stat(path))


def _identity(stat: os.stat_result) -> str:
    return hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def iter_replay(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    options: Options = Options(),
    workers: int = 1,
    unsafe: bool = False,
) -> Iterator[Outcome]:
    """Measure each checkpoint not yet recorded in ``out_dir``; yield one ``Outcome`` per path.

    Parameters
    ----------
    paths:
        Checkpoint files (see ``find_checkpoints``).
    out_dir:
        Output directory; created if needed. Checkpoints recorded there, unchanged since,
        are skipped (``done``); changed files and corrupt records are measured again.
    options:
        Layer preset override, singular-value method, EVBMF tolerance. Must match the
        options the directory was started with (``ValueError`` otherwise).
    workers:
        Worker processes (forkserver, or spawn where unavailable; each uses one torch
        thread), at most the usable CPU cores (more is capped, with a warning). ``1``
        measures in this process. Scripts using workers need the
        ``if __name__ == "__main__":`` guard. Workers end with this process, even when it
        is killed.
    unsafe:
        Allow arbitrary unpickling of checkpoints (only for trusted files). Default ``False``.

    Yields
    ------
    Outcome
        In completion order. A file that cannot be read or measured is ``failed`` (and
        written to ``errors/``), never the end of the run; it is retried by the next run.
        A checkpoint with NaN/Inf weights (a diverged run) is ``measured``: its layers with
        non-finite weights, and so its network measures, are NaN.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out_dir)
    _init_dir(out, options)
    todo = []
    recorded = _recorded(out)
    for path in (Path(p).resolve() for p in paths):
        record = _current_record(out, path, recorded)
        if record is not None and _readable(record, path):
            yield Outcome(str(path), "done")
        else:
            todo.append(str(path))
    usable = usable_cpus()
    if workers > usable:
        log.warning("workers=%d is more than the %d usable CPU cores: using %d", workers, usable, usable)
    workers = min(workers, usable, len(todo))
    settings = asdict(options)
    if workers <= 1:
        for path in todo:
            yield _measure_one(path, str(out), settings, unsafe)
        return
    yield from _measure_in_workers(todo, str(out), settings, unsafe, workers)


def _measure_in_workers(todo: list[str], out: str, settings: dict, unsafe: bool, workers: int) -> Iterator[Outcome]:
    """``_measure_one`` for each path in a pool whose workers die with this process.

    Each worker watches a pipe that only this process writes to: when this process ends,
    however it ends, the pipe closes and the worker kills itself. The forkserver and the
    resource tracker end when their last client does.
    """
    context = _context()
    parent_alive, keep_open = context.Pipe(duplex=False)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(parent_alive,))
    try:
        futures = [executor.submit(_measure_one, path, out, settings, unsafe) for path in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        keep_open.close()
        parent_alive.close()


def replay(
    patterns: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    options: Options = Options(),
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    unsafe: bool = False,
    genprob_csv: bool = False,
    parquet: bool = False,
    progress: Progress | None = None,
) -> tuple[list[Outcome], Tables]:
    """Find, measure (resuming) and consolidate: the library form of ``probe replay``.

    Parameters
    ----------
    patterns:
        Files, directories or globs (``find_checkpoints``).
    out_dir:
        Output directory (layout in this module's docstring).
    options, workers, unsafe:
        As in ``iter_replay``.
    shard:
        ``(K, N)``: measure only the K-th of N deterministic shards (``select_shard``). An
        empty shard (more shards than files) is not an error: it measures nothing.
    genprob_csv:
        Also write the reference-compatible per-layer CSVs. Default ``False``.
    parquet:
        Also write the tables as Parquet (needs ``pyarrow``). Default ``False``.
    progress:
        Called as ``progress(outcome, total)`` after each checkpoint.

    Returns
    -------
    (outcomes, tables)
        One ``Outcome`` per selected checkpoint, and the consolidated ``Tables``.
    """
    patterns = [str(p) for p in patterns]
    paths = find_checkpoints(patterns)
    if not paths:
        raise ValueError(f"no checkpoint found in {patterns!r}")
    if shard is not None:
        paths = select_shard(paths, *shard)
        if not paths:
            log.warning("shard %d/%d is empty: there are fewer checkpoints than shards", *shard)
    outcomes = []
    for outcome in iter_replay(paths, out_dir, options=options, workers=workers, unsafe=unsafe):
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome, len(paths))
    return outcomes, consolidate(out_dir, genprob_csv=genprob_csv, parquet=parquet)


def merge(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    genprob_csv: bool = False,
    parquet: bool = False,
) -> Tables:
    """Join the records of several output directories (e.g. one per shard) into ``out_dir``.

    Parameters
    ----------
    sources:
        Output directories of ``replay`` runs made with the same options (``out_dir`` itself
        may be among them; shards that shared one directory need only it).
    out_dir:
        Where the joined records and tables go. Records are hard-linked where the file
        system allows (they are never modified in place), else copied.
    genprob_csv, parquet:
        As in ``replay``.

    Returns
    -------
    Tables
        A checkpoint present in several sources appears once (its most recent file version).
    """
    if not sources:
        raise ValueError("merge needs at least one source directory")
    out = Path(out_dir)
    manifests = []
    for source in map(Path, sources):
        manifest = source / MANIFEST
        if not manifest.is_file():
            raise ValueError(f"{str(source)!r} is not a replay output directory (no {MANIFEST})")
        manifests.append((source, _read(manifest)))
    first_source, first = manifests[0]
    for source, manifest in manifests[1:]:
        if manifest != first:
            raise ValueError(f"cannot merge {str(source)!r} (options {manifest}) with {str(first_source)!r} (options {first})")
    _init_dir(out, _options_of(first, first_source))
    for source, _ in manifests:
        if source.resolve() == out.resolve():
            continue
        for sub in (RECORDS, ERRORS):
            present = {entry.name for entry in os.scandir(out / sub)}
            for entry in os.scandir(source / sub):
                if entry.name.endswith(".json") and entry.name not in present:
                    _link_or_copy(Path(entry.path), out / sub / entry.name)
    return consolidate(out, genprob_csv=genprob_csv, parquet=parquet)


def consolidate(out_dir: str | os.PathLike[str], *, genprob_csv: bool = False, parquet: bool = False) -> Tables:
    """Rebuild ``checkpoints.csv``, ``layers.csv`` and ``errors.csv`` from the records.

    Records are read one at a time, so memory holds one record and the sort keys (about
    100 bytes per checkpoint), whatever the family's size.

    Parameters
    ----------
    out_dir:
        A replay output directory.
    genprob_csv:
        Also write ``genprob_csv/results-{DATASET}-{EPOCH}.csv`` (SPEC §6), one file per
        dataset and epoch, models in run order.
    parquet:
        Also write ``checkpoints.parquet`` and ``layers.parquet`` (same columns, typed);
        without it, Parquet tables of an earlier consolidation are removed (they would be stale).

    Returns
    -------
    Tables

    Raises
    ------
    CorruptRecordError
        A record does not parse; it is named, and removed so that a re-run of ``probe
        replay`` on its checkpoint measures it again.
    """
    out = Path(out_dir)
    with _exclusive(out):
        keys = _sort_keys(out)
        recorded = {key for _, key, _ in keys}
        errors = [_read(p) for p in sorted((out / ERRORS).glob("*.json")) if p.stem not in recorded]
        parquet_paths = (out / CHECKPOINTS_PARQUET, out / LAYERS_PARQUET)
        with ExitStack() as stack:
            add_checkpoint = [stack.enter_context(_csv_table(out / CHECKPOINTS_CSV, CHECKPOINT_COLUMNS))]
            add_layer = [stack.enter_context(_csv_table(out / LAYERS_CSV, LAYER_COLUMNS))]
            if parquet:
                add_checkpoint.append(stack.enter_context(_parquet_table(parquet_paths[0], CHECKPOINT_COLUMNS)))
                add_layer.append(stack.enter_context(_parquet_table(parquet_paths[1], LAYER_COLUMNS)))
            for _, _, path in keys:
                record = _read(path)
                meta = record["checkpoint"]
                values = {**meta, **record["performance"], **record["network"]}
                checkpoint = [[values.get(c) for c in CHECKPOINT_COLUMNS]]
                layers = [[meta["path"], meta["run"], meta["epoch"], *(row.get(c) for c in LAYER_COLUMNS[3:])]
                          for row in record["layers"]]
                for add in add_checkpoint:
                    add(checkpoint)
                for add in add_layer:
                    add(layers)
        if not parquet:
            for path in parquet_paths:
                path.unlink(missing_ok=True)
        with _csv_table(out / ERRORS_CSV, ("path", "error")) as add_errors:
            add_errors([[error["path"], error["error"]] for error in sorted(errors, key=lambda e: e["path"])])
        tables = Tables(
            checkpoints=out / CHECKPOINTS_CSV,
            layers=out / LAYERS_CSV,
            errors=out / ERRORS_CSV,
            genprob=_write_genprob_tables(out, keys) if genprob_csv else (),
            n_checkpoints=len(keys),
            n_errors=len(errors),
            parquet=parquet_paths if parquet else (),
        )
    log.info("%s: %d checkpoints, %d errors", out, tables.n_checkpoints, tables.n_errors)
    return tables


def _sort_keys(out: Path) -> list[tuple[tuple, str, Path]]:
    """``(table order, key, record path)`` of each checkpoint's record, sorted.

    Of several records of one key (a merge of directories that measured different versions
    of one file), the one of the most recent file is kept and the others are removed.
    """
    chosen: dict[str, tuple[tuple, Path, int]] = {}
    corrupt = []
    for entry in sorted(os.scandir(out / RECORDS), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        path = Path(entry.path)
        try:
            record = _read(path)
            meta, mtime = record["checkpoint"], record["file"]["mtime_ns"]
            order = _record_order(meta)
        except (CorruptRecordError, KeyError, TypeError) as error:
            corrupt.append(f"{path} ({error})")
            path.unlink(missing_ok=True)
            continue
        key, candidate = path.name.split(_SEPARATOR)[0], (order, path, mtime)
        if key in chosen:
            keep, drop = sorted((chosen[key], candidate), key=lambda item: item[2], reverse=True)
            log.warning("%s: two records of %s; keeping the one of the most recent file", out, meta["path"])
            drop[1].unlink()
            candidate = keep
        chosen[key] = candidate
    if corrupt:
        raise CorruptRecordError(
            f"{len(corrupt)} corrupt record(s) in {out}, removed: {'; '.join(corrupt[:5])}"
            f"{' ...' if len(corrupt) > 5 else ''}; re-run `probe replay` on their checkpoints (same --out and "
            "options) to measure them again"
        )
    return sorted((order, key, path) for key, (order, path, _) in chosen.items())


def _recorded(out: Path) -> dict[str, str]:
    """``{key: record file name}`` of every record (one directory listing, no reads)."""
    return {entry.name.split(_SEPARATOR)[0]: entry.name for entry in os.scandir(out / RECORDS) if entry.name.endswith(".json")}


def _current_record(out: Path, path: Path, recorded: dict[str, str]) -> Path | None:
    """The record of ``path`` as the file is now, or ``None``; a record of an older version is removed."""
    key = checkpoint_key(path)
    name = recorded.get(key)
    if name is None:
        return None
    try:
        current = f"{key}{_SEPARATOR}{file_identity(path)}.json"
    except OSError:
        current = None
    if name != current:
        log.info("%s changed since it was measured: measuring it again", path)
        (out / RECORDS / name).unlink(missing_ok=True)
        return None
    return out / RECORDS / name


def _readable(record: Path, checkpoint: Path) -> bool:
    """True if the record parses; a corrupt one is named in a warning and removed."""
    try:
        _read(record)["checkpoint"]["path"]
        return True
    except (CorruptRecordError, KeyError, TypeError) as error:
        log.warning("corrupt record %s (%s): removed; measuring %s again", record, error, checkpoint)
        record.unlink(missing_ok=True)
        return False


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (released when the block ends or the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+b") as handle:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _init_dir(out: Path, options: Options) -> None:
    """Create ``out`` or check that it was made with ``options``, atomically with respect to other runs."""
    wanted = {"version": _VERSION, **asdict(options)}
    with _exclusive(out):
        for sub in (RECORDS, ERRORS):
            (out / sub).mkdir(exist_ok=True)
        manifest = out / MANIFEST
        if manifest.is_file():
            found = _read(manifest)
            if found != wanted:
                raise ValueError(
                    f"output directory {str(out)!r} was made with options {found}, not {wanted}; "
                    "use the same options to resume, or another --out"
                )
        else:
            _write_atomic(manifest, json.dumps(wanted, indent=1).encode())


def _options_of(manifest: dict, source: Path) -> Options:
    if manifest.get("version") != _VERSION:
        raise ValueError(f"{str(source)!r} was written by another version of probe replay "
                         f"(format {manifest.get('version')}, this one reads {_VERSION}): replay it again into a new --out")
    return Options(**{k: v for k, v in manifest.items() if k != "version"})


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError:  # another file system, or links not allowed: copy (atomically)
        with open(source, "rb") as handle, atomic_write(target, "wb") as copy:
            shutil.copyfileobj(handle, copy)


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (workers fork from a server that imported torch once, before any thread
    pool exists) where available, else ``spawn``; never plain ``fork`` (torch threads can hang)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker(parent_alive: Any) -> None:
    """Worker set-up: one torch thread, and a watchdog that kills the worker when the run ends."""
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_die_with_parent, args=(parent_alive,), name="probe-replay-watchdog", daemon=True).start()


def _die_with_parent(parent_alive: Any) -> None:
    try:
        parent_alive.recv()  # nothing is ever sent: returns (EOFError) when the parent's end closes
    except (EOFError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _measure_one(path: str, out_dir: str, options: dict[str, Any], unsafe: bool) -> Outcome:
    """Load, measure and record one checkpoint (runs in a worker process)."""
    import probe

    out, key = Path(out_dir), checkpoint_key(path)
    try:
        stat = os.stat(path)  # before reading: a file rewritten meanwhile gets another identity next run
        checkpoint = load_checkpoint(path, unsafe=unsafe)
        settings = Options(**options).for_file(checkpoint.layers, genprob=checkpoint.format == "genprob")
        report = probe.measure(checkpoint.state_dict, **settings.kwargs())
    except Exception as error:  # one bad file must not end the run: record it and go on
        message = f"{type(error).__name__}: {error}"
        log.warning("skipping %s: %s", path, message)
        _write_atomic(out / ERRORS / f"{key}.json", json.dumps({"path": path, "error": message}).encode())
        return Outcome(path, "failed", message)
    position = {layer.name: (index, len(layer.shape)) for index, layer in enumerate(report.layers)}
    layers = [
        {"layer_index": position[row["layer"]][0], "ndim": position[row["layer"]][1], **row} for row in report.records()
    ]
    record = {
        "key": key,
        "file": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "checkpoint": {**checkpoint.metadata(), "path": path, "preset": settings.layers, "n_layers": len(report.layers)},
        "performance": checkpoint.performance,
        "network": report.network,
        "layers": layers,
    }
    _write_atomic(out / RECORDS / f"{key}{_SEPARATOR}{_identity(stat)}.json", json.dumps(record).encode())
    (out / ERRORS / f"{key}.json").unlink(missing_ok=True)
    return Outcome(path, "measured")


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise CorruptRecordError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CorruptRecordError(f"{path}: not a JSON object")
    return value


def _record_order(meta: dict) -> tuple:
    """Table order: dataset, run, epoch (none first), path."""
    return (meta["dataset"] or "", meta["run"], -1 if meta["epoch"] is None else meta["epoch"], meta["path"])


@contextmanager
def _csv_table(path: Path, columns: Sequence[str]) -> Iterator[Callable[[list[list]], None]]:
    """Yield a function adding rows (lists in ``columns`` order; ``None`` is written empty,
    NaN as ``nan``); the file appears (atomically) only if all went well."""
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        yield writer.writerows


@contextmanager
def _parquet_table(path: Path, columns: Sequence[str]) -> Iterator[Callable[[list[list]], None]]:
    """As ``_csv_table``, for Parquet: integer, float and text columns, one row group per ``_PARQUET_ROWS`` rows."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet tables need pyarrow: pip install 'probeable[replay]' (or pyarrow)") from None
    kinds = [pa.int64() if c in _INT_COLUMNS else pa.float64() if c in _FLOAT_COLUMNS else pa.string() for c in columns]
    schema = pa.schema(list(zip(columns, kinds)))
    buffer: list[list] = [[] for _ in columns]

    def flush() -> None:
        writer.write_table(pa.Table.from_arrays([pa.array(v, type=k) for v, k in zip(buffer, kinds)], schema=schema))
        for values in buffer:
            values.clear()

    def add(rows: list[list]) -> None:
        for values, column in zip(buffer, zip(*rows)):
            values.extend(column)
        if len(buffer[0]) >= _PARQUET_ROWS:
            flush()

    with atomic_write(path, "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
        yield add
        if buffer[0]:
            flush()


def _write_genprob_tables(out: Path, keys: list[tuple[tuple, str, Path]]) -> tuple[Path, ...]:
    """One CSV per (dataset, epoch), models in run order; checkpoints without an epoch are left out."""
    by_group = sorted(((dataset or "unknown", epoch, run, p), path) for (dataset, run, epoch, p), _, path in keys if epoch >= 0)
    if len(by_group) < len(keys):
        log.warning("%d checkpoints have no epoch: left out of the GenProb CSVs", len(keys) - len(by_group))
    written = []
    for (dataset, epoch), group in itertools.groupby(by_group, key=lambda item: item[0][:2]):
        models = ((r["performance"], r["checkpoint"]["model_id"], _genprob_rows(r["layers"])) for r in (_read(path) for _, path in group))
        written.append(write_genprob_csv(out / GENPROB_DIR / f"results-{dataset}-{epoch}.csv", models))
    return tuple(written)


def _genprob_rows(layers: list[dict]) -> list[dict[str, object]]:
    """Tidy layer rows of one checkpoint back to ``Report.genprob_rows()`` form."""
    wide: dict[int, dict[str, object]] = {}
    for row in layers:
        target = wide.setdefault(row["layer_index"], {"layer": row["layer"], "type": row["ndim"]})
        u, v = row["unfolding"], row["variant"]
        target.update({f"{u}_{q}_{v}": row[q] for q in ("S", "C", "ER", "spec", "fro")})
        target[f"{u}_weight_{v}"] = row["weight"]
    return [wide[i] for i in sorted(wide)]
