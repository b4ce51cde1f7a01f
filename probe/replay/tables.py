"""The tables of a replay directory, rebuilt from its records: CSV, optional Parquet, GenProb CSVs."""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from probe._atomic import atomic_write
from probe.aggregate import HEADLINE_NAMES, TAIL_MEASURES
from probe.quantities import QUANTITIES
from probe.replay.genprob import PERFORMANCE_COLUMNS, write_genprob_csv
from probe.replay.store import (
    ERRORS,
    LAYER_KEYS,
    RECORDS,
    SEPARATOR,
    CorruptRecordError,
    exclusive,
    read_error,
    read_record,
)

log = logging.getLogger(__name__)

CHECKPOINTS_CSV = "checkpoints.csv"
LAYERS_CSV = "layers.csv"
ERRORS_CSV = "errors.csv"
DUPLICATES_CSV = "duplicates.csv"
CHECKPOINTS_PARQUET = "checkpoints.parquet"
LAYERS_PARQUET = "layers.parquet"
GENPROB_DIR = "genprob_csv"
NETWORK_COLUMNS = HEADLINE_NAMES
META_COLUMNS = ("path", "format", "run", "model_id", "optimizer", "dataset", "hparams", "epoch", "preset", "n_layers", "sha256")
DUPLICATE_COLUMNS = ("path", "same_as", "reason")
LAYER_COLUMNS = ("path", "run", "epoch", *LAYER_KEYS, *TAIL_MEASURES)
CHECKPOINT_COLUMNS = (*META_COLUMNS, *PERFORMANCE_COLUMNS, *NETWORK_COLUMNS)
_INT_COLUMNS = frozenset({"epoch", "n_layers", "layer_index", "ndim", "rows", "cols", "weight", "kept"})
_FLOAT_COLUMNS = frozenset({*PERFORMANCE_COLUMNS, *NETWORK_COLUMNS, *QUANTITIES, "SQ", *TAIL_MEASURES})
_PARQUET_ROWS = 1 << 16  # rows per Parquet row group: bounds the memory of writing


@dataclass(frozen=True)
class Tables:
    """Paths of the consolidated tables and their sizes (``parquet``: empty unless asked for;
    ``n_duplicates``: checkpoints left out as duplicates of one in the tables, listed in ``duplicates``)."""

    checkpoints: Path
    layers: Path
    errors: Path
    genprob: tuple[Path, ...]
    n_checkpoints: int
    n_errors: int
    parquet: tuple[Path, ...] = ()
    duplicates: Path | None = None
    n_duplicates: int = 0


