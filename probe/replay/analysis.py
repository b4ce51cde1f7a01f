"""The paper's analysis: per epoch, correlate each network measure with test accuracy and
with the generalisation gap across models (Pearson, Spearman, Kendall, with counts).

Works on the tables ``probe replay`` writes. Measures are the headline names
(``E_L2_BE`` …) or any aggregate ``{ER|SQ|spec|fro}_{mean|L2|p|wmean|wp}_{t0..t7}_{BE|AE}``,
recomputed from ``layers.csv`` (or ``layers.parquet``) when not a column of
``checkpoints.csv``. The layer table is read in chunks of whole checkpoints, so a report
needs memory for one chunk and the checkpoint table, whatever the family's size.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probe.aggregate import HEADLINE_NAMES, ae_defined, aggregate, parse_measure_name, transform
from probe.quantities import QUANTITIES
from probe.replay.genprob import PERFORMANCE_COLUMNS
from probe.replay.tables import CHECKPOINTS_CSV, LAYERS_CSV, LAYERS_PARQUET, NETWORK_COLUMNS, duplicate_keys

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

TARGETS = ("test_acc", "gap")
METHODS = ("pearson", "spearman", "kendall")
CORRELATIONS_CSV = "correlations.csv"
CHUNK_ROWS = 1 << 19
"""Layer rows read at a time (plus the rows of one checkpoint that straddles the chunk's end)."""
_TEXT_COLUMNS = {"path": str, "format": str, "run": str, "model_id": str, "optimizer": str, "dataset": str, "hparams": str, "preset": str}


def load_tables(out_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``checkpoints.csv`` and ``layers.csv`` of a replay directory (floats exactly as written).

    Returns
    -------
    (checkpoints, layers)
        ``model_id``, ``hparams`` and the other text columns stay strings (codes keep leading zeros).
    """
    return load_checkpoints(out_dir), load_layers(out_dir)


def load_checkpoints(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``checkpoints.csv`` (one row per checkpoint) of a replay directory.

    ``ValueError`` naming the file, line and column where the table is damaged: no header
    (``path`` or ``epoch`` missing), a number column holding text, a fractional epoch.
    """
    path = Path(out_dir) / CHECKPOINTS_CSV
    table = _read_csv(path)
    missing = [column for column in _REQUIRED if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r}: its first line must be the header "
                         f"(path,format,run,...), and reads {','.join(map(str, table.columns))[:200]!r}")
    return _numbers(table, path, [c for c in table.columns if c in _NUMBER_COLUMNS])


_REQUIRED = ("path", "epoch")
_NUMBER_COLUMNS = frozenset({"epoch", "n_layers", *PERFORMANCE_COLUMNS, *NETWORK_COLUMNS})
_INTEGER_COLUMNS = frozenset({"epoch", "n_layers", "layer_index"})


def _numbers(table: pd.DataFrame, path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """``table`` with ``columns`` as numbers; ``ValueError`` naming the file, line and column of
    the first cell that is not one (or, in an integer column, not a whole number)."""
    import pandas as pd

    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = (values.isna() & table[column].notna()).to_numpy()
        what = "a number"
        if not bad.any() and column in _INTEGER_COLUMNS:
            bad, what = (values.notna() & (values % 1 != 0)).to_numpy(), "a whole number"
        if bad.any():
            row = int(np.argmax(bad))
            line = int(table.index[row]) + 2  # the header is line 1
            raise ValueError(f"{path}: line {line}, column {column!r}: {str(table[column].iloc[row])!r} is not {what}")
        table[column] = values
    return table


def drop_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (checkpoint rows) less the rows that repeat an earlier checkpoint: the same
    path, the same file content (``sha256``) or the same GenProb run and epoch
    (``probe.replay.tables.duplicate_keys``); each left out is named in a warning."""
    seen: dict[tuple, str] = {}
    keep, dropped = [], []
    for row in table.to_dict("records"):
        meta = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        epoch = meta.get("epoch")
        meta["epoch"] = None if epoch is None else int(epoch)
        keys = duplicate_keys(meta)
        found = next((key for key in keys if key in seen), None)
        keep.append(found is None)
        if found is None:
            seen.update(dict.fromkeys(keys, str(meta["path"])))
        else:
            dropped.append(f"{meta['path']} ({found[0]} as {seen[found]})")
    if dropped:
        log.warning("%d duplicate checkpoint row(s) counted once: %s", len(dropped), "; ".join(dropped[:3]) + (" ..." if len(dropped) > 3 else ""))
    return table[np.array(keep, dtype=bool)]


def load_layers(out_dir: str | os.PathLike[str], *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read ``layers.csv`` of a replay directory, optionally only ``columns`` (it can be large)."""
    return _read_csv(Path(out_dir) / LAYERS_CSV, columns=columns)


def iter_layers(
    out_dir: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The layer table of a replay directory in chunks, each holding whole checkpoints.

    Reads ``layers.parquet`` where the replay wrote one, else ``layers.csv``.

    Parameters
    ----------
    columns:
        Columns to read (``path`` is always read); default all.
    chunk_rows:
        About how many rows each chunk has.

    Yields
    ------
    DataFrame
        Consecutive rows; a checkpoint's rows are all in one chunk.
    """
    import pandas as pd

    wanted = None if columns is None else list(dict.fromkeys(["path", *columns]))
    parquet = Path(out_dir) / LAYERS_PARQUET
    if parquet.is_file():
        import pyarrow.parquet as pq

        chunks = (batch.to_pandas() for batch in pq.ParquetFile(parquet).iter_batches(batch_size=chunk_rows, columns=wanted))
    else:
        csv_path = Path(out_dir) / LAYERS_CSV
        chunks = (_numbers(chunk, csv_path, [c for c in chunk.columns if c in _LAYER_NUMBERS])
                  for chunk in _read_csv(csv_path, columns=wanted, chunksize=chunk_rows))
    seen: set[str] = set()
    rest = None
    for chunk in chunks:
        if rest is not None:
            chunk = pd.concat([rest, chunk], ignore_index=True)
        paths = chunk["path"].to_numpy()
        last = paths == paths[-1]
        rest = chunk[last]
        if not last.all():
            yield _checked(chunk[~last], seen)
    if rest is not None and len(rest):
        yield _checked(rest, seen)


_LAYER_NUMBERS = frozenset({"layer_index", "ndim", "rows", "cols", "weight", "kept", *QUANTITIES, "SQ"})


_LAYER_KEY = ["path", "layer_index", "unfolding", "variant"]
"""What one layer-table row is about: a row repeated with the same key is a repeated block."""


def _checked(chunk: pd.DataFrame, seen: set[str]) -> pd.DataFrame:
    """``chunk``, after checking that none of its checkpoints appeared in an earlier chunk,
    with repeated rows (the same key, the same values: a block written twice) counted once,
    with a warning; the same key with other values is refused."""
    paths = set(chunk["path"].unique())
    if not paths.isdisjoint(seen):
        raise ValueError(f"the layer table is not grouped by checkpoint (rows of {min(paths & seen)!r} are apart): "
                         "rebuild it with `probe merge DIR`")
    seen.update(paths)
    if not set(_LAYER_KEY) <= set(chunk.columns):
        return chunk
    repeated = chunk.duplicated(_LAYER_KEY)
    if not repeated.any():
        return chunk
    conflicting = chunk.duplicated(_LAYER_KEY, keep=False) & ~chunk.duplicated(keep=False)
    if conflicting.any():
        row = chunk[conflicting].iloc[0]
        raise ValueError(f"the layer table holds {row['path']!r} layer {row['layer_index']} ({row['unfolding']}, "
                         f"{row['variant']}) twice with different values: rebuild it with `probe merge DIR`")
    log.warning("the layer table repeats %d rows of %s; each counted once",
                int(repeated.sum()), ", ".join(map(repr, sorted(chunk.loc[repeated, "path"].unique())[:3])))
    return chunk[~repeated]


def layer_measures(
    out_dir: str | os.PathLike[str],
    names: Sequence[str],
    *,
    paths: Collection[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Recompute network measures per checkpoint from a replay directory's layer table, chunk by chunk.

    Parameters
    ----------
    names:
        Headline or aggregate names (``probe.aggregate.parse_measure_name``).
    paths:
        Only these checkpoints (``path`` values); default all.
    chunk_rows:
        As in ``iter_layers``.

    Returns
    -------
    DataFrame
        Indexed by checkpoint ``path``, one column per name.
    """
    import pandas as pd

    needed = sorted({parse_measure_name(name).measure for name in names})
    wanted = set(paths) if paths is not None else None
    parts = []
    columns = ["layer_index", "unfolding", "variant", "weight", "kept", *sorted({"S", *needed})]  # kept, S: the AE rule
    for chunk in iter_layers(out_dir, columns=columns, chunk_rows=chunk_rows):
        if wanted is not None:
            chunk = chunk[chunk["path"].isin(wanted)]
        if len(chunk):
            parts.append(pd.concat([network_measure(chunk, name) for name in names], axis=1))
    if not parts:
        return pd.DataFrame(columns=list(names), index=pd.Index([], name="path"), dtype=float)
    return pd.concat(parts)


def _read_csv(path: Path, *, columns: Sequence[str] | None = None, chunksize: int | None = None) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path.parent)!r} has no {path.name}: run `probe replay ... --out {path.parent}` (or `probe merge`) first"
        )
    if columns is not None:
        header = pd.read_csv(path, nrows=0, encoding="utf-8", encoding_errors="backslashreplace").columns
        missing = [column for column in columns if column not in header]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r}: its first line must be the header, "
                             f"and reads {','.join(map(str, header))[:200]!r}")
    return pd.read_csv(path, usecols=list(columns) if columns is not None else None, dtype=_TEXT_COLUMNS,
                       keep_default_na=False, na_values=["", "nan", "NaN"], float_precision="round_trip", chunksize=chunksize,
                       encoding="utf-8", encoding_errors="backslashreplace")


