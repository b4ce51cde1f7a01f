"""One study, two worker processes: each process's pruner sees the other's trials' measures."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from integrations.optuna import MeasurePruner, get_measures, report_measures

STUDY = "shared"


def _storage(kind: str, folder: Path) -> optuna.storages.BaseStorage | str:
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    return f"sqlite:///{folder / 'study.db'}"


def _wait_for(flag: Path) -> None:
    deadline = time.monotonic() + 120
    while not flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{flag} never appeared")
        time.sleep(0.05)


def _objective(worker: str, measure: float):
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        for epoch in range(3):
            report_measures(trial, {"E_L2_BE": measure + epoch}, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return measure

    return objective


def _worker(kind: str, folder: str, worker: str) -> None:
    """A: 2 good trials, then (after B) a poor one. B: 1 good trial, then a poor one.

    The poor trials can only be pruned if their pruner counts the other worker's
    completed trials and their measures: ``n_startup_trials=n_min_trials=3``.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(folder)
    pruner = MeasurePruner(n_startup_trials=3, n_min_trials=3)
    study = optuna.load_study(study_name=STUDY, storage=_storage(kind, path), pruner=pruner)
    if worker == "A":
        study.optimize(_objective("A", 10.0), n_trials=2)
        (path / "A.done").touch()
        _wait_for(path / "B.done")
        study.optimize(_objective("A", 0.0), n_trials=1)
    else:
        _wait_for(path / "A.done")
        study.optimize(_objective("B", 20.0), n_trials=1)
        study.optimize(_objective("B", 0.0), n_trials=1)
        (path / "B.done").touch()


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_measures(kind, tmp_path):
    optuna.create_study(study_name=STUDY, storage=_storage(kind, tmp_path), direction="maximize")
    context = mp.get_context("spawn")
    workers = [context.Process(target=_worker, args=(kind, str(tmp_path), name)) for name in "AB"]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
    assert [p.exitcode for p in workers] == [0, 0]

    trials = optuna.load_study(study_name=STUDY, storage=_storage(kind, tmp_path)).trials
    summary = [(t.user_attrs["worker"], t.state, t.value, max(get_measures(t))) for t in trials]
    assert sorted(summary, key=str) == sorted([
        ("A", TrialState.COMPLETE, 10.0, 2),
        ("A", TrialState.COMPLETE, 10.0, 2),
        ("B", TrialState.COMPLETE, 20.0, 2),
        ("B", TrialState.PRUNED, None, 0),  # judged against A's two trials and its own
        ("A", TrialState.PRUNED, None, 0),  # judged against its own two trials and B's
    ], key=str)
    good = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(get_measures(t)[0]["E_L2_BE"] for t in good) == [10.0, 10.0, 20.0]
