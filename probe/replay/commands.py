"""The ``probe replay``, ``probe merge`` and ``probe report`` subcommands (the CLI prints here)."""

from __future__ import annotations

import argparse

from probe._text import UNDEFINED, cell

_OUTPUTS = """\
outputs in --out DIR:
  checkpoints.csv  one row per checkpoint: path, format, run, model_id, optimizer, dataset,
                   hparams (space-separated tokens), epoch, preset, n_layers, sha256 (of the
                   file), test_acc,
                   test_loss, train_acc, train_loss, gap (= test_acc - train_acc; NaN when
                   the file has no performance), and the 8 network measures (E_L2_BE ... F_p_AE)
  layers.csv       one row per checkpoint x layer x unfolding (in/out) x variant (BE/AE):
                   rows, cols, weight, kept, S, C, ER, spec, fro, SQ, alpha, alphahat
                   (WeightWatcher's power-law fit, BE rows; 0 = undefined; SPEC section 10)
  errors.csv       path, error of each checkpoint that could not be read or measured
  duplicates.csv   path, same_as, reason of each checkpoint left out of the tables as a copy of
                   another (the same file content, or the same GenProb run and epoch)
  checkpoints.parquet, layers.parquet   with --parquet: the same tables, typed and columnar
  records/, errors/, replay.json   per-checkpoint results (what resuming relies on)
  genprob_csv/results-DATASET-EPOCH.csv   with --genprob-csv: the reference's per-layer CSV
"""

_REPLAY_EPILOG = _OUTPUTS + """
resuming: re-run the same command after an interruption (Ctrl-C, even kill -9): finished
checkpoints are skipped, failed ones retried; no row is lost or duplicated. Copies of one
checkpoint (same content, or same GenProb run and epoch) count once: see duplicates.csv.

examples:
  probe replay 'genprob/*_CIFAR10_epoch_*.pth.tar' --out runs/c10 --workers 8 --genprob-csv
  probe replay lightning_logs/version_0/checkpoints --out runs/mine
  # cluster array job with 16 tasks (K = 0..15), then join the shards:
  probe replay genprob/ --out runs/shard$K --shard $K/16
  probe merge runs/shard* --out runs/all
  # SLURM (sbatch --array=0-15): the shard from SLURM_ARRAY_TASK_ID and _COUNT
  probe replay genprob/ --out runs/shard$SLURM_ARRAY_TASK_ID --shard auto

an empty shard (more tasks than files) measures nothing and exits 0; runs into one --out
must use the same options (checked under a lock); a checkpoint rewritten since it was
measured (a new size or modification time) is measured again.
"""

_REPORT_EPILOG = """\
outputs in --out (default DIR/report):
  correlations.csv   per group (--by), epoch, measure and target: models (checkpoints), n (pairs
                     without NaN), pearson, pearson_p, spearman, spearman_p, kendall, kendall_p
  corr_TARGET_METHOD.png          correlation against epoch, one line per measure (Fig. 5c/d),
                                  models per epoch below, NaN pairs left out counted in the legend
  scatter_TARGET_epochE.png       measure against target at epoch E, one panel per measure (Fig. 5a/b)
  spectra_RUN_epochE.png          with --spectra N: each layer's log-log ESD and power-law tail, for
                                  the last epoch of the first N runs (those checkpoints are read again)
targets: test_acc, and gap = test_acc - train_acc (positive: better on test than on train).

measures: the headline names E_L2_BE SQ_p_BE S_p_BE F_p_BE (and _AE), or any aggregate
{ER|SQ|spec|fro}_{mean|L2|p|wmean|wp}_{t0..t7}_{BE|AE}, e.g. ER_mean_t0_AE; WeightWatcher's
power-law exponents {alpha|alphahat}_{agg}_{t0..t7}_BE, e.g. alpha_mean_BE (its summary alpha).

examples:
  probe report runs/c10
  probe report runs/c10 --optimizer AdaM --hparam wd0.0005 --scatter-epochs 5,10,70
  probe report runs/c10 --by optimizer --measures E_L2_BE,SQ_p_AE,ER_mean_t4_BE --methods spearman,kendall
"""


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 5,10, got {text!r}") from None


