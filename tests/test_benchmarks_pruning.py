"""benchmarks/pruning.py --quick --json runs in seconds and reports what it replays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).parents[1]
FAMILY = ROOT / "benchmarks" / "data" / "family.csv"


def test_quick_json_records(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pruning.py"), "--quick", "--json", "--data", str(FAMILY)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    records = {r["pruner"]: r for r in json.loads(out)}
    assert next(iter(records)).startswith("default")
    frame = pd.read_csv(FAMILY)
    final = frame[frame["epoch"] == frame["epoch"].max()]
    for record in records.values():
        assert set(record) >= {"pruner", "measure", "epochs_share", "epochs_share_std", "regret_pp", "regret_pp_std",
                               "regret_pp_max", "family", "orders"}
        assert record["family"] == "family" and record["orders"] == 2 and record["epochs"] == frame["epoch"].max()
        assert 0.0 < record["epochs_share"] <= 1.0 and 0.0 <= record["regret_pp"] <= record["regret_pp_max"]
        # the quick subset's best is one of the recorded final test accuracies
        assert (final["test_acc"] - record["best"]).abs().min() < 1e-12
    # no pruning: every epoch, the subset's best found
    assert records["none"]["epochs_share"] == 1.0 and records["none"]["regret_pp"] == 0.0
    # pruning a random half at epoch 3 of 20 saves about 0.5 × 17/20 of the epochs
    assert 0.3 < records["random 50% at epoch 3 (chance baseline)"]["epochs_share"] < 0.8
    assert records["default: LearnedMeasurePruner()"]["epochs_share"] < 1.0


def test_trials_draws_that_many_runs_per_study():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pruning.py"), "--quick", "--json", "--trials", "10", "--data", str(FAMILY)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    records = {r["pruner"]: r for r in json.loads(out)}
    assert sum(name.startswith("default") for name in records) == 1
    assert {r["trials"] for r in records.values()} == {10} and {r["runs"] for r in records.values()} == {24}
    # regret is against the best of the drawn runs: no pruning finds it, every epoch of the 10 runs
    assert records["none"]["epochs_share"] == 1.0 and records["none"]["regret_pp"] == 0.0


def test_draws_are_without_replacement_and_seeded():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import pruning
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    first = pruning.draw(48, 20, seed=3)
    assert len(first) == len(set(first)) == 20 and set(first) <= set(range(48))
    assert list(first) == list(pruning.draw(48, 20, seed=3)) and list(first) != list(pruning.draw(48, 20, seed=4))


def test_prior_runs_adds_the_default_with_an_earlier_study():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pruning.py"), "--quick", "--json", "--trials", "8", "--prior-runs", "8",
         "--only", "default", "--data", str(FAMILY)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    records = json.loads(out)
    assert [r["pruner"] for r in records] == [
        "default: LearnedMeasurePruner()", "prior= an unpruned study of 8 other runs (the default's settings)",
        "prior= a study pruned by the default of 8 other runs (the default's settings)"]
    assert all(r["trials"] == 8 and 0.0 < r["epochs_share"] <= 1.0 and r["regret_pp"] >= 0.0 for r in records)


def test_hindsight_bound_picks_each_rungs_best_signal_and_halves_on_it():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import pruning
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import probe
    from integrations.optuna import RecordedRun, replay_study

    quality = [0.05 * i for i in range(12)]  # run i's final value; the runs arrive best last
    runs = []
    for i, q in enumerate(quality):
        measures = {e: {name: 0.0 for name in probe.HEADLINE_NAMES} for e in range(1, 6)}
        for e in measures:
            measures[e]["SQ_p_BE"] = -q if e == 1 else 0.3 * ((q * 100) % 7)  # ranks the final (reversed) at epoch 1 only
        objective = {e: ((i * 5) % 12 / 100 if e < 3 else q) for e in range(1, 6)}  # misleads before epoch 3
        runs.append(RecordedRun(measures=measures, value=q, intermediate_values=objective))
    assert pruning.hindsight_signals(runs, 5) == {1: ("SQ_p_BE", False), 3: ("objective", True)}
    order = [9, 10, 8, *range(8), 11]  # three good runs first, then the eight worst, the best last
    pruned_at = replay_study([runs[i] for i in order], pruner=pruning.HalvingOnSignal(pruning.hindsight_signals(runs, 5)))
    assert pruned_at[:3] == [None] * 3  # the startup trials complete
    # runs 0-5 fall below the top third at rung 1 by SQ_p_BE; 6 and 7 make it (4th of 10 and 11) and
    # fall below the top third at rung 3 by the objective
    assert pruned_at[3:11] == [1] * 6 + [3, 3]
    assert pruned_at[-1] is None  # the best ranks first at every rung
