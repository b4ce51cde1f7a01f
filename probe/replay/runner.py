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

A worker process that dies (killed for memory, say) costs only the checkpoint it was
measuring, which is ``failed`` once it has died again measured alone in a fresh process.
Without workers a death ends the run itself: the checkpoint in hand is marked
(``errors/KEY.json``, ``IN_FLIGHT``), and the next run measures it alone in a fresh process,
so a file that crashes whatever measures it fails alone instead of ending every rerun.

Runs may share a directory (e.g. the shards of an array job) only with the same options:
the options are checked and written under an exclusive lock on ``DIR/.lock``. Worker
processes end with the run, however it ends (``kill -9`` included).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

from typing_extensions import Unpack

from probe._validate import check_int
from probe.evbmf import REFERENCE_XATOL
from probe.layers import check_layers
from probe.options import MeasureOptions, check_options
from probe.replay.readers import UNSAFE_WARNING, is_checkpoint_file, load_checkpoint
from probe.replay.store import (
    ERRORS,
    MANIFEST,
    RECORDS,
    SEPARATOR,
    VERSION,
    CorruptRecordError,
    checkpoint_key,
    content_digest,
    current_record,
    file_stats,
    identity,
    init_dir,
    link_or_copy,
    read_json,
    readable,
    recorded,
    write_atomic,
)
from probe.replay.tables import Tables, consolidate
from probe.spectrum import Method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """What ``replay.json`` records: the settings the values depend on (built by :meth:`of`).

    ``layers``: a preset forced on every file, or ``None`` for each file's own (``genprob``
    for GenProb files, ``auto`` otherwise). ``method`` as in ``probe.MeasureOptions``.
    ``evbmf_xatol``: EVBMF's tolerance, or ``None`` for each file's own: the reference's
    ``probe.evbmf.REFERENCE_XATOL`` for GenProb files (their values match the reference),
    ``MeasureOptions``' default otherwise. Invalid values raise here, when built.
    """

    layers: str | None = None
    method: Method = "auto"
    evbmf_xatol: float | None = None

    def __post_init__(self) -> None:
        if self.layers is not None and not isinstance(check_layers(self.layers), str):
            raise TypeError("replay's layers must be a preset name or None (a record names its preset; "
                            f"a callable cannot be recorded), got {type(self.layers).__name__}")
        self.for_file("genprob", genprob=True)  # MeasureOptions checks every value

    @classmethod
    def of(cls, layers: str | None, options: MeasureOptions | None) -> Options:
        """Replay's record of ``layers=`` and ``options=`` (only ``method`` and ``evbmf_xatol`` change values)."""
        if options is None:
            return cls(layers)
        options = check_options(options)
        return cls(layers, options.method, options.evbmf_xatol)

    def for_file(self, preset: str, *, genprob: bool) -> tuple[str, MeasureOptions]:
        """The layer preset and the measuring options for one file whose own preset is ``preset``."""
        xatol = self.evbmf_xatol if self.evbmf_xatol is not None else REFERENCE_XATOL if genprob else None
        return self.layers or preset, MeasureOptions(method=self.method, nonfinite="nan", evbmf_xatol=xatol)


@dataclass(frozen=True)
class Outcome:
    """What happened to one checkpoint: ``measured`` now, ``done`` in an earlier run, or
    ``failed`` (``error`` says why); ``warning``: what a measured one's values lack (NaN/Inf weights)."""

    path: str
    status: Literal["measured", "done", "failed"]
    error: str | None = None
    warning: str | None = None


DIED = "the process measuring it died (killed, e.g. for memory, or crashed)"
IN_FLIGHT = ("measuring it did not finish (the run was interrupted or killed, or crashed on it): "
             "the next run measures it alone, in a fresh process")
