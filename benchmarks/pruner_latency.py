"""How long the pruner takes to decide, on real storages with many completed trials.

For each storage (in memory, SQLite, a journal file, a PostgreSQL server started here by
``pgserver``) and each study size, the study is filled with N completed trials, each with
the eight headline measures stored at every epoch (through ``measured_trial``, the layout
``report_measures`` writes). Then a worker opens the study with a fresh storage object, as
a new process would, and runs a few trials epoch by epoch: ``report_measures`` and
``trial.should_prune()`` each epoch, both timed. Joining (opening the study and asking for
a first trial, which reads every trial from the storage) is timed apart.

    python benchmarks/pruner_latency.py                     # 1,000 and 10,000 trials x 20 epochs
    python benchmarks/pruner_latency.py --quick             # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integrations.optuna import (
    LearnedMeasurePruner,
    MeasurePruner,
    measured_trial,
    report_measures,
)
from probe import HEADLINE_NAMES

STORAGES = ("inmemory", "sqlite", "journal", "postgresql")
PRUNERS: dict[str, Callable[[], BasePruner]] = {
    "percentile": lambda: MeasurePruner(n_startup_trials=5),
    "learned": LearnedMeasurePruner,  # the default
}


def run_measures(value: float, epochs: int, rng: np.random.Generator) -> dict[int, dict[str, float]]:
    """Headline measures of a run with final objective ``value``: rising with it, noisy, AE undefined at epoch 0."""
    measures = {}
    for epoch in range(epochs):
        row = {name: float(value * (epoch + 1) / epochs + rng.normal(0, 0.1)) for name in HEADLINE_NAMES}
        if epoch == 0:
            row.update({name: math.nan for name in HEADLINE_NAMES if name.endswith("_AE")})
        measures[epoch] = row
    return measures


@contextmanager
def backing_store(kind: str, folder: Path) -> Iterator[str]:
    """Where the study lives: a URL, or the journal file's path; a PostgreSQL server runs meanwhile."""
    if kind != "postgresql":
        yield {"inmemory": "", "sqlite": f"sqlite:///{folder / 'study.db'}", "journal": str(folder / "journal.log")}[kind]
        return
    import pgserver

    # its own folder directly under /tmp: run as root, pgserver runs the server as another user
    server = pgserver.get_server(tempfile.mkdtemp(prefix="pgdata-"), cleanup_mode="delete")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


def open_storage(kind: str, where: str, filled: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage | str:
    """A fresh storage object, as a new worker process opens it (in memory: the one filled)."""
    if kind == "inmemory":
        return filled
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(where))
    return where


class _MemoryJournal(optuna.storages.journal.BaseJournalBackend):
    """A journal kept in memory while filling, written to the file in one append."""

    def __init__(self) -> None:
        self.logs: list[dict] = []

    def read_logs(self, log_number_from: int) -> list[dict]:
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict]) -> None:
        self.logs.extend(logs)


def fill(
    kind: str, where: str, name: str, n_trials: int, epochs: int, seed: int
) -> tuple[optuna.storages.BaseStorage, float]:
    """Create study ``name`` with ``n_trials`` completed trials; returns the in-memory storage (if any) and seconds.

    Filling is not what is measured, so it takes shortcuts: a journal is written in one
    append, and an RDB gets all trials in one transaction (``_add_rdb``); the timed worker
    opens the study with a plain storage afterwards.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    trials = [measured_trial(run_measures(v, epochs, rng), value=float(v)) for v in rng.uniform(0, 1, n_trials)]
    if kind in ("sqlite", "postgresql"):
        rdb = optuna.storages.RDBStorage(where)
        study = optuna.create_study(study_name=name, storage=rdb, direction="maximize")
        _add_rdb(rdb, study._study_id, trials)
        return rdb, time.perf_counter() - start
    journal = _MemoryJournal()
    storage = optuna.storages.InMemoryStorage() if kind == "inmemory" else optuna.storages.JournalStorage(journal)
    optuna.create_study(study_name=name, storage=storage, direction="maximize").add_trials(trials)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        JournalFileBackend(where).append_logs(journal.logs)
    return storage, time.perf_counter() - start


def _add_rdb(storage: optuna.storages.RDBStorage, study_id: int, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Insert completed single-objective trials in one transaction, into Optuna's own tables.

    ``study.add_trials`` makes two queries per attribute (about 60 per trial here), which
    takes hours for 10,000 trials on a shared machine.
    """
    from optuna.storages._rdb import models
    from sqlalchemy import insert

    tables = {name: model.__table__ for name, model in [  # type: ignore[attr-defined]
        ("trials", models.TrialModel), ("values", models.TrialValueModel),
        ("user", models.TrialUserAttributeModel), ("system", models.TrialSystemAttributeModel)]}
    now = datetime.now()
    with storage.engine.begin() as connection:
        trial_id = tables["trials"].c.trial_id
        ids = connection.execute(insert(tables["trials"]).returning(trial_id, sort_by_parameter_order=True), [
            {"number": n, "study_id": study_id, "state": t.state, "datetime_start": now, "datetime_complete": now}
            for n, t in enumerate(trials)
        ]).scalars().all()
        connection.execute(insert(tables["values"]), [
            {"trial_id": i, "objective": 0, "value": t.value, "value_type": models.TrialValueModel.TrialValueType.FINITE}
            for i, t in zip(ids, trials)
        ])
        for kind, attrs in (("user", "user_attrs"), ("system", "system_attrs")):
            connection.execute(insert(tables[kind]), [
                {"trial_id": i, "key": key, "value_json": json.dumps(value)}
                for i, t in zip(ids, trials) for key, value in getattr(t, attrs).items()
            ])