def filter_checkpoints(
    table: pd.DataFrame,
    *,
    optimizers: Sequence[str] = (),
    datasets: Sequence[str] = (),
    hparams: Sequence[str] = (),
) -> pd.DataFrame:
    """Keep the checkpoints of the given optimizers and datasets that carry every hparam token.

    Parameters
    ----------
    table:
        ``checkpoints.csv`` as a DataFrame.
    optimizers, datasets:
        Accepted values (any of); empty accepts all.
    hparams:
        Tokens that must all be among a checkpoint's ``hparams`` (e.g. ``"lr0.08"``, or
        ``"lr=0.1"`` for a Lightning hyperparameter); empty accepts all.

    Returns
    -------
    DataFrame
        The matching rows; ``ValueError`` naming the filter if none match.
    """
    keep = np.ones(len(table), dtype=bool)
    for column, wanted in (("optimizer", optimizers), ("dataset", datasets)):
        if wanted:
            keep &= table[column].isin(list(wanted)).to_numpy()
            _check_nonempty(keep, column, wanted, table[column])
    if hparams:
        tokens = table["hparams"].fillna("").map(lambda text: set(text.split()))
        keep &= tokens.map(lambda have: set(hparams) <= have).to_numpy()
        _check_nonempty(keep, "hparams", hparams, table["hparams"])
    return table[keep]