def consolidate(out_dir: str | os.PathLike[str], *, genprob_csv: bool = False, parquet: bool = False) -> Tables:
    """Rebuild ``checkpoints.csv``, ``layers.csv`` and ``errors.csv`` from the records.

    Records are read one at a time, so memory holds one record and the sort and duplicate
    keys (a few hundred bytes per checkpoint), whatever the family's size. Checkpoints that
    duplicate an earlier one (``duplicate_keys``) are left out of the tables and listed in
    ``duplicates.csv`` (``path, same_as, reason``), with a warning.

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
    with exclusive(out):
        keys, duplicates = _sort_keys(out)
        recorded = {key for _, key, _ in keys} | {key for key, _ in duplicates}
        duplicates.sort(key=lambda item: item[1][0])
        errors = [e for p in sorted((out / ERRORS).glob("*.json")) if p.stem not in recorded and (e := read_error(p))]
        parquet_paths = (out / CHECKPOINTS_PARQUET, out / LAYERS_PARQUET)
        with ExitStack() as stack:
            add_checkpoint = [stack.enter_context(_csv_table(out / CHECKPOINTS_CSV, CHECKPOINT_COLUMNS))]
            add_layer = [stack.enter_context(_csv_table(out / LAYERS_CSV, LAYER_COLUMNS))]
            if parquet:
                add_checkpoint.append(stack.enter_context(_parquet_table(parquet_paths[0], CHECKPOINT_COLUMNS)))
                add_layer.append(stack.enter_context(_parquet_table(parquet_paths[1], LAYER_COLUMNS)))
            for _, _, path in keys:
                record = read_record(path)
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
        with _csv_table(out / DUPLICATES_CSV, DUPLICATE_COLUMNS) as add_duplicates:
            add_duplicates([row for _, row in duplicates])
        tables = Tables(
            checkpoints=out / CHECKPOINTS_CSV,
            layers=out / LAYERS_CSV,
            errors=out / ERRORS_CSV,
            genprob=_write_genprob_tables(out, keys) if genprob_csv else (),
            n_checkpoints=len(keys),
            n_errors=len(errors),
            parquet=parquet_paths if parquet else (),
            duplicates=out / DUPLICATES_CSV,
            n_duplicates=len(duplicates),
        )
    if duplicates:
        log.warning("%s: %d duplicate checkpoint(s) counted once (listed in %s): %s", out, len(duplicates), DUPLICATES_CSV,
                    "; ".join(f"{path} = {same}" for _, (path, same, _) in duplicates[:3]) + (" ..." if len(duplicates) > 3 else ""))
    log.info("%s: %d checkpoints, %d errors", out, tables.n_checkpoints, tables.n_errors)
    return tables


def _sort_keys(out: Path) -> tuple[list[tuple[tuple, str, Path]], list[tuple[str, list[str]]]]:
    """``(table order, key, record path)`` of each checkpoint's record, sorted, and the
    ``(key, [path, same_as, reason])`` of each checkpoint left out as a duplicate of an earlier
    one in that order (``duplicate_keys``; its record stays, it is not damaged).

    Of several records of one key (a merge of directories that measured different versions
    of one file), the one of the most recent file is kept and the others are removed.
    """
    chosen: dict[str, tuple[tuple, Path, int, list[tuple]]] = {}
    corrupt = []
    for entry in sorted(os.scandir(out / RECORDS), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        path = Path(entry.path)
        try:
            record = read_record(path)
            meta, mtime = record["checkpoint"], record["file"]["mtime_ns"]
            order = _record_order(meta)
        except CorruptRecordError as error:
            corrupt.append(str(error))
            path.unlink(missing_ok=True)
            continue
        key, candidate = path.name.split(SEPARATOR)[0], (order, path, mtime, duplicate_keys(meta, path=False))
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
    kept: list[tuple[tuple, str, Path]] = []
    duplicates: list[tuple[str, list[str]]] = []
    seen: dict[tuple, str] = {}
    for order, key, path, identities in sorted((order, key, path, ids) for key, (order, path, _, ids) in chosen.items()):
        found = next((identity for identity in identities if identity in seen), None)
        if found is None:
            kept.append((order, key, path))
            seen.update(dict.fromkeys(identities, order[-1]))
        else:
            duplicates.append((key, [order[-1], seen[found], found[0]]))
    return kept, duplicates


def duplicate_keys(meta: dict, *, path: bool = True) -> list[tuple]:
    """What makes two checkpoint rows one checkpoint: the same path (unless ``path=False``:
    records are one per path already); the same file content (``sha256``, where recorded);
    for GenProb files, the same run and epoch (the file name names the training run: a copy
    elsewhere is the same model)."""
    keys: list[tuple] = [("the same path", meta["path"])] if path else []
    if meta.get("sha256"):
        keys.append(("the same content (sha256)", meta["sha256"]))
    if meta.get("format") == "genprob" and meta.get("epoch") is not None:
        keys.append(("the same GenProb run and epoch", meta["run"], meta["epoch"]))
    return keys


def _record_order(meta: dict) -> tuple:
    """Table order: dataset, run, epoch (none first), path."""
    return (meta["dataset"] or "", meta["run"], -1 if meta["epoch"] is None else meta["epoch"], meta["path"])


@contextmanager
def _csv_table(path: Path, columns: Sequence[str]) -> Iterator[Callable[[list[list]], None]]:
    """Yield a function adding rows (lists in ``columns`` order; ``None`` is written empty,
    NaN as ``nan``); the file appears (atomically) only if all went well. UTF-8, and a path's
    non-UTF-8 bytes (``surrogateescape``) are written as they are."""
    with atomic_write(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
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
        models = ((r["performance"], r["checkpoint"]["model_id"], _genprob_rows(r["layers"])) for r in (read_record(path) for _, path in group))
        written.append(write_genprob_csv(out / GENPROB_DIR / f"results-{dataset}-{epoch}.csv", models))
    return tuple(written)


def _genprob_rows(layers: list[dict]) -> list[dict[str, object]]:
    """Tidy layer rows of one checkpoint back to ``Report.genprob_rows()`` form."""
    wide: dict[int, dict[str, object]] = {}
    for row in layers:
        target = wide.setdefault(row["layer_index"], {"layer": row["layer"], "type": row["ndim"]})
        u, v = row["unfolding"], row["variant"]
        target.update({f"{u}_{q}_{v}": row[q] for q in QUANTITIES})
        target[f"{u}_weight_{v}"] = row["weight"]
    return [wide[i] for i in sorted(wide)]
