"""``Trainer.hyperparameter_search(backend="optuna")`` pruned from the measures ProbeTrainerCallback stores."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("transformers")
optuna = pytest.importorskip("optuna")

import torch  # noqa: E402
from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import Trainer  # noqa: E402

import probe  # noqa: E402
from integrations.optuna import MeasurePruner, get_measures, pruning_reason  # noqa: E402
from integrations.transformers import ProbeTrainerCallback  # noqa: E402
from probe.aggregate import HEADLINE_NAMES  # noqa: E402
from probe.options import LIVE  # noqa: E402
from tests.hf_helpers import Examples, arguments, tiny_bert  # noqa: E402

LEARNING_RATES = [1e-2, 0.0]  # trial 1 does not move: its F_p_BE stays at the initial weights' value


def _values(report: probe.Report) -> dict[str, float]:
    return {name: report.value(name) for name in HEADLINE_NAMES}


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-9) for k in b)


def test_hyperparameter_search_stores_measures_and_prunes_from_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        storage_path = tmp_path / "journal.log"
        args = arguments(tmp_path / "out", max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps",
                         save_steps=2, save_only_model=True, weight_decay=0.0)
        trainer = Trainer(model_init=lambda trial: tiny_bert(0), args=args, train_dataset=Examples(32, seed=1),
                          eval_dataset=Examples(16, seed=2), callbacks=[ProbeTrainerCallback()])
        pruner = MeasurePruner(measure="F_p_BE", direction="maximize", percentile=50.0, n_startup_trials=1)
        trainer.hyperparameter_search(
            hp_space=lambda trial: {"learning_rate": LEARNING_RATES[trial.number]}, backend="optuna", n_trials=2,
            direction="minimize", storage=JournalStorage(JournalFileBackend(str(storage_path))), pruner=pruner,
            study_name="hf",
        )
    finally:
        torch.set_num_threads(threads)

    study = optuna.load_study(study_name="hf", storage=JournalStorage(JournalFileBackend(str(storage_path))))
    first, second = study.trials
    # trial 0 completes: its stored measures are those of its checkpoints, its objective eval_loss (not a sum of measures)
    assert first.state == TrialState.COMPLETE
    stored = get_measures(first)
    assert sorted(stored) == [2, 4]
    run = tmp_path / "out" / "run-0"
    for step, values in stored.items():
        assert _close(values, _values(probe.measure(load_file(str(run / f"checkpoint-{step}" / "model.safetensors")), options=LIVE)))
    history = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    eval_loss = {e["step"]: e["eval_loss"] for e in history if "eval_loss" in e}
    assert first.intermediate_values == pytest.approx(eval_loss)
    assert first.value == pytest.approx(eval_loss[4])

    # trial 1: lr 0 keeps the initial weights; the pruner compares them with trial 0 at the first evaluation
    initial = _values(probe.measure(tiny_bert(0), options=LIVE))
    second_stored = get_measures(second)
    assert sorted(second_stored) == [2]
    assert _close(second_stored[2], initial)
    expected_pruned = second_stored[2]["F_p_BE"] < stored[2]["F_p_BE"]  # the 50th percentile of one completed trial
    assert expected_pruned, "the setup must exercise pruning: training raises F_p_BE on this data"
    assert second.state == TrialState.PRUNED
    assert set(second.intermediate_values) == {2}  # the Trainer reported the objective before asking should_prune
    reason = pruning_reason(second)
    assert reason is not None
    assert (reason["signal"], reason["step"]) == ("F_p_BE", 2)
    assert reason["value"] == pytest.approx(second_stored[2]["F_p_BE"])
    assert reason["threshold"] == pytest.approx(stored[2]["F_p_BE"])
