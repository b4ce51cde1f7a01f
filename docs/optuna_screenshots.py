"""Regenerate docs/optuna_dashboard.png and docs/optuna_measure_history.png (not part of CI).

A small synthetic study (16 trials x 8 epochs, measures made up so that they rise with the
objective; no training) is stored in SQLite the way ``report_measures`` stores real ones,
then drawn with ``plot_measure_history`` and shown in optuna-dashboard, photographed with
headless Chromium (``apt-get install chromium``).

    .venv/bin/python docs/optuna_screenshots.py
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshots import chromium_screenshot, dashboard

from integrations.optuna import MeasurePruner, plot_measure_history, report_measures
from probe import HEADLINE_NAMES

DOCS = Path(__file__).resolve().parent


def make_study(storage: str) -> optuna.Study:
    rng = np.random.default_rng(0)
    study = optuna.create_study(study_name="synthetic", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=MeasurePruner(n_startup_trials=4, n_warmup_steps=2))

    def objective(trial: optuna.Trial) -> float:
        quality = 1 - abs(math.log10(trial.suggest_float("lr", 1e-4, 1e-1, log=True)) + 2) / 3
        for epoch in range(8):
            measures = {name: quality * (1 + epoch / 8) + rng.normal(0, 0.03) + offset
                        for offset, name in enumerate(HEADLINE_NAMES)}
            if epoch == 0:  # as at initialisation: EVBMF keeps nothing, AE measures undefined
                measures.update({name: math.nan for name in HEADLINE_NAMES if name.endswith("_AE")})
            report_measures(trial, measures, epoch)
            trial.report(quality * epoch / 8, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return quality

    study.optimize(objective, n_trials=16)
    return study


def screenshot(db: Path, out: Path) -> None:
    with dashboard(db) as base:
        chromium_screenshot(f"{base}/dashboard/studies/1/smartSelection", out, (1400, 1900), budget_ms=20000)


def main() -> None:
    matplotlib.use("Agg")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "study.db"
        study = make_study(f"sqlite:///{db}")
        ax = plot_measure_history(study, measure="E_L2_BE")
        ax.figure.savefig(DOCS / "optuna_measure_history.png", dpi=100)
        screenshot(db, DOCS / "optuna_dashboard.png")
    print(f"wrote {DOCS / 'optuna_measure_history.png'} and {DOCS / 'optuna_dashboard.png'}")


if __name__ == "__main__":
    main()