def _count(text: str) -> int:
    """A whole number ≥ 0 (``--spectra``): refused by argparse, before anything is written."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0: none), got {text!r}")
    return value


def subcommand(sub: argparse._SubParsersAction, name: str, *, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A ``probe`` subcommand whose description and epilog keep their line breaks."""
    return sub.add_parser(name, help=help, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


_REPLAY_TEXT = dict(
    help="measure every checkpoint of a family into tables (parallel, resumable, shardable)",
    description="Measure every checkpoint matched by the paths, directories or globs: GenProb files with the "
    "genprob layer preset, everything else (Lightning .ckpt, .pt/.pth state dicts, .safetensors) with auto.",
    epilog=_REPLAY_EPILOG,
)


_MERGE_TEXT = dict(
    help="join replay output directories (e.g. shards) and rebuild the tables",
    description="Join the per-checkpoint records of replay output directories (made with the same options) "
    "into --out and rebuild its tables. With one directory and no --out, rebuild that directory's tables "
    "(e.g. after shards shared it).",
    epilog=_OUTPUTS + "\nexamples:\n  probe merge runs/shard* --out runs/all --genprob-csv\n  probe merge runs/shared\n",
)


_REPORT_TEXT = dict(
    help="correlate measures with test accuracy and gap, epoch by epoch; CSV and plots",
    description="For each epoch (and --by group), correlate each measure with test accuracy and with the "
    "generalisation gap (test_acc - train_acc) across the checkpoints of a replay directory. Checkpoints "
    "without accuracies (Lightning .ckpt, .safetensors, state dicts without a 'performance' dict) give nothing to "
    "correlate: the command then fails (exit 2).",
    epilog=_REPORT_EPILOG,
)


def add_replay(sub: argparse._SubParsersAction) -> None:
    """Register ``probe replay``."""
    p = subcommand(sub, "replay", **_REPLAY_TEXT)
    p.add_argument("paths", nargs="+", metavar="PATH_OR_GLOB", help="checkpoint files, directories (searched recursively) or quoted globs")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; a replay directory is resumed; "
                   "a non-empty directory that is not one is refused)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1: in this process; at most the usable CPU cores); "
                   "a worker that dies (e.g. killed for memory) fails only its checkpoint")
    p.add_argument("--shard", default=None, metavar="K/N|auto",
                   help="measure only shard K of N (0 <= K < N) of the sorted file list; auto: from SLURM's array variables")
    p.add_argument("--layers", default=None, choices=["auto", "genprob"], help="force a layer preset (default: genprob for GenProb files, auto otherwise)")
    p.add_argument("--method", default="auto", choices=["auto", "gram64", "svd"], help="singular-value route (default auto)")
    p.add_argument("--evbmf-xatol", type=float, default=None, metavar="TOL",
                   help="EVBMF: the reference's local search to this absolute tolerance on sigma^2 (default: the reference's "
                        "1e-5 for GenProb files, otherwise the exact global minimum)")
    p.add_argument("--genprob-csv", action="store_true", help="also write the reference-compatible per-layer CSVs")
    p.add_argument("--parquet", action="store_true", help="also write checkpoints.parquet and layers.parquet (needs pyarrow)")
    p.add_argument("--unsafe-load", action="store_true", help="allow arbitrary unpickling (runs code from the file: only for files you trust)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from probe.options import MeasureOptions
    from probe.replay.runner import Outcome, parse_shard, replay

    shard = parse_shard(args.shard) if args.shard is not None else None
    options = MeasureOptions(method=args.method, nonfinite="nan", evbmf_xatol=args.evbmf_xatol)
    bars: list[tqdm] = []

    def progress(outcome: Outcome, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="ckpt", disable=args.no_progress, desc="replay"))
        bars[0].update()

    try:  # the library's warnings (a skipped file, NaN weights) print above the bar, not through it
        with logging_redirect_tqdm():
            outcomes, tables = replay(args.paths, args.out, layers=args.layers, options=options, workers=args.workers, shard=shard,
                                      unsafe=args.unsafe_load, genprob_csv=args.genprob_csv, parquet=args.parquet,
                                      progress=progress)
    finally:
        for bar in bars:
            bar.close()
    counts = {status: sum(o.status == status for o in outcomes) for status in ("measured", "done", "failed")}
    print(f"{len(outcomes)} checkpoints{f' (shard {shard[0]}/{shard[1]})' if shard else ''}: "
          f"{counts['measured']} measured, {counts['done']} already done, {counts['failed']} failed")
    _print_tables(tables)
    return 1 if counts["failed"] else 0


def add_merge(sub: argparse._SubParsersAction) -> None:
    """Register ``probe merge``."""
    p = subcommand(sub, "merge", **_MERGE_TEXT)
    p.add_argument("sources", nargs="+", metavar="DIR", help="replay output directories")
    p.add_argument("--out", default=None, metavar="DIR", help="merged directory (default: the only source)")
    p.add_argument("--genprob-csv", action="store_true", help="also write the reference-compatible per-layer CSVs")
    p.add_argument("--parquet", action="store_true", help="also write checkpoints.parquet and layers.parquet (needs pyarrow)")
    p.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from probe.replay.runner import merge

    if args.out is None and len(args.sources) != 1:
        raise ValueError(f"--out is required when merging {len(args.sources)} directories")
    tables = merge(args.sources, args.out or args.sources[0], genprob_csv=args.genprob_csv, parquet=args.parquet)
    _print_tables(tables)
    return 0


