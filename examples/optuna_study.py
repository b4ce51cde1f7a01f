"""An Optuna study on the digits images that prunes trials from their early-epoch measures.

Each trial trains a small GenProb network (``probe.zoo.GenProbNet``, 8 + 4·digit channels per cell) with a sampled
optimizer, learning rate and channel code, in a plain PyTorch loop. After every epoch it
stores the network measures with the trial (``report_measures``: user attributes, so the
sampler never sees them), reports validation accuracy (``trial.report``) and asks the
study's pruner whether to stop. The pruner is the recommended default,
``LearnedMeasurePruner()``: it learns from every trial's history (pruned trials included)
which signal — a measure with its sign, or validation accuracy — ranks the later accuracy,
promotes trials through successive-halving rungs on it, and prunes nothing while nothing has
earned trust (docs/hpo.md). ``--measure NAME`` uses ``MeasurePruner`` (percentile rule on that
one measure) instead. The summary says why each pruned trial was pruned.

Run::

    .venv/bin/python examples/optuna_study.py                        # 20 trials, sqlite:///optuna_study.db
    .venv/bin/python examples/optuna_study.py --trials 40
    .venv/bin/python examples/optuna_study.py --storage sqlite:////tmp/s.db --measure F_p_BE

Several processes can share one study: start the same command in each (same ``--storage``
and ``--study-name``). The study is reloaded when it exists, so a rerun adds trials.
"""

from __future__ import annotations

import argparse
import math

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import probe
from integrations.optuna import (
    LearnedMeasurePruner,
    MeasurePruner,
    get_measures,
    pruning_reason,
    report_measures,
)
from probe.zoo import GenProbNet, digits_datasets


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    """Top-1 accuracy of ``model`` on a whole dataset (fraction)."""
    model.eval()
    with torch.no_grad():
        images, labels = data.tensors
        return (model(images).argmax(1) == labels).float().mean().item()


def make_objective(args: argparse.Namespace):
    train, val, _ = digits_datasets(seed=args.seed)

    def objective(trial: optuna.Trial) -> float:
        optimizer_name = trial.suggest_categorical("optimizer", ["SGD", "Adam"])
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        code = trial.suggest_categorical("channel_code", ["00000", "42024"])
        torch.manual_seed(args.seed + trial.number)
        model = GenProbNet(code, base=8, step=4)
        optimizer = (torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9) if optimizer_name == "SGD"
                     else torch.optim.Adam(model.parameters(), lr=lr))
        loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(trial.number))
        for epoch in range(args.epochs):
            model.train()
            for images, labels in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()
            report_measures(trial, probe.measure(model, layers="genprob", nonfinite="nan"), epoch)
            trial.report(accuracy(model, val), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
        return accuracy(model, val)

    return objective


def summary(study: optuna.Study) -> str:
    """One line per trial: state, the epoch it stopped at, params, value, and why it was pruned."""
    lines = [f"{'trial':>5}  {'state':<8} {'epoch':>5} {'optimizer':<9} {'lr':>8} {'code':<5} {'val_acc':>7}  why pruned"]
    for t in study.trials:
        last = max(get_measures(t), default=None)
        value = "" if t.value is None else f"{t.value:.3f}"
        reason = pruning_reason(t)
        why = "" if reason is None else (
            f"{reason['signal']} {reason.get('value')} vs threshold {reason.get('threshold')} ({reason['rule']}"
            + (f", rho {reason['rho']:+.2f} over {reason['n']} trials)" if reason.get("n") else ")"))
        lines.append(f"{t.number:>5}  {t.state.name:<8} {'' if last is None else last:>5} "
                     f"{t.params.get('optimizer', ''):<9} {t.params.get('lr', math.nan):8.2g} "
                     f"{t.params.get('channel_code', ''):<5} {value:>7}  {why}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:///optuna_study.db", help="Optuna storage URL (default: %(default)s)")
    parser.add_argument("--study-name", default="probe-digits", help="default: %(default)s")
    parser.add_argument("--trials", type=int, default=20, help="trials to run in this process (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per trial (default: %(default)s)")
    parser.add_argument("--measure", default=None,
                        help="prune on this one measure (MeasurePruner, percentile rule) instead of the default "
                             "LearnedMeasurePruner()")
    parser.add_argument("--percentile", type=float, default=None, help="share of trials kept, %% (default: the pruner's)")
    parser.add_argument("--startup", type=int, default=None, help="completed trials before pruning (default: the pruner's)")
    parser.add_argument("--warmup", type=int, default=None, help="first epoch that can prune (default: the pruner's)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    given = {"percentile": args.percentile, "n_startup_trials": args.startup, "n_warmup_steps": args.warmup}
    options = {name: value for name, value in given.items() if value is not None}
    pruner = LearnedMeasurePruner(**options) if args.measure is None else MeasurePruner(measure=args.measure, **options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.study_name, storage=args.storage, load_if_exists=True, direction="maximize",
        pruner=pruner, sampler=optuna.samplers.TPESampler(seed=args.seed),
    )
    study.optimize(make_objective(args), n_trials=args.trials)

    print(summary(study))
    finished = [t for t in study.trials if t.state.is_finished()]
    pruned = [t for t in finished if t.state == optuna.trial.TrialState.PRUNED]
    epochs = sum(max(get_measures(t), default=-1) + 1 for t in finished)
    print(f"\n{len(pruned)} of {len(finished)} trials pruned; {epochs} epochs trained "
          f"of {len(finished) * args.epochs} without pruning")
    print(f"best: trial {study.best_trial.number}, val_acc {study.best_value:.3f}, {study.best_params}")


if __name__ == "__main__":
    main()
