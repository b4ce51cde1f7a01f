"""One study, four worker processes, on real storages: a journal file, SQLite and a PostgreSQL server.

Each worker opens its own connection, as a worker on another host would. The pruner of every
worker must see the other workers' trials and measures; what the workers stored must read back
as numbers in ``trials_dataframe()`` and as sortable columns of optuna-dashboard.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.trial import TrialState

from integrations.optuna import MeasurePruner, get_measures, report_measures

STUDY = "shared"
WORKERS = 4
EPOCHS = 4
KINDS = ["journal", "sqlite", "postgresql"]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own, started for this module and removed after it.

    Its data folder is made directly under the temporary folder: run as root, pgserver runs
    the server as another user, who cannot enter pytest's private ``pytest-of-root``.
    """
    import pgserver

    server = pgserver.get_server(tempfile.mkdtemp(prefix="pgdata-"), cleanup_mode="delete")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


def _storage(kind: str, location: str) -> optuna.storages.BaseStorage | str:
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(location))
    return location


def _location(kind: str, folder: Path, request: pytest.FixtureRequest) -> str:
    return {
        "journal": lambda: str(folder / "journal.log"),
        "sqlite": lambda: f"sqlite:///{folder / 'study.db'}",
        "postgresql": lambda: request.getfixturevalue("postgres_url"),
    }[kind]()


def measures(worker: int, quality: float, epoch: int) -> dict[str, float]:
    """What a trial of quality ``quality`` stores at ``epoch`` (AE measures undefined at epoch 0)."""
    value = quality + worker + epoch
    return {"E_L2_BE": value, "SQ_p_BE": -value, "E_L2_AE": math.nan if epoch == 0 else value / 2}


def _objective(worker: int, quality: float):
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("quality", quality)
        for epoch in range(EPOCHS):
            report_measures(trial, measures(worker, quality, epoch), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return quality + worker

    return objective


def _wait_for(flags: list[Path]) -> None:
    deadline = time.monotonic() + 180
    while not all(flag.exists() for flag in flags):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all of {flags} appeared")
        time.sleep(0.05)


def _worker(kind: str, location: str, folder: str, worker: int) -> None:
    """Two good trials, then, once every worker has finished its good ones, two poor ones.

    A poor trial is pruned only if its pruner sees all ``2 * WORKERS`` good trials with their
    measures: ``n_startup_trials = n_min_trials = 2 * WORKERS``.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    flags = [Path(folder) / f"{w}.good" for w in range(WORKERS)]
    pruner = MeasurePruner(n_startup_trials=2 * WORKERS, n_min_trials=2 * WORKERS)
    study = optuna.load_study(study_name=STUDY, storage=_storage(kind, location), pruner=pruner)
    study.optimize(_objective(worker, 10.0), n_trials=2)
    flags[worker].touch()
    _wait_for(flags)
    study.optimize(_objective(worker, -10.0), n_trials=2)


@pytest.mark.parametrize("kind", KINDS)
def test_workers_share_measures(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    location = _location(kind, tmp_path, request)
    optuna.create_study(study_name=STUDY, storage=_storage(kind, location), direction="maximize")
    context = mp.get_context("forkserver")  # fresh processes, forked from one that imported this module once
    context.set_forkserver_preload([__name__])
    workers = [context.Process(target=_worker, args=(kind, location, str(tmp_path), w)) for w in range(WORKERS)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [p.exitcode for p in workers] == [0] * WORKERS

    study = optuna.load_study(study_name=STUDY, storage=_storage(kind, location))
    trials = study.trials
    assert len(trials) == 4 * WORKERS
    for t in trials:
        worker, quality = t.user_attrs["worker"], t.user_attrs["quality"]
        good = quality > 0
        # good trials run to the end; every poor one is pruned at epoch 0, judged against all good ones
        assert (t.state, t.value) == ((TrialState.COMPLETE, quality + worker) if good else (TrialState.PRUNED, None))
        last = EPOCHS - 1 if good else 0
        expected = {epoch: measures(worker, quality, epoch) for epoch in range(last + 1)}
        assert _nan_as_none(get_measures(t)) == _nan_as_none(expected)

    frame = study.trials_dataframe()
    for name in ("E_L2_BE", "SQ_p_BE", "E_L2_AE"):
        column = frame[f"user_attrs_probe:{name}"]
        assert column.dtype == "float64"
        latest = [measures(w, q, EPOCHS - 1 if q > 0 else 0)[name]
                  for w, q in zip(frame["user_attrs_worker"], frame["user_attrs_quality"])]
        assert column.tolist() == pytest.approx(latest, nan_ok=True)
    last_steps = [EPOCHS - 1 if q > 0 else 0 for q in frame["user_attrs_quality"]]
    assert frame["user_attrs_probe:last_step"].tolist() == last_steps
    assert frame["user_attrs_probe:E_L2_AE"].isna().sum() == 2 * WORKERS  # the poor trials stopped at epoch 0

    sortable = _dashboard_user_attrs(_storage(kind, location), study._study_id)
    assert all(sortable[f"probe:{name}"] for name in ("last_step", "E_L2_BE", "SQ_p_BE", "E_L2_AE"))
    assert not any(key.startswith("probe:measures:") for key in sortable)  # the history is no table column


def _nan_as_none(measures: dict[int, dict[str, float]]) -> dict[int, dict[str, float | None]]:
    return {step: {k: None if math.isnan(v) else v for k, v in values.items()} for step, values in measures.items()}


def _dashboard_user_attrs(storage: optuna.storages.BaseStorage | str, study_id: int) -> dict[str, bool]:
    """optuna-dashboard's own view of the study's user attributes: ``{key: sortable}``."""
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage)
    environ: dict = {"PATH_INFO": f"/api/studies/{study_id}", "QUERY_STRING": "after=0"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
    assert status == ["200 OK"], body
    return {attr["key"]: attr["sortable"] for attr in json.loads(body)["union_user_attrs"]}
