"""ProbeTrainerCallback with real Hugging Face Trainers on tiny models built from configs (nothing downloaded)."""

from __future__ import annotations

import math
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import pandas as pd
import torch
from safetensors.torch import load_file
from transformers import EarlyStoppingCallback, Trainer

import probe
from integrations.transformers import ProbeTrainerCallback
from probe.aggregate import HEADLINE_NAMES
from probe.cli import main
from probe.options import LIVE, MeasureOptions
from tests import tb_events
from tests.hf_helpers import Examples, arguments, tiny_bert, tiny_gpt2

ROOT = Path(__file__).resolve().parents[1]
EVAL_KEYS = [f"eval_probe/{name}" for name in HEADLINE_NAMES]
EPOCH_KEYS = [f"probe/{name}" for name in HEADLINE_NAMES]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _measured(path: Path) -> dict[str, float]:
    """``probe.measure`` of a saved ``model.safetensors``: the headline measures."""
    report = probe.measure(load_file(str(path)), options=LIVE)
    return {name: report.value(name) for name in HEADLINE_NAMES}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _eval_entries(trainer: Trainer) -> dict[int, dict]:
    return {e["step"]: e for e in trainer.state.log_history if "eval_loss" in e}


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """Evaluations every 3 steps over 2 epochs of 4 steps: at 3, 6 and 8 (the Trainer evaluates at its last step too);
    the epoch end at step 4 has none."""
    out = tmp_path_factory.mktemp("bert")
    torch.set_num_threads(1)
    args = arguments(out, eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=3, save_only_model=True,
                     report_to=["tensorboard"], logging_strategy="steps", logging_steps=2)
    callback = ProbeTrainerCallback()
    trainer = Trainer(tiny_bert(), args, train_dataset=Examples(32, seed=1), eval_dataset=Examples(16, seed=2),
                      callbacks=[callback])
    trainer.train()
    return out, trainer, callback


def test_importing_the_module_does_not_import_transformers():
    code = "import sys, integrations.transformers; assert 'transformers' not in sys.modules, 'imported transformers'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"every_n_epochs": 0}, ValueError, "every_n_epochs must be an integer >= 1"),
    ({"every_n_epochs": True}, ValueError, "every_n_epochs must be an integer >= 1"),
    ({"background": "fork"}, ValueError, "background must be one of"),
    ({"measures": ["E_L2_BE", "nope"]}, ValueError, "nope"),
    ({"measures": "E_L2_BE"}, TypeError, "wrap it in a list"),
    ({"log_options": {}}, TypeError, "log_options must be a"),
    ({"layers": 3}, (TypeError, ValueError), "layers"),
])
def test_arguments_are_validated_like_probe_callback(kwargs, error, message):
    with pytest.raises(error, match=message):
        ProbeTrainerCallback(**kwargs)


def test_logged_steps_match_log_history_and_tensorboard(bert_run):
    out, trainer, _ = bert_run
    max_steps = trainer.state.max_steps
    assert max_steps == 8
    evaluations = [*range(3, max_steps + 1, 3), max_steps]  # DefaultFlowCallback also evaluates at the last step
    epoch_ends = [4]  # epoch ends without an evaluation
    entries = _eval_entries(trainer)
    assert sorted(entries) == evaluations
    for step in evaluations:  # in the evaluation's own log entry, beside eval_loss
        assert all(key in entries[step] for key in EVAL_KEYS), entries[step]
    probe_entries = {e["step"]: e for e in trainer.state.log_history if "probe/E_L2_BE" in e}
    assert sorted(probe_entries) == epoch_ends  # epoch ends without an evaluation
    assert all("eval_loss" not in probe_entries[s] for s in epoch_ends)
    runs = {p.parent for p in out.rglob("events.out.tfevents.*")}
    assert len(runs) == 1
    events = tb_events.load(runs.pop())
    loss = tb_events.scalars(events, "eval/loss")
    for name in HEADLINE_NAMES:
        at_eval = tb_events.scalars(events, f"eval/probe/{name}")
        assert sorted(at_eval) == sorted(loss) == evaluations  # the same global steps as eval_loss
        for step in evaluations:
            assert at_eval[step] == pytest.approx(entries[step][f"eval_probe/{name}"], rel=1e-6, nan_ok=True)
    at_epoch = tb_events.scalars(events, "train/probe/F_p_BE")
    assert sorted(at_epoch) == epoch_ends
    assert any(tag.startswith("probe/heatmap") or "heatmap" in tag for tag in events.Tags()["images"])


