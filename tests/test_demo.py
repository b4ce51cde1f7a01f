"""examples/demo.py (``make demo QUICK=1``) runs end to end and its outputs are real."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import shlex
import subprocess
from pathlib import Path

import matplotlib.image
import optuna
import pandas as pd
import pytest
import torch

import probe
from integrations.optuna import get_measures, pruning_reason
from integrations.tensorboard import HEATMAP_QUANTITIES, heatmap_tag
from probe.replay import parse_genprob_name
from tests import tb_events

DEMO = Path(__file__).parents[1] / "examples" / "demo.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run the quick demo once, into a directory holding a stale demo output and a user's file.

    Returns the output directory, the demo module and what it printed.
    """
    out = tmp_path_factory.mktemp("demo")
    (out / "genprob_checkpoints").mkdir()
    (out / "genprob_checkpoints" / "stale.pth.tar").write_bytes(b"from an earlier run")
    (out / "notes.txt").write_text("not the demo's")
    spec = importlib.util.spec_from_file_location("probe_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    printed, errors, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
    lightning_records = _Records()
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "pytorch_lightning")]
    for logger in loggers:
        logger.addHandler(lightning_records)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            assert demo.main(["--out", str(out), "--quick"]) == 0
    finally:
        for logger in loggers:
            logger.removeHandler(lightning_records)
    assert torch.get_num_threads() == threads  # the demo's one-thread setting does not leak
    return out, demo, printed.getvalue(), errors.getvalue(), lightning_records.messages