def _check_nonempty(keep: np.ndarray, column: str, wanted: Sequence[str], values: pd.Series) -> None:
    if not keep.any():
        seen = sorted(set(values.dropna().astype(str)))[:20]
        raise ValueError(f"no checkpoint matches {column}={list(wanted)}; values present: {seen}")


def network_measure(layers: pd.DataFrame, name: str) -> pd.Series:
    """Recompute a network measure per checkpoint from the tidy layer table (SPEC §5).

    Parameters
    ----------
    layers:
        ``layers.csv`` as a DataFrame.
    name:
        A headline or aggregate name (``probe.aggregate.parse_measure_name``).

    Returns
    -------
    Series
        Indexed by checkpoint ``path``.
    """
    _, measure, how, t, variant = parse_measure_name(name)
    rows = layers[layers["variant"] == variant].sort_values(["path", "unfolding", "layer_index"])  # "in" before "out"

    def one(group: pd.DataFrame) -> float:
        values, weights = group[measure].to_numpy(np.float64), group["weight"].to_numpy(np.float64)
        return transform(aggregate(values, weights, how), t, len(values))

    result = rows.groupby("path", sort=False)[[measure, "weight"]].apply(one).rename(name)
    return result.where(_ae_defined(layers).reindex(result.index, fill_value=False)) if variant == "AE" else result


def _ae_defined(layers: pd.DataFrame) -> pd.Series:
    """Per checkpoint ``path``: whether its AE aggregates are defined (SPEC §5, as ``Report.ae_defined``):
    EVBMF kept a component (``kept`` > 0 on an AE row) in at least ``AE_MIN_KEPT_SHARE`` of the
    finite unfoldings (a defined ``S`` on a BE row)."""
    kept = (layers.loc[layers["variant"] == "AE", "kept"] > 0).groupby(layers["path"]).sum()
    finite = layers.loc[layers["variant"] == "BE", "S"].notna().groupby(layers["path"]).sum()
    return ae_defined(kept.reindex(finite.index, fill_value=0), finite)


