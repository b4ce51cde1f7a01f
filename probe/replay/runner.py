"""Replay a family of checkpoints into tables: parallel, resumable, shardable.

Layout of an output directory::

    replay.json        the options the values depend on (a re-run must use the same)
    records/KEY.json   one file per measured checkpoint, written atomically
    errors/KEY.json    one file per checkpoint that could not be read or measured
    checkpoints.csv    one row per checkpoint: metadata, performance, the 8 network measures
    layers.csv         one row per checkpoint × layer × unfolding × variant
    errors.csv         path, error of every checkpoint that failed
    genprob_csv/       (optional) the reference's per-layer CSV, one file per dataset and epoch

Why a run can be killed at any point (even ``kill -9``) and resumed without losing or
duplicating a row: a checkpoint's result exists only as ``records/KEY.json``, ``KEY`` a
hash of the checkpoint's absolute path, and that file appears through ``os.replace`` of
a complete, fsynced temporary file — so it is either whole or absent. A re-run skips the
keys that exist and measures the rest; the tables are rebuilt from the records, one row
set per key, in a fixed order.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from probe._atomic import atomic_write
from probe.evbmf import DEFAULT_XATOL
from probe.replay.genprob import PERFORMANCE_COLUMNS, write_genprob_csv
from probe.replay.readers import is_checkpoint_file, load_checkpoint

log = logging.getLogger(__name__)

MANIFEST = "replay.json"
RECORDS = "records"
ERRORS = "errors"
CHECKPOINTS_CSV = "checkpoints.csv"
LAYERS_CSV = "layers.csv"
ERRORS_CSV = "errors.csv"
GENPROB_DIR = "genprob_csv"
NETWORK_COLUMNS = ("E_L2_BE", "SQ_p_BE", "S_p_BE", "F_p_BE", "E_L2_AE", "SQ_p_AE", "S_p_AE", "F_p_AE")
META_COLUMNS = ("path", "format", "run", "model_id", "optimizer", "dataset", "hparams", "epoch", "preset", "n_layers")
LAYER_COLUMNS = ("path", "run", "epoch", "layer_index", "layer", "ndim", "unfolding", "variant",
                 "rows", "cols", "weight", "kept", "S", "C", "ER", "spec", "fro", "SQ")
_VERSION = 1


@dataclass(frozen=True)
class Options:
    """The options that change measured values; an output directory holds one set.

    ``layers``: a preset forced on every file, or ``None`` for each file's own (``genprob``
    for GenProb files, ``auto`` otherwise). ``method``/``evbmf_xatol`` as in ``probe.measure``.
    """

    layers: str | None = None
    method: str = "auto"
    evbmf_xatol: float = DEFAULT_XATOL


@dataclass(frozen=True)
class Outcome:
    """What happened to one checkpoint: ``measured`` now, ``done`` in an earlier run, or ``failed``."""

    path: str
    status: Literal["measured", "done", "failed"]
    error: str | None = None


@dataclass(frozen=True)
class Tables:
    """Paths of the consolidated tables and their sizes."""

    checkpoints: Path
    layers: Path
    errors: Path
    genprob: tuple[Path, ...]
    n_checkpoints: int
    n_errors: int


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


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (0 ≤ K < N) into ``(K, N)``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like K/N with integers 0 <= K < N (e.g. 0/8), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"shard K/N must satisfy 0 <= K < N, got {text!r}")
    return index, count


def select_shard(paths: Sequence[Path], index: int, count: int) -> list[Path]:
    """Every ``count``-th path starting at ``index`` of the sorted list: shards are disjoint and cover it."""
    if not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= index < count, got index={index}, count={count}")
    return sorted(paths, key=str)[index::count]


def checkpoint_key(path: str | os.PathLike[str]) -> str:
    """The record name of a checkpoint: its file stem and a hash of its absolute path."""
    resolved = str(Path(path).resolve())
    stem = "".join(c if c.isalnum() or c in "-." else "_" for c in Path(resolved).name)[:80]
    return f"{stem}-{hashlib.sha1(resolved.encode()).hexdigest()[:16]}"


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
        Output directory; created if needed. Records already there are skipped (``done``).
    options:
        Layer preset override, singular-value method, EVBMF tolerance. Must match the
        options the directory was started with.
    workers:
        Worker processes (forkserver, or spawn where unavailable; each uses one torch
        thread). ``1`` measures in this process. Scripts using workers need the
        ``if __name__ == "__main__":`` guard.
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
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    out = Path(out_dir)
    _init_dir(out, options)
    done = {p.stem for p in (out / RECORDS).glob("*.json")}
    todo = []
    for path in map(Path, paths):
        if checkpoint_key(path) in done:
            yield Outcome(str(path.resolve()), "done")
        else:
            todo.append(str(path.resolve()))
    if workers == 1 or len(todo) <= 1:
        for path in todo:
            yield _measure_one(path, str(out), asdict(options), unsafe)
        return
    executor = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=_context(), initializer=_init_worker)
    try:
        futures = [executor.submit(_measure_one, path, str(out), asdict(options), unsafe) for path in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def replay(
    patterns: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    options: Options = Options(),
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    unsafe: bool = False,
    genprob_csv: bool = False,
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
        ``(K, N)``: measure only the K-th of N deterministic shards (``select_shard``).
    genprob_csv:
        Also write the reference-compatible per-layer CSVs. Default ``False``.

    Returns
    -------
    (outcomes, tables)
        One ``Outcome`` per selected checkpoint, and the consolidated ``Tables``.
    """
    patterns = [str(p) for p in patterns]
    paths = find_checkpoints(patterns)
    if shard is not None:
        paths = select_shard(paths, *shard)
    if not paths:
        raise ValueError(f"no checkpoint found in {patterns!r}" + (f" for shard {shard[0]}/{shard[1]}" if shard else ""))
    outcomes = list(iter_replay(paths, out_dir, options=options, workers=workers, unsafe=unsafe))
    return outcomes, consolidate(out_dir, genprob_csv=genprob_csv)


