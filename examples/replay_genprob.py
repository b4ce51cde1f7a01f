"""Replay a family of GenProb-format checkpoints and run the paper's analysis on it.

The real GenProb download is not needed: this script makes a small family itself —
GenProb's architecture (scaled down) trained on the scikit-learn digits images with two
optimizers, three learning rates and two channel codes, one GenProb file per model per
epoch — then replays it with two worker processes and correlates each measure with test
accuracy and the generalisation gap, epoch by epoch, writing a CSV and the paper-style plots.

Run (about a minute on a laptop CPU)::

    python examples/replay_genprob.py --out demo_out/replay_genprob

The same three steps from the shell, on your own files::

    probe replay 'DIR/*_DIGITS10_epoch_*.pth.tar' --out OUT --workers 2 --genprob-csv
    probe report OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import probe
from probe.replay import genprob_filename, replay, save_genprob_checkpoint
from probe.replay.analysis import write_report
from probe.zoo import GenProbNet, digits_datasets

OPTIMIZERS = {"SGD": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4),
              "AdaM": lambda params, lr: torch.optim.Adam(params, lr=lr / 10, weight_decay=5e-4)}
LEARNING_RATES = (0.3, 0.1, 0.01)
CHANNEL_CODES = ("10001", "32123")


def evaluate(model: nn.Module, data: TensorDataset) -> tuple[float, float]:
    """Accuracy (fraction) and mean cross-entropy of ``model`` on ``data``."""
    model.eval()
    with torch.no_grad():
        images, labels = data.tensors
        logits = model(images)
        return float((logits.argmax(1) == labels).float().mean()), float(nn.functional.cross_entropy(logits, labels))


def make_family(directory: Path, *, epochs: int) -> list[Path]:
    """Train every optimizer × learning rate × channel code and save one GenProb file per epoch."""
    train, _, test = digits_datasets(seed=0)
    written = []
    for optimizer_name, make_optimizer in OPTIMIZERS.items():
        for lr in LEARNING_RATES:
            for code in CHANNEL_CODES:
                torch.manual_seed(0)
                model = GenProbNet(code, num_classes=10, base=16, step=4)
                optimizer = make_optimizer(model.parameters(), lr)
                loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
                history: dict[int, dict[str, float]] = {}
                for epoch in range(epochs):
                    model.train()
                    for images, labels in loader:
                        optimizer.zero_grad()
                        nn.functional.cross_entropy(model(images), labels).backward()
                        optimizer.step()
                    train_acc, train_loss = evaluate(model, train)
                    test_acc, test_loss = evaluate(model, test)
                    performance = {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc, "train_loss": train_loss}
                    name = genprob_filename(optimizer=optimizer_name, channel_code=code, dataset="DIGITS10", epoch=epoch,
                                            hparams=(f"lr{lr}", "wd0.0005", "bs64"))
                    written.append(save_genprob_checkpoint(directory / name, model.state_dict(), performance, history=history))
                    history[epoch] = performance
                print(f"trained {optimizer_name} lr={lr} code={code}: test_acc={test_acc:.3f}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out/replay_genprob"), help="working directory")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per model (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="replay worker processes (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and no oversubscription

    checkpoints = args.out / "checkpoints"
    if any(checkpoints.glob("*.pth.tar")):  # the family trained by an earlier run, whatever --epochs says now
        print(f"reusing the family in {checkpoints} (delete it, or give another --out, to train one with --epochs)")
    else:
        make_family(checkpoints, epochs=args.epochs)
    # Re-running resumes: finished checkpoints are skipped.
    outcomes, tables = replay([checkpoints], args.out / "replay", workers=args.workers, genprob_csv=True)
    counts = {status: sum(o.status == status for o in outcomes) for status in ("measured", "done", "failed")}
    print(f"{len(outcomes)} checkpoints: {counts['measured']} measured, {counts['done']} already done, {counts['failed']} failed"
          f" -> {tables.checkpoints}, {tables.layers}, {len(tables.genprob)} GenProb CSVs")

    files = write_report(args.out / "replay", by=("dataset",), scatter_epochs=None)
    test_acc = files.correlations[files.correlations["target"] == "test_acc"]
    spearman = test_acc.pivot(index="measure", columns="epoch", values="spearman").reindex(probe.HEADLINE_NAMES)
    pairs = test_acc.pivot(index="measure", columns="epoch", values="n").reindex(probe.HEADLINE_NAMES)
    print("\nSpearman correlation with test accuracy across the 12 models, by epoch (AE rows: over the models whose AE")
    print("measure is defined; how many is the second table):")
    print(spearman.round(2).to_string())
    print("\nmodels with a defined value:")
    print(pairs.astype("Int64").to_string())
    print(f"\n{files.correlations_csv}")
    for path in files.plots:
        print(path)


if __name__ == "__main__":
    main()