def test_logged_values_equal_measure_and_replay_of_the_checkpoints(bert_run, tmp_path):
    out, trainer, _ = bert_run
    entries = _eval_entries(trainer)
    checkpoints = {int(p.parent.name.split("-")[1]): p for p in out.glob("checkpoint-*/model.safetensors")}
    assert set(entries) <= set(checkpoints)
    for step, entry in entries.items():
        offline = _measured(checkpoints[step])
        for name in HEADLINE_NAMES:
            assert _same(entry[f"eval_probe/{name}"], offline[name]), (step, name, entry[f"eval_probe/{name}"], offline[name])
    replay_out = tmp_path / "replay"
    assert main(["replay", str(out), "--out", str(replay_out), "--no-progress"]) == 0
    table = pd.read_csv(replay_out / "checkpoints.csv")
    path_column = next(c for c in table.columns if table[c].astype(str).str.contains("model.safetensors").any())
    for step, entry in entries.items():
        row = table[table[path_column].astype(str).str.contains(f"checkpoint-{step}/")]
        assert len(row) == 1, (step, table[path_column].tolist())
        for name in HEADLINE_NAMES:
            assert _same(float(row[name].iloc[0]), entry[f"eval_probe/{name}"]), (step, name)


@pytest.mark.parametrize("probe_first", [True, False], ids=["probe-first", "early-stopping-first"])
def test_best_model_and_early_stopping_read_the_probe_metric_in_either_order(tmp_path, probe_first):
    # greater_is_better=False on a measure that grows while training: early stopping must trigger
    args = arguments(tmp_path, num_train_epochs=5, save_strategy="epoch", save_only_model=True, load_best_model_at_end=True,
                     metric_for_best_model="probe/F_p_BE", greater_is_better=False)
    probe_cb, stopping = ProbeTrainerCallback(), EarlyStoppingCallback(early_stopping_patience=1)
    trainer = Trainer(tiny_bert(), args, train_dataset=Examples(32, seed=1), eval_dataset=Examples(16, seed=2),
                      callbacks=[probe_cb, stopping] if probe_first else [stopping, probe_cb])
    trainer.train()
    entries = _eval_entries(trainer)
    steps = sorted(entries)
    values = [entries[s]["eval_probe/F_p_BE"] for s in steps]
    # the rules, applied to what was logged: best = lowest so far; stop after one evaluation without improvement
    best_step, best, stop_at = None, math.inf, None
    for step, value in zip(steps, values):
        if value < best:
            best_step, best = step, value
        else:
            stop_at = step
            break
    assert stop_at is not None, f"F_p_BE never rose: {values}"
    assert steps[-1] == stop_at and trainer.state.global_step == stop_at  # stopped right there
    assert trainer.state.best_metric == best
    assert Path(trainer.state.best_model_checkpoint).name == f"checkpoint-{best_step}"
    assert _measured(Path(trainer.state.best_model_checkpoint) / "model.safetensors")["F_p_BE"] == pytest.approx(best, rel=1e-9)
    # load_best_model_at_end: the model now holds the best weights
    assert probe.measure(trainer.model, options=LIVE).value("F_p_BE") == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("metric", ["probe/ER_mean_t0_BE", "eval_probe/ER_mean_t0_BE"])