def merge(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    genprob_csv: bool = False,
) -> Tables:
    """Join the records of several output directories (e.g. one per shard) into ``out_dir``.

    Parameters
    ----------
    sources:
        Output directories of ``replay`` runs made with the same options (``out_dir`` itself
        may be among them; shards that shared one directory need only it).
    out_dir:
        Where the joined records and tables go.
    genprob_csv:
        Also write the reference-compatible per-layer CSVs.

    Returns
    -------
    Tables
        A checkpoint present in several sources appears once.
    """
    if not sources:
        raise ValueError("merge needs at least one source directory")
    out = Path(out_dir)
    manifests = []
    for source in map(Path, sources):
        manifest = source / MANIFEST
        if not manifest.is_file():
            raise ValueError(f"{str(source)!r} is not a replay output directory (no {MANIFEST})")
        manifests.append((source, json.loads(manifest.read_text())))
    first_source, first = manifests[0]
    for source, manifest in manifests[1:]:
        if manifest != first:
            raise ValueError(f"cannot merge {str(source)!r} (options {manifest}) with {str(first_source)!r} (options {first})")
    _init_dir(out, Options(**{k: v for k, v in first.items() if k != "version"}))
    for source, _ in manifests:
        if source.resolve() == out.resolve():
            continue
        for sub in (RECORDS, ERRORS):
            for item in sorted((source / sub).glob("*.json")):
                target = out / sub / item.name
                if not target.exists():
                    _write_atomic(target, item.read_bytes())
    return consolidate(out, genprob_csv=genprob_csv)