def _print_tables(tables) -> None:
    print(f"checkpoints: {tables.checkpoints} ({tables.n_checkpoints} rows)")
    print(f"layers:      {tables.layers}")
    print(f"errors:      {tables.errors} ({tables.n_errors} rows)")
    if tables.n_duplicates:
        print(f"duplicates:  {tables.duplicates} ({tables.n_duplicates} checkpoints counted once: the same path, content, "
              "or GenProb run and epoch as another)")
    for path in tables.parquet:
        print(f"parquet:     {path}")
    if tables.genprob:
        print(f"genprob csv: {len(tables.genprob)} files in {tables.genprob[0].parent}")


def add_report(sub: argparse._SubParsersAction) -> None:
    """Register ``probe report``."""
    p = subcommand(sub, "report", **_REPORT_TEXT)
    p.add_argument("dir", metavar="DIR", help="a probe replay output directory")
    p.add_argument("--out", default=None, metavar="REPORT_DIR", help="where to write (default DIR/report)")
    p.add_argument("--measures", type=_csv_list, default=None, help="comma-separated measures (default: the 8 headline)")
    p.add_argument("--targets", type=_csv_list, default=["test_acc", "gap"], help="comma-separated targets (default test_acc,gap)")
    p.add_argument("--by", type=_csv_list, default=["dataset"], help="grouping columns besides epoch (default dataset), e.g. dataset,optimizer")
    p.add_argument("--optimizer", action="append", default=[], help="keep this optimizer (repeatable)")
    p.add_argument("--dataset", action="append", default=[], help="keep this dataset (repeatable)")
    p.add_argument("--hparam", action="append", default=[], help="keep checkpoints with this hyperparameter token: lr0.08 (GenProb name), lr=0.1 (Lightning hparam); repeatable, all must match")
    p.add_argument("--methods", type=_csv_list, default=["spearman"], help="coefficients to plot: pearson,spearman,kendall (default spearman; the CSV has all)")
    p.add_argument("--scatter-epochs", type=_int_list, default=None, help="epochs for scatter panels (default first and last)")
    p.add_argument("--color-by", default="optimizer", help="column colouring scatter points (default optimizer)")
    p.add_argument("--no-plots", action="store_true", help="write only correlations.csv")
    p.add_argument("--spectra", type=_count, default=0, metavar="N",
                   help="also draw each layer's log-log ESD with its power-law tail for the last epoch of the first N runs "
                        "(reads those checkpoints again)")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from probe.aggregate import HEADLINE_NAMES
    from probe.replay.analysis import write_report

    args.measures = args.measures or list(HEADLINE_NAMES)
    files = write_report(
        args.dir, report_dir=args.out, measures=args.measures, targets=args.targets, by=args.by,
        optimizers=args.optimizer, datasets=args.dataset, hparams=args.hparam, plot_methods=args.methods,
        scatter_epochs=args.scatter_epochs, color_by=args.color_by, plots=not args.no_plots,
    )
    result = files.correlations
    method = args.methods[0]
    epochs = sorted(result["epoch"].unique())
    shown = epochs if len(epochs) <= 10 else sorted({epochs[round(i * (len(epochs) - 1) / 9)] for i in range(10)})
    for target in args.targets:
        rows = result[(result["target"] == target) & result["epoch"].isin(shown)]
        for key, group in rows.groupby(args.by, dropna=False, sort=True) if args.by else [((), rows)]:
            keys = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{c}={v}" for c, v in zip(args.by, keys))
            print(f"\n{method} correlation with {target} ({label}; {UNDEFINED} = undefined: fewer than 3 models "
                  "with values, or constant values):")
            table = group.pivot(index="measure", columns="epoch", values=method).reindex(args.measures)
            cells = table.map(cell)
            cells["NaN left out"] = (group["models"] - group["n"]).groupby(group["measure"]).sum().reindex(args.measures).map(str)
            cells.loc["(models)"] = [str(v) for v in group.groupby("epoch")["models"].max().reindex(table.columns)] + [""]
            print(cells.to_string())
    if len(shown) < len(epochs):
        print(f"\n({len(shown)} of {len(epochs)} epochs shown; all in {files.correlations_csv})")
    print(f"\ncorrelations: {files.correlations_csv}")
    for path in files.plots:
        print(f"plot:         {path}")
    if args.spectra:
        from probe.replay.spectra import write_spectra

        for path in write_spectra(args.dir, files.correlations_csv.parent, runs=args.spectra):
            print(f"spectra:      {path}")
    return 0


SUBCOMMANDS = [add_replay, add_merge, add_report]