"""``errors/KEY.json`` of the checkpoint a run measuring in its own process (``workers=1``)
has in hand: replaced by its record or its error when it ends, left when the run dies."""

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
    from probe.replay.sharded import INDEX_SUFFIX, shards_of

    shards = {shard for p in found if p.name.endswith(INDEX_SUFFIX) for shard in shards_of(p)}
    return sorted(found - shards, key=str)


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


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def iter_replay(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    layers: str | None = None,
    options: MeasureOptions | None = None,
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
    layers:
        A layer preset forced on every file, or ``None`` (default) for each file's own:
        ``"genprob"`` for GenProb files, ``"auto"`` otherwise. (A callable cannot be
        recorded with the values, so replay takes presets only.)
    options:
        How to measure (:class:`probe.MeasureOptions`; default ``MeasureOptions()``): its
        ``method`` and ``evbmf_xatol`` are used and recorded, an ``evbmf_xatol`` of
        ``None`` meaning each file's own (the reference's for GenProb files, whose values
        then match it); non-finite weights always give NaN rows (a diverged checkpoint is
        data, not an error) and replay measures on the CPU.
        ``layers`` and ``options`` must match what the directory was started with
        (``ValueError`` otherwise).
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
        With workers, so is a file whose worker process dies measuring it alone (killed
        for memory, a crash in native code); the others it shared the pool with are
        measured again. With ``workers=1`` such a death ends the run; the next run measures
        that file alone in a fresh process (``IN_FLIGHT``), so it fails alone and the run goes on.
        A checkpoint with NaN/Inf weights (a diverged run) is ``measured``: its layers with
        non-finite weights, and so its network measures, are NaN (``Outcome.warning`` names
        them). Each failure and each such warning is also logged (``WARNING``), once, by this
        process.
    """
    for outcome in _outcomes(paths, out_dir, layers, options, workers, unsafe):
        if outcome.error is not None:
            log.warning("skipping %s: %s", outcome.path, outcome.error)
        if outcome.warning is not None:
            log.warning("%s: %s", outcome.path, outcome.warning)
        yield outcome


def _outcomes(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], layers: str | None,
              options: MeasureOptions | None, workers: int, unsafe: bool) -> Iterator[Outcome]:
    """``iter_replay``'s outcomes, unannounced (a worker's are reported by the calling process)."""
    check_int("workers", workers, 1)
    settings = Options.of(layers, options)
    out = Path(out_dir)
    init_dir(out, asdict(settings))
    todo = []
    names = recorded(out)
    for path in (Path(p).resolve() for p in paths):
        record = current_record(out, path, names)
        if record is not None and readable(record, path):
            yield Outcome(str(path), "done")
        else:
            todo.append(str(path))
    usable = usable_cpus()
    if workers > usable:
        log.warning("workers=%d is more than the %d usable CPU cores: using %d", workers, usable, usable)
    workers = min(workers, usable, len(todo))
    recorded_settings = asdict(settings)
    if unsafe and workers > 1:  # here once; the workers stay silent (_init_worker)
        warnings.warn(UNSAFE_WARNING, UserWarning, stacklevel=2)
    if workers <= 1:
        for todo_path in todo:
            if _ended_a_run(out, todo_path):
                yield from _measure_alone(todo_path, str(out), recorded_settings, unsafe)
            else:
                write_atomic(out / ERRORS / f"{checkpoint_key(todo_path)}.json",
                             json.dumps({"path": todo_path, "error": IN_FLIGHT}).encode(), sync=False)  # replaced when it ends
                yield _measure_one(todo_path, str(out), recorded_settings, unsafe)
        return
    yield from _measure_in_workers(todo, str(out), recorded_settings, unsafe, workers)


def _measure_in_workers(todo: list[str], out: str, settings: dict, unsafe: bool, workers: int) -> Iterator[Outcome]:
    """``_measure_one`` for each path in pools of worker processes, one outcome per path.

    A worker that dies (killed for memory, a crash in native code) breaks its pool: the
    checkpoints it may have held (the first ``workers + 1`` unfinished ones: the pool starts
    tasks in order) are measured again one at a time, each in a fresh process, and one whose
    process dies alone is ``failed``; the rest go on in a new pool.
    """
    pending = todo
    while pending:
        unfinished = yield from _run_pool(pending, out, settings, unsafe, min(workers, len(pending)))
        suspects, pending = unfinished[: workers + 1], unfinished[workers + 1 :]
        if suspects:
            log.warning("a replay worker died (killed for memory, or crashed); measuring again, one per process: %s",
                        ", ".join(suspects))
        for path in suspects:
            yield from _measure_alone(path, out, settings, unsafe)


def _measure_alone(path: str, out: str, settings: dict, unsafe: bool) -> Iterator[Outcome]:
    """``_measure_one`` in a fresh process of its own: a death there fails only ``path``."""
    if (yield from _run_pool([path], out, settings, unsafe, 1)):
        yield _failed(path, out, DIED)


def _ended_a_run(out: Path, path: str) -> bool:
    """Whether measuring ``path`` ended the process that measured it last time (its error
    record says ``IN_FLIGHT`` or ``DIED``)."""
    try:
        return read_json(out / ERRORS / f"{checkpoint_key(path)}.json").get("error") in (IN_FLIGHT, DIED)
    except (OSError, CorruptRecordError):
        return False


def _run_pool(paths: list[str], out: str, settings: dict, unsafe: bool, workers: int) -> Generator[Outcome, None, list[str]]:
    """Yield the outcomes one pool of ``workers`` processes gives; return the paths left
    unfinished when a worker died (in ``paths``' order; empty when none died).

    Each worker watches a pipe that only this process writes to: when this process ends,
    however it ends, the pipe closes and the worker kills itself. The forkserver and the
    resource tracker end when their last client does.
    """
    context = _context()
    parent_alive, keep_open = context.Pipe(duplex=False)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(parent_alive,))
    broken: set[str] = set()
    try:
        futures = {executor.submit(_measure_one, path, out, settings, unsafe): path for path in paths}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool:
                broken.add(futures[future])
                continue
            yield outcome
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        keep_open.close()
        parent_alive.close()
    return [path for path in paths if path in broken]


class MeasureSettings(TypedDict, total=False):
    """``iter_replay``'s measuring settings, which ``replay`` passes on unchanged."""

    layers: str | None
    options: MeasureOptions | None
    workers: int
    unsafe: bool


def replay(
    patterns: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    shard: tuple[int, int] | None = None,
    genprob_csv: bool = False,
    parquet: bool = False,
    progress: Progress | None = None,
    **settings: Unpack[MeasureSettings],
) -> tuple[list[Outcome], Tables]:
    """Find, measure (resuming) and consolidate: the library form of ``probe replay``.

    Parameters
    ----------
    patterns:
        Files, directories or globs (``find_checkpoints``).
    out_dir:
        Output directory (layout in this module's docstring).
    shard:
        ``(K, N)``: measure only the K-th of N deterministic shards (``select_shard``). An
        empty shard (more shards than files) is not an error: it measures nothing.
    genprob_csv:
        Also write the reference-compatible per-layer CSVs. Default ``False``.
    parquet:
        Also write the tables as Parquet (needs ``pyarrow``). Default ``False``.
    progress:
        Called as ``progress(outcome, total)`` after each checkpoint.
    **settings:
        ``layers``, ``options``, ``workers``, ``unsafe``: as in ``iter_replay``.

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
    for outcome in iter_replay(paths, out_dir, **settings):
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
        manifests.append((source, read_json(manifest)))
    first_source, first = manifests[0]
    for source, options in manifests[1:]:
        if options != first:
            raise ValueError(f"cannot merge {str(source)!r} (options {options}) with {str(first_source)!r} (options {first})")
    init_dir(out, asdict(_options_of(first, first_source)))
    for source, _ in manifests:
        if source.resolve() == out.resolve():
            continue
        for sub in (RECORDS, ERRORS):
            present = {entry.name for entry in os.scandir(out / sub)}
            for entry in os.scandir(source / sub):
                if entry.name.endswith(".json") and entry.name not in present:
                    link_or_copy(Path(entry.path), out / sub / entry.name)
    return consolidate(out, genprob_csv=genprob_csv, parquet=parquet)


def _options_of(manifest: dict, source: Path) -> Options:
    if manifest.get("version") != VERSION:
        raise ValueError(f"{str(source)!r} was written by another version of probe replay "
                         f"(format {manifest.get('version')}, this one reads {VERSION}): replay it again into a new --out")
    return Options(**{k: v for k, v in manifest.items() if k != "version"})


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (workers fork from a server that imported torch once, before any thread
    pool exists) where available, else ``spawn``; never plain ``fork`` (torch threads can hang)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker(parent_alive: Any) -> None:
    """Worker set-up: one torch thread, no unsafe-load warning (the run gave it once), Ctrl-C
    left to the run (a terminal sends it to every worker too: it would print a traceback from
    each), and a watchdog that kills the worker when the run ends."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=re.escape(UNSAFE_WARNING), category=UserWarning)
    threading.Thread(target=_die_with_parent, args=(parent_alive,), name="probe-replay-watchdog", daemon=True).start()


def _die_with_parent(parent_alive: Any) -> None:
    with contextlib.suppress(EOFError, OSError):
        parent_alive.recv()  # nothing is ever sent: returns (EOFError) when the parent's end closes
    os.kill(os.getpid(), signal.SIGKILL)


def _measure_one(path: str, out_dir: str, options: dict[str, Any], unsafe: bool) -> Outcome:
    """Load, measure and record one checkpoint (runs in a worker process)."""
    from probe.replay.sharded import measure_state

    out, key = Path(out_dir), checkpoint_key(path)
    try:
        stats = file_stats(path)  # before reading: a file rewritten meanwhile gets another identity next run
        digest = content_digest(path)
        checkpoint = load_checkpoint(path, unsafe=unsafe)
        preset, settings = Options(**options).for_file(checkpoint.layers, genprob=checkpoint.format == "genprob")
        report = measure_state(checkpoint.state_dict, layers=preset, options=settings)
    except Exception as error:
        return _failed(path, out_dir, f"{type(error).__name__}: {error}")
    position = {layer.name: (index, len(layer.shape)) for index, layer in enumerate(report.layers)}
    layers = [
        {"layer_index": position[str(row["layer"])][0], "ndim": position[str(row["layer"])][1], **row} for row in report.records()
    ]
    record = {
        "key": key,
        "file": {"size": sum(stat.st_size for stat in stats), "mtime_ns": max(stat.st_mtime_ns for stat in stats)},
        "checkpoint": {**checkpoint.metadata(), "path": path, "preset": preset, "n_layers": len(report.layers),
                       "sha256": digest},
        "performance": checkpoint.performance,
        "network": report.network,
        "layers": layers,
    }
    write_atomic(out / RECORDS / f"{key}{SEPARATOR}{identity(stats)}.json", json.dumps(record).encode())
    (out / ERRORS / f"{key}.json").unlink(missing_ok=True)
    nonfinite = report.nonfinite_layers  # a diverged run is data: recorded, its measures NaN
    warning = f"weights not finite (NaN/Inf) in {', '.join(map(repr, nonfinite))}: recorded with NaN measures" if nonfinite else None
    return Outcome(path, "measured", warning=warning)


def _failed(path: str, out_dir: str, message: str) -> Outcome:
    """Record that ``path`` could not be measured (``errors/KEY.json``; retried next run)."""
    write_atomic(Path(out_dir) / ERRORS / f"{checkpoint_key(path)}.json", json.dumps({"path": path, "error": message}).encode())
    return Outcome(path, "failed", message)