class _Records(logging.Handler):
    """Every log message Lightning emits (the demo should leave only warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


def test_prints_trials_and_where_things_are(demo_run):
    out, demo, printed, _, _ = demo_run
    assert f"tensorboard --logdir {out.resolve() / 'tensorboard'}" in printed
    assert f"sqlite:///{out.resolve() / 'study.db'}" in printed
    # one line per trial, saying what the study recorded
    study = optuna.load_study(study_name=demo.STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    for t in study.trials:
        line = next(line for line in printed.splitlines() if line.startswith(f"trial {t.number:>2} "))
        if t.state == optuna.trial.TrialState.PRUNED:
            reason = pruning_reason(t)
            assert f"pruned at epoch {reason['step']}  ({reason['rule']} rule on {reason['signal']}" in line
        else:
            assert f"completed: val acc {t.value:.3f}" in line
    # the closing summary says what decided the pruned trials and what was trusted (5 trials: nothing)
    pruned = [pruning_reason(t) for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    decided = {(r["rule"], r["signal"]) for r in pruned}
    assert "pruning decisions: " + ", ".join(
        f"{sum((r['rule'], r['signal']) == key for r in pruned)} by {key[0]} rule on {key[1]}" for key in sorted(decided)) in printed
    assert "trusted: nothing before the last epoch. A signal at epoch s earns trust when at least 8 finished trials" in printed
    assert "5 completed and 0 pruned trials: too few completed trials, so nothing was pruned on a signal" in printed
    # and how close the best measure came, beside the val acc at the same epoch
    closest = next(line for line in printed.splitlines() if line.startswith("no measure earned trust; the closest"))
    assert "with the final val acc over 5 completed trials; the val acc at that epoch: " in closest
    # a rerun starts over: the demo's own entries are replaced, the user's are kept
    assert not (out / "genprob_checkpoints" / "stale.pth.tar").exists()
    assert (out / "notes.txt").read_text() == "not the demo's"


def test_lightning_output_is_quiet_and_hints_run_as_printed(demo_run):
    out, _, printed, errors, lightning_messages = demo_run
    assert [m for m in lightning_messages if not m.startswith(("WARNING", "ERROR"))] == []  # no tips, no device summary
    for text in (printed, errors):
        assert "Epoch 0:" not in text and "Sanity Checking" not in text  # no progress bar
    lines = printed.splitlines()
    hints = lines[lines.index("open TensorBoard (then http://localhost:6006):"):]
    commands = [shlex.split(line) for line in hints if line.startswith("  ")]
    assert len(commands) >= 2
    for command in commands:
        assert Path(command[0]).is_absolute() and Path(command[0]).is_file(), command  # runs from any directory
    replay = next(command for command in commands if "replay" in command)
    done = subprocess.run(replay, capture_output=True, text=True, timeout=300, cwd=Path.home(), check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "replay_lightning" / "checkpoints.csv").is_file()


def test_tensorboard_has_probe_scalars_and_heatmaps_on_lightnings_axis(demo_run):
    out, _, _, _, _ = demo_run
    lightning = tb_events.load(out / "tensorboard" / "lightning" / "mnist")
    tags = lightning.Tags()["scalars"]
    for name in probe.HEADLINE_NAMES[:4]:
        assert f"probe/{name}" in tags
    assert not [tag for tag in tags if tag.startswith("probe_")]  # per-layer scalars are opt-in
    assert sorted(lightning.Tags()["images"]) == sorted(heatmap_tag(q) for q in HEATMAP_QUANTITIES)
    e_l2 = tb_events.scalars(lightning, "probe/E_L2_BE")
    assert len(e_l2) == 2 and all(math.isfinite(v) and v > 0 for v in e_l2.values())  # one per epoch
    epoch_steps = sorted(tb_events.scalars(lightning, "val/acc"))
    trials = sorted((out / "tensorboard" / "study").iterdir())
    assert len(trials) == 5
    first = tb_events.load(trials[0])  # trial 0 completes: both epochs, where Lightning logs its epoch metrics
    assert sorted(tb_events.scalars(first, "probe/F_p_BE")) == sorted(tb_events.scalars(first, "val/acc")) == epoch_steps


def test_lightning_checkpoints_per_epoch(demo_run):
    out, _, _, _, _ = demo_run
    assert sorted(p.name for p in (out / "lightning_checkpoints").iterdir()) == ["mnist-epoch=00.ckpt", "mnist-epoch=01.ckpt"]


def test_study_prunes_nothing_untrusted_and_keeps_every_epoch(demo_run):
    out, demo, _, _, _ = demo_run
    study = optuna.load_study(study_name=demo.STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in study.trials]
    # 5 trials cannot establish trust (8 finished trials at least), and the default prunes nothing untrusted
    assert states == [optuna.trial.TrialState.COMPLETE] * 5
    # every epoch a trial trained left its measures, its val acc and one GenProb checkpoint
    files = [parse_genprob_name(p) for p in (out / "genprob_checkpoints").iterdir()]
    assert all(f is not None and f.dataset == "MNIST10" for f in files)
    for t in study.trials:
        epochs = list(get_measures(t))
        assert epochs == list(t.intermediate_values) == list(range(len(epochs)))
        mine = sorted(f.epoch for f in files if f"trial{t.number}" in f.hparams)
        assert mine == epochs
        assert all(f.channel_code == t.params["channel_code"] for f in files if f"trial{t.number}" in f.hparams)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert len(epochs) == 2 and t.value == t.intermediate_values[1]


def test_report_csv_and_plots(demo_run):
    out, _, _, _, _ = demo_run
    checkpoints = pd.read_csv(out / "replay" / "checkpoints.csv")
    assert len(checkpoints) == len(list((out / "genprob_checkpoints").iterdir()))
    assert checkpoints["test_acc"].between(0, 1).all() and checkpoints["E_L2_BE"].notna().all()
    correlations = pd.read_csv(out / "report" / "correlations.csv")
    epoch0 = correlations[(correlations["epoch"] == 0) & (correlations["target"] == "test_acc")]
    assert set(epoch0["measure"]) == set(probe.HEADLINE_NAMES)
    before = epoch0[epoch0["measure"].str.endswith("_BE")]
    assert (before["n"] == 5).all()  # every trial trained epoch 0; BE measures are always defined
    assert before["spearman"].between(-1, 1).all()  # finite coefficients
    plots = sorted((out / "report").glob("*.png"))
    assert {p.name for p in plots} >= {"corr_test_acc_spearman.png", "corr_gap_spearman.png", "scatter_test_acc_epoch0.png"}
    for path in plots:
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