def with_measures(checkpoints: pd.DataFrame, layers: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``checkpoints`` with a column for each of ``names`` (computed from ``layers`` where absent)."""
    table = checkpoints.copy()
    missing = [name for name in names if name not in table.columns]
    if missing:
        layers = layers[layers["path"].isin(table["path"])]
    for name in missing:
        table[name] = table["path"].map(network_measure(layers, name))
    return table


def correlations(
    table: pd.DataFrame,
    *,
    measures: Sequence[str] = HEADLINE_NAMES,
    targets: Sequence[str] = TARGETS,
    by: Sequence[str] = ("dataset",),
    min_count: int = 3,
) -> pd.DataFrame:
    """Correlation of each measure with each target, across checkpoints, per epoch and group.

    Parameters
    ----------
    table:
        One row per checkpoint with ``epoch``, the ``measures`` and ``targets`` columns.
    measures:
        Measure columns. Default: the eight headline measures.
    targets:
        Performance columns, default ``("test_acc", "gap")``.
    by:
        Extra grouping columns, default ``("dataset",)`` (e.g. add ``"optimizer"``).
    min_count:
        Fewer (finite) pairs than this give NaN coefficients. Default 3.

    Returns
    -------
    DataFrame
        Columns ``*by, epoch, measure, target, models, n, pearson, pearson_p, spearman,
        spearman_p, kendall, kendall_p``; one row per group × epoch × measure × target.
        ``models`` counts the group's checkpoints at that epoch; pairs where either value
        is NaN or infinite are left out (``n`` counts the rest).
    """
    import pandas as pd
    from scipy import stats

    missing = [c for c in (*by, "epoch", *measures, *targets) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}; present: {list(table.columns)}")
    if min_count < 2:
        raise ValueError(f"min_count must be >= 2, got {min_count!r}")
    rows = []
    keys = [*by, "epoch"]
    for group_key, group in table[table["epoch"].notna()].groupby(keys, dropna=False, sort=True):
        labels = dict(zip(keys, group_key if isinstance(group_key, tuple) else (group_key,)))
        labels["epoch"] = int(labels["epoch"])
        for measure in measures:
            for target in targets:
                x, y = group[measure].to_numpy(np.float64), group[target].to_numpy(np.float64)
                ok = np.isfinite(x) & np.isfinite(y)
                x, y = x[ok], y[ok]
                row = {**labels, "measure": measure, "target": target, "models": len(group), "n": int(ok.sum())}
                if len(x) < min_count or np.ptp(x) == 0 or np.ptp(y) == 0:
                    row.update(dict.fromkeys([f"{m}{s}" for m in METHODS for s in ("", "_p")], math.nan))
                else:
                    for method, test in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
                        result = test(x, y)
                        row[method], row[f"{method}_p"] = float(result[0]), float(result[1])
                rows.append(row)
    columns = [*keys, "measure", "target", "models", "n", *(f"{m}{s}" for m in METHODS for s in ("", "_p"))]
    return pd.DataFrame(rows, columns=columns)


_TARGET_NEEDS = {"test_acc": "a test accuracy", "gap": "a test and a train accuracy (gap = test_acc - train_acc)"}


def _check_target(table: pd.DataFrame, target: str, out_dir: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` naming ``target`` when no checkpoint has a value for it: nothing to correlate."""
    if target not in table.columns:
        raise ValueError(f"unknown target {target!r}: checkpoints.csv has no such column; use test_acc, gap or one of {list(table.columns)}")
    if np.isfinite(table[target].to_numpy(np.float64)).any():
        return
    formats = ", ".join(f"{name} ({count})" for name, count in table["format"].value_counts().items()) if "format" in table else "?"
    raise ValueError(
        f"nothing to correlate: none of the {len(table)} checkpoints in {str(out_dir)!r} has {_TARGET_NEEDS.get(target, target)}, "
        f"so the target {target!r} is empty (formats: {formats}). Accuracies come from GenProb checkpoints "
        "(save_genprob_checkpoint) and from .pt/.pth dicts holding a 'performance' dict (test_acc, test_loss, "
        "train_acc, train_loss) beside the state dict; Lightning .ckpt and .safetensors files carry none"
    )


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote (``correlations_csv``, ``plots``) and the frames behind them:
    ``checkpoints`` (filtered, with every measure column) and ``correlations``."""

    correlations_csv: Path
    plots: tuple[Path, ...]
    checkpoints: pd.DataFrame
    correlations: pd.DataFrame


REPORT_FILES = (CORRELATIONS_CSV, "corr_*.png", "scatter_*.png", "spectra_*.png")
"""What ``probe report`` writes into its directory (names and patterns)."""


def _refuse_foreign_report_dir(target: Path) -> None:
    """Raise ``ValueError`` if ``target`` holds anything (hidden files aside) that a report does not
    write: its files would be overwritten among someone else's; or if it is a file."""
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out {str(target)!r} is a file; give a directory for the report (new or empty)")
    if not target.is_dir():
        return
    foreign = sorted(name for name in os.listdir(target) if not name.startswith(".")
                     and not any(fnmatch.fnmatchcase(name, pattern) for pattern in REPORT_FILES))
    if foreign:
        raise ValueError(
            f"refusing to write the report into {str(target)!r}: it holds files a report does not write "
            f"({', '.join(map(repr, foreign[:5]))}{' ...' if len(foreign) > 5 else ''}); give a new or empty --out"
        )


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    report_dir: str | os.PathLike[str] | None = None,
    measures: Sequence[str] = HEADLINE_NAMES,
    targets: Sequence[str] = TARGETS,
    by: Sequence[str] = ("dataset",),
    optimizers: Sequence[str] = (),
    datasets: Sequence[str] = (),
    hparams: Sequence[str] = (),
    plot_methods: Sequence[str] = ("spearman",),
    scatter_epochs: Sequence[int] | None = None,
    color_by: str = "optimizer",
    plots: bool = True,
) -> ReportFiles:
    """Correlations by epoch (CSV) and the paper-style plots for a replay directory.

    Parameters
    ----------
    out_dir:
        A ``probe replay`` output directory.
    report_dir:
        Where to write; default ``{out_dir}/report``.
    measures, targets, by:
        As in ``correlations``.
    optimizers, datasets, hparams:
        Filters, as in ``filter_checkpoints``.
    plot_methods:
        Coefficients to plot against epoch (one PNG per target and method; Fig. 5c/d).
    scatter_epochs:
        Epochs for measure-vs-target scatter panels (Fig. 5a/b); default the first and last epoch.
    color_by:
        Column that colours the scatter points (default ``optimizer``).
    plots:
        Draw PNGs (default ``True``); ``False`` writes only the CSV.

    Returns
    -------
    ReportFiles

    Every argument and the tables are checked before anything is written: a damaged table
    raises ``ValueError`` naming its file, line and column; so does a ``report_dir`` holding
    files a report does not write (a previous report's files are replaced). Rows that repeat a checkpoint
    (``drop_duplicates``) are counted once, with a warning.
    """
    for method in plot_methods:
        if method not in METHODS:
            raise ValueError(f"unknown correlation method {method!r}; choose from {METHODS}")
    for name in measures:
        parse_measure_name(name)
    checkpoints = drop_duplicates(load_checkpoints(out_dir))
    table = filter_checkpoints(checkpoints, optimizers=optimizers, datasets=datasets, hparams=hparams)
    absent = [column for column in (*by, *([color_by] if plots else [])) if column not in table.columns]
    if absent:
        raise ValueError(f"{Path(out_dir) / CHECKPOINTS_CSV} has no column {absent[0]!r} (--by / --color-by); "
                         f"columns: {list(table.columns)}")
    epochs = sorted(int(e) for e in table["epoch"].dropna().unique())
    if plots and scatter_epochs is not None:
        absent_epochs = sorted({int(e) for e in scatter_epochs} - set(epochs))
        if absent_epochs:
            raise ValueError(f"scatter epoch {', '.join(map(str, absent_epochs))} is not in the table; epochs present: {epochs}")
    missing = [name for name in measures if name not in table.columns]
    if missing:
        computed = layer_measures(out_dir, missing, paths=set(table["path"]))
        table = table.assign(**{name: table["path"].map(computed[name]) for name in missing})
    for target in targets:
        _check_target(table, target, out_dir)
    result = correlations(table, measures=measures, targets=targets, by=by)
    target_dir = Path(report_dir) if report_dir is not None else Path(out_dir) / "report"
    _refuse_foreign_report_dir(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    csv_path = target_dir / CORRELATIONS_CSV
    result.to_csv(csv_path, index=False)
    drawn: list[Path] = []
    if plots:
        from probe.replay.plots import plot_correlation_by_epoch, plot_scatter

        for target in targets:
            for method in plot_methods:
                drawn.append(plot_correlation_by_epoch(result, target_dir / f"corr_{target}_{method}.png", target=target, method=method, by=by))
        chosen = sorted(set(scatter_epochs)) if scatter_epochs is not None else sorted({epochs[0], epochs[-1]}) if epochs else []
        for epoch in chosen:
            for target in targets:
                drawn.append(plot_scatter(table, target_dir / f"scatter_{target}_epoch{epoch}.png", epoch=epoch,
                                          measures=measures, target=target, color_by=color_by))
    log.info("report: %s and %d plots in %s", csv_path.name, len(drawn), target_dir)
    return ReportFiles(csv_path, tuple(drawn), table, result)
