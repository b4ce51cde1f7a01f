"""examples/optuna_study.py runs end to end on a SQLite file and prints the pruned epoch."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import optuna

from integrations.optuna import get_measures

EXAMPLE = Path(__file__).parents[1] / "examples" / "optuna_study.py"


def test_example_study(tmp_path, monkeypatch, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # 1 startup trial, then the median rule from epoch 0
    args = ["--storage", storage, "--trials", "3", "--epochs", "2", "--startup", "1", "--warmup", "0"]
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *args])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name="probe-digits", storage=storage).trials
    assert len(trials) == 3 and trials[0].state == optuna.trial.TrialState.COMPLETE
    for t in trials:
        stopped = max(get_measures(t))
        assert list(get_measures(t)) == list(range(stopped + 1))
        assert stopped == 1 if t.state == optuna.trial.TrialState.COMPLETE else stopped in (0, 1)
        line = next(line for line in out.splitlines() if line.split()[:1] == [str(t.number)])
        assert line.split()[1:3] == [t.state.name, str(stopped)]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    assert f"{pruned} of 3 trials pruned" in out