def consolidate(out_dir: str | os.PathLike[str], *, genprob_csv: bool = False) -> Tables:
    """Rebuild ``checkpoints.csv``, ``layers.csv`` and ``errors.csv`` from the records.

    Parameters
    ----------
    out_dir:
        A replay output directory.
    genprob_csv:
        Also write ``genprob_csv/results-{DATASET}-{EPOCH}.csv`` (SPEC §6), one file per
        dataset and epoch, models in run order.

    Returns
    -------
    Tables
    """
    out = Path(out_dir)
    files = sorted((out / RECORDS).glob("*.json"))
    # Records are read one at a time (twice, thrice with genprob_csv): a family of any size
    # needs memory only for one record and the sort keys.
    keys = [(_record_order(_read(path)["checkpoint"]), path) for path in files]
    ordered = [path for _, path in sorted(keys)]
    recorded = {path.stem for path in files}
    errors = [_read(p) for p in sorted((out / ERRORS).glob("*.json")) if p.stem not in recorded]

    columns = (*META_COLUMNS, *PERFORMANCE_COLUMNS, *NETWORK_COLUMNS)
    with _csv_table(out / CHECKPOINTS_CSV, columns) as add_checkpoint, _csv_table(out / LAYERS_CSV, LAYER_COLUMNS) as add_layer:
        for path in ordered:
            record = _read(path)
            meta = record["checkpoint"]
            add_checkpoint({**meta, **record["performance"], **record["network"]})
            for row in record["layers"]:
                add_layer({"path": meta["path"], "run": meta["run"], "epoch": meta["epoch"], **row})
    with _csv_table(out / ERRORS_CSV, ("path", "error")) as add_error:
        for error in sorted(errors, key=lambda e: e["path"]):
            add_error(error)
    tables = Tables(
        checkpoints=out / CHECKPOINTS_CSV,
        layers=out / LAYERS_CSV,
        errors=out / ERRORS_CSV,
        genprob=_write_genprob_tables(out, keys) if genprob_csv else (),
        n_checkpoints=len(files),
        n_errors=len(errors),
    )
    log.info("%s: %d checkpoints, %d errors", out, tables.n_checkpoints, tables.n_errors)
    return tables


def _init_dir(out: Path, options: Options) -> None:
    for sub in (RECORDS, ERRORS):
        (out / sub).mkdir(parents=True, exist_ok=True)
    wanted = {"version": _VERSION, **asdict(options)}
    manifest = out / MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if found != wanted:
            raise ValueError(
                f"output directory {str(out)!r} was made with options {found}, not {wanted}; "
                "use the same options to resume, or another --out"
            )
    else:
        _write_atomic(manifest, json.dumps(wanted, indent=1).encode())


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (workers fork from a server that imported torch once, before any thread
    pool exists) where available, else ``spawn``; never plain ``fork`` (torch threads can hang)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _measure_one(path: str, out_dir: str, options: dict[str, object], unsafe: bool) -> Outcome:
    """Load, measure and record one checkpoint (runs in a worker process)."""
    import probe

    out, key = Path(out_dir), checkpoint_key(path)
    try:
        checkpoint = load_checkpoint(path, unsafe=unsafe)
        preset = options["layers"] or checkpoint.layers
        report = probe.measure(checkpoint.state_dict, layers=preset, method=options["method"],  # type: ignore[arg-type]
                               evbmf_xatol=options["evbmf_xatol"], nonfinite="nan")  # type: ignore[arg-type]
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
        "checkpoint": {**checkpoint.metadata(), "path": path, "preset": preset, "n_layers": len(report.layers)},
        "performance": checkpoint.performance,
        "network": report.network,
        "layers": layers,
    }
    _write_atomic(out / RECORDS / f"{key}.json", json.dumps(record).encode())
    (out / ERRORS / f"{key}.json").unlink(missing_ok=True)
    return Outcome(path, "measured")


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _record_order(meta: dict) -> tuple:
    """Table order: dataset, run, epoch (none first), path."""
    return (meta["dataset"] or "", meta["run"], -1 if meta["epoch"] is None else meta["epoch"], meta["path"])


@contextmanager
def _csv_table(path: Path, columns: Sequence[str]) -> Iterator[Callable[[dict], None]]:
    """Yield a function adding one row; the file appears (atomically) only if all went well."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore", restval="")
        writer.writeheader()
        yield lambda row: writer.writerow({k: _cell(v) for k, v in row.items()})


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _write_genprob_tables(out: Path, keys: list[tuple[tuple, Path]]) -> tuple[Path, ...]:
    """One CSV per (dataset, epoch), models in run order; checkpoints without an epoch are left out."""
    by_group = sorted(((dataset or "unknown", epoch, run, p), path) for (dataset, run, epoch, p), path in keys if epoch >= 0)
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