def time_worker(
    open_: Callable[[], optuna.storages.BaseStorage | str], name: str, pruner: BasePruner, epochs: int, n_runs: int,
    seed: int,
) -> dict[str, list[float]]:
    """A worker's timings: joining the study (seconds: open the storage, load the study and ask for
    a first trial, which reads every trial), then each epoch's ``report_measures`` and decision (ms)."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    study = optuna.load_study(study_name=name, storage=open_(), pruner=pruner,
                              sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    times: dict[str, list[float]] = {"join": [time.perf_counter() - start], "decide": [], "report": []}
    for run in range(n_runs):
        trial = trial if run == 0 else study.ask()
        for epoch, measures in run_measures(2.0, epochs, rng).items():  # a good run: judged at every epoch
            start = time.perf_counter()
            report_measures(trial, measures, epoch)
            times["report"].append(1e3 * (time.perf_counter() - start))
            start = time.perf_counter()
            pruned = trial.should_prune()
            times["decide"].append(1e3 * (time.perf_counter() - start))
            assert not pruned, "the timed run is the best one; it must not be pruned"
        study.tell(trial, state=TrialState.FAIL)  # keeps the number of completed trials at N
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000], help="completed trials per study")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    parser.add_argument("--runs", type=int, default=3, help="timed trials per pruner (each judged every epoch)")
    parser.add_argument("--quick", action="store_true", help="50 trials x 3 epochs, in memory and on a journal file")
    parser.add_argument("--json", action="store_true", help="one JSON record per row instead of the table")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.storages, args.runs = [50], 3, ["inmemory", "journal"], 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # SIGTERM (timeout, kill) exits through the finally blocks, which stop the PostgreSQL server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    rows = []
    for kind in args.storages:
        for n_trials in args.trials:
            with tempfile.TemporaryDirectory() as tmp, backing_store(kind, Path(tmp)) as where:
                name = f"latency-{n_trials}"
                filled, fill_s = fill(kind, where, name, n_trials, args.epochs, seed=n_trials)
                for label, make in PRUNERS.items():
                    t = time_worker(partial(open_storage, kind, where, filled), name, make(), args.epochs, args.runs, seed=1)
                    rows.append({
                        "storage": kind, "trials": n_trials, "epochs": args.epochs, "pruner": label,
                        "fill_s": round(fill_s, 1), "join_s": round(t["join"][0], 3),
                        "decide_p50_ms": round(statistics.median(t["decide"]), 2),
                        "decide_p90_ms": round(float(np.percentile(t["decide"], 90)), 2),
                        "report_p50_ms": round(statistics.median(t["report"]), 2),
                    })
                    print(json.dumps(rows[-1]) if args.json else _row(rows[-1], header=len(rows) == 1), flush=True)


def _row(row: dict, *, header: bool) -> str:
    line = "| " + " | ".join(str(v) for v in row.values()) + " |"
    if not header:
        return line
    return "| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n" + line


if __name__ == "__main__":
    main()
