"""``probe report --spectra N``: per-layer ESD plots of the last epoch's checkpoint of N runs.

The layer table holds no spectra, so each chosen checkpoint is read again and measured with
the settings its replay recorded (``replay.json``), then drawn by :mod:`probe.esd_plot`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from probe.replay.analysis import load_checkpoints
from probe.replay.store import MANIFEST, read_json


def write_spectra(out_dir: str | os.PathLike[str], report_dir: str | os.PathLike[str], *, runs: int) -> list[Path]:
    """Draw ``spectra_{run}_epoch{E}.png`` into ``report_dir`` for the last epoch of the first ``runs`` runs (by name).

    Raises ``FileNotFoundError`` naming the checkpoint if a file has moved since the replay.
    """
    import probe
    from probe.esd_plot import plot_spectra
    from probe.replay.readers import load_checkpoint
    from probe.replay.runner import Options

    if runs < 1:
        raise ValueError(f"--spectra must be at least 1, got {runs}")
    manifest = read_json(Path(out_dir) / MANIFEST)
    options = Options(**{k: v for k, v in manifest.items() if k != "version"})
    table = load_checkpoints(out_dir)
    last = table.sort_values(["run", "epoch"]).groupby("run", sort=True).tail(1).head(runs)
    written = []
    for _, row in last.iterrows():
        if not Path(row["path"]).is_file():
            raise FileNotFoundError(f"checkpoint {row['path']!r} (run {row['run']!r}) is gone; --spectra reads it again")
        checkpoint = load_checkpoint(row["path"])
        layers, settings = options.for_file(checkpoint.layers, genprob=checkpoint.format == "genprob")
        report = probe.measure(checkpoint.state_dict, layers=layers, options=settings)
        name = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(row["run"])).strip("_")[-80:]
        path = Path(report_dir) / f"spectra_{name}_epoch{int(row['epoch'])}.png"
        written.append(plot_spectra(report, path, title=f"{Path(row['path']).name} (epoch {int(row['epoch'])})"))
    return written