def test_a_probe_metric_no_callback_logs_fails_at_train_begin(tmp_path, metric):
    args = arguments(tmp_path, metric_for_best_model=metric, max_steps=1)
    trainer = Trainer(tiny_bert(), args, train_dataset=Examples(8, seed=1), eval_dataset=Examples(8, seed=2),
                      callbacks=[EarlyStoppingCallback(1), ProbeTrainerCallback(measures=["E_L2_BE"])])
    with pytest.raises(ValueError, match=r"read by metric_for_best_model, EarlyStoppingCallback\) names probe measure 'ER_mean_t0_BE', which "
                                         r"no ProbeTrainerCallback logs \(measures=\['E_L2_BE'\]\)"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_layers_selecting_nothing_fail_at_train_begin(tmp_path):
    trainer = Trainer(tiny_bert(), arguments(tmp_path, max_steps=1, eval_strategy="no"), train_dataset=Examples(8, seed=1),
                      callbacks=[ProbeTrainerCallback(layers=lambda name, tensor: False)])
    with pytest.raises(ValueError, match="ProbeTrainerCallback.*BertForSequenceClassification"):
        trainer.train()


@pytest.mark.parametrize("background", ["thread", "process"])
def test_background_gives_the_same_values_as_synchronous(tmp_path, background):
    def run(callback, out):
        trainer = Trainer(tiny_bert(), arguments(out, eval_strategy="steps", eval_steps=2, max_steps=4),
                          train_dataset=Examples(32, seed=1), eval_dataset=Examples(16, seed=2), callbacks=[callback])
        trainer.train()
        return {s: [e[k] for k in EVAL_KEYS] for s, e in _eval_entries(trainer).items()}

    synchronous = run(ProbeTrainerCallback(), tmp_path / "sync")
    callback = ProbeTrainerCallback(background=background)
    measured = run(callback, tmp_path / background)
    assert sorted(measured) == sorted(synchronous) == [2, 4]
    for step in synchronous:
        assert all(_same(a, b) for a, b in zip(measured[step], synchronous[step])), step
    assert [t.step for t in callback.timings] == [2, 4]
    assert all(math.isfinite(t.measure_s) and t.blocking_s > 0 for t in callback.timings)


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt2")
    torch.set_num_threads(1)
    args = arguments(out, max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                     save_only_model=True)
    trainer = Trainer(tiny_gpt2(), args, train_dataset=Examples(32, seed=1, lm=True),
                      eval_dataset=Examples(16, seed=2, lm=True), callbacks=[ProbeTrainerCallback()])
    trainer.train()
    return out, trainer


def test_gpt2_measures_are_logged_at_every_evaluation(gpt2_run):
    out, trainer = gpt2_run
    entries = _eval_entries(trainer)
    assert sorted(entries) == [2, 4]
    assert all(key in entries[step] for step in entries for key in EVAL_KEYS)
    assert {p.parent.name for p in out.glob("checkpoint-*/model.safetensors")} == {"checkpoint-2", "checkpoint-4"}


def test_gpt2_logged_values_equal_the_saved_checkpoints(gpt2_run):
    out, trainer = gpt2_run
    for step, entry in _eval_entries(trainer).items():
        offline = _measured(out / f"checkpoint-{step}" / "model.safetensors")
        assert all(_same(entry[f"eval_probe/{name}"], offline[name]) for name in HEADLINE_NAMES), (step, entry, offline)


def test_the_docs_example_and_the_example_script_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    page = (ROOT / "docs" / "transformers.md").read_text()
    block = re.findall(r"```python\n(.*?)```", page, flags=re.S)[0]  # the complete example
    namespace: dict = {}
    exec(compile(block.replace("num_train_epochs=4", "num_train_epochs=2"), "docs/transformers.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.best_metric == max(e["eval_probe/F_p_BE"] for e in _eval_entries(trainer).values())
    monkeypatch.setattr(sys, "argv", ["hf_trainer.py", "--epochs", "2", "--out", str(tmp_path / "example")])
    runpy.run_path(str(ROOT / "examples" / "hf_trainer.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "F_p_BE" in printed and "best checkpoint:" in printed and "tensorboard --logdir" in printed
    runs = {p.parent for p in (tmp_path / "example").rglob("events.out.tfevents.*")}
    assert any("eval/probe/F_p_BE" in tb_events.load(run).Tags()["scalars"] for run in runs)


@pytest.mark.parametrize("monitored", [False, True])
def test_every_n_epochs_thins_evaluations_unless_a_probe_metric_is_monitored(tmp_path, monitored):
    extra = {"metric_for_best_model": "probe/F_p_BE"} if monitored else {}
    args = arguments(tmp_path, num_train_epochs=4, **extra)
    trainer = Trainer(tiny_bert(), args, train_dataset=Examples(32, seed=1), eval_dataset=Examples(16, seed=2),
                      callbacks=[ProbeTrainerCallback(every_n_epochs=2)])
    trainer.train()
    entries = _eval_entries(trainer)
    assert sorted(entries) == [4, 8, 12, 16]  # an evaluation at each epoch end (4 steps each)
    measured = sorted(s for s, e in entries.items() if "eval_probe/F_p_BE" in e)
    assert measured == ([4, 8, 12, 16] if monitored else [8, 16])  # epochs 2 and 4 (1-based)
    assert not any("probe/F_p_BE" in e for e in trainer.state.log_history if "eval_loss" not in e)


def test_two_evaluation_datasets_share_one_measurement_and_a_late_added_callback_works(tmp_path):
    args = arguments(tmp_path, num_train_epochs=2, save_strategy="epoch", save_only_model=True, load_best_model_at_end=True,
                     metric_for_best_model="eval_b_probe/F_p_BE")
    trainer = Trainer(tiny_bert(), args, train_dataset=Examples(32, seed=1),
                      eval_dataset={"a": Examples(16, seed=2), "b": Examples(16, seed=3)})
    callback = ProbeTrainerCallback()
    trainer.add_callback(callback)  # after the Trainer's init: found at on_train_begin
    trainer.train()
    entries = {(e["step"], k.split("_probe/")[0]): e for e in trainer.state.log_history for k in e if "_probe/" in k}
    assert sorted(entries) == [(4, "eval_a"), (4, "eval_b"), (8, "eval_a"), (8, "eval_b")]
    for step in (4, 8):
        assert "eval_a_loss" in entries[step, "eval_a"] and "eval_b_loss" in entries[step, "eval_b"]
        assert all(_same(entries[step, "eval_a"][f"eval_a_probe/{n}"], entries[step, "eval_b"][f"eval_b_probe/{n}"])
                   for n in HEADLINE_NAMES)
    assert [t.step for t in callback.timings] == [4, 8]  # measured once per step
    best_step = max((4, 8), key=lambda s: entries[s, "eval_b"]["eval_b_probe/F_p_BE"])
    assert trainer.state.best_metric == entries[best_step, "eval_b"]["eval_b_probe/F_p_BE"]
    assert Path(trainer.state.best_model_checkpoint).name == f"checkpoint-{best_step}"


def test_the_options_reach_the_measurement_unchanged(tmp_path):
    """A coarse EVBMF tolerance changes AE values; the logged ones equal probe.measure with the same options."""
    model = tiny_bert()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # structure EVBMF keeps, so that AE values exist and the tolerance matters
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and min(module.weight.shape) >= 8:
                rows, cols = module.weight.shape
                module.weight.copy_(torch.randn(rows, 2, generator=generator) @ torch.randn(2, cols, generator=generator)
                                    + 0.01 * torch.randn(rows, cols, generator=generator))
    options = MeasureOptions(evbmf_xatol=0.5, nonfinite="nan")
    trainer = Trainer(model, arguments(tmp_path, num_train_epochs=1, learning_rate=1e-5), train_dataset=Examples(16, seed=1),
                      eval_dataset=Examples(16, seed=2), callbacks=[ProbeTrainerCallback(options=options)])
    trainer.train()
    (entry,) = _eval_entries(trainer).values()
    expected, default = probe.measure(trainer.model, options=options), probe.measure(trainer.model, options=LIVE)
    assert any(not _same(expected.value(n), default.value(n)) for n in HEADLINE_NAMES if n.endswith("_AE"))
    for name in HEADLINE_NAMES:
        assert _same(entry[f"eval_probe/{name}"], expected.value(name)), name


def test_an_epoch_end_measurement_keeps_the_trainers_own_epoch_loss_log(tmp_path):
    """Logging the epoch-end measures must not clear the Trainer's ``should_log``: its loss entry follows."""
    def logged(callbacks):
        trainer = Trainer(tiny_bert(), arguments(tmp_path / str(len(callbacks)), eval_strategy="no"),
                          train_dataset=Examples(32, seed=1), callbacks=callbacks)
        trainer.train()
        return trainer.state.log_history

    without = [(e["step"], "loss") for e in logged([]) if "loss" in e]
    history = logged([ProbeTrainerCallback()])
    assert without == [(4, "loss"), (8, "loss")]
    assert [(e["step"], "loss") for e in history if "loss" in e] == without
    assert [e["step"] for e in history if "probe/F_p_BE" in e] == [4, 8]


@pytest.mark.parametrize("background", [False, "thread"])
def test_evaluate_outside_train_measures_the_weights_it_evaluates(tmp_path, background):
    """Before train() (no worker yet), and after it with load_best_model_at_end: the best checkpoint's weights,
    loaded at the last global step, not the values cached for the final weights at that step."""
    args = arguments(tmp_path, num_train_epochs=3, save_strategy="epoch", save_only_model=True, load_best_model_at_end=True,
                     metric_for_best_model="probe/F_p_BE", greater_is_better=False)
    trainer = Trainer(tiny_bert(), args, train_dataset=Examples(32, seed=1), eval_dataset=Examples(16, seed=2),
                      callbacks=[ProbeTrainerCallback(background=background)])
    before = trainer.evaluate()["eval_probe/F_p_BE"]
    assert _same(before, probe.measure(trainer.model, options=LIVE).value("F_p_BE"))
    trainer.train()
    entries = _eval_entries(trainer)
    best_step = min(entries, key=lambda s: entries[s]["eval_probe/F_p_BE"])
    assert best_step != max(entries), "the test needs a best checkpoint other than the last one"
    after = trainer.evaluate()["eval_probe/F_p_BE"]
    assert _same(after, entries[best_step]["eval_probe/F_p_BE"])
    assert _same(after, probe.measure(trainer.model, options=LIVE).value("F_p_BE"))
