"""GenProb files (SPEC §6): file names, the checkpoint writer, and the per-layer CSV.

A GenProb checkpoint is ``{OPTIMIZER}_NIN{CODE}_{hparam tokens}_{DATASET}_epoch_{e}.pth.tar``,
holding ``state_dict_network`` and ``performance_statistics`` (``test_acc1_epoch_{e}``,
``test_loss_epoch_{e}``, ``train_acc1_epoch_{e}``, ``train_loss_epoch_{e}``).

>>> name = parse_genprob_name("SGD_NIN10001_lr0.08_wd0.0005_DIGITS10_epoch_4.pth.tar")
>>> name.optimizer, name.channel_code, name.hparams, name.dataset, name.epoch
('SGD', '10001', ('lr0.08', 'wd0.0005'), 'DIGITS10', 4)
>>> name.filename == genprob_filename(optimizer="SGD", channel_code="10001",
...     hparams=("lr0.08", "wd0.0005"), dataset="DIGITS10", epoch=4)
True
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from probe._atomic import atomic_write
from probe.aggregate import VARIANTS
from probe.quantities import QUANTITIES

SUFFIX = ".pth.tar"
PERFORMANCE_KEYS = ("test_acc", "test_loss", "train_acc", "train_loss")
"""Performance of one epoch as the project names it; ``gap = test_acc - train_acc`` is derived."""
PERFORMANCE_COLUMNS = (*PERFORMANCE_KEYS, "gap")
_STATISTICS_STEMS = {"test_acc": "test_acc1", "test_loss": "test_loss", "train_acc": "train_acc1", "train_loss": "train_loss"}

_METRIC_COLUMNS = tuple(f"{u}_{q}_{v}" for v in VARIANTS for u in ("in", "out") for q in QUANTITIES)
_WEIGHT_COLUMNS = ("in_weight_BE", "out_weight_BE", "in_weight_AE", "out_weight_AE")
CSV_HEADER = (*PERFORMANCE_COLUMNS, *_METRIC_COLUMNS, "path", "model_id", "type", *_WEIGHT_COLUMNS)
"""Header of the reference's per-layer CSV (SPEC §6), in its order."""

_CODE = re.compile(r"NIN(\d{5})$")
_NAME = re.compile(r"^(?P<stem>.+)_(?P<dataset>[^_]+)_epoch_(?P<epoch>\d+)\.pth\.tar$")


@dataclass(frozen=True)
class GenProbName:
    """What a GenProb file name says about its checkpoint.

    ``optimizer`` (the tokens before ``NIN…``), the five-digit ``channel_code`` (the
    reference's ``model_id``), ``hparams`` (the tokens between the code and the dataset,
    e.g. ``("lr0.08", "wd0.0005")``), ``dataset`` and ``epoch``.
    """

    optimizer: str
    channel_code: str
    hparams: tuple[str, ...]
    dataset: str
    epoch: int

    @property
    def model_id(self) -> str:
        """The reference's ``model_id`` column: the channel code."""
        return self.channel_code

    @property
    def run(self) -> str:
        """The file name without ``_epoch_{e}.pth.tar``: identifies one trained model."""
        return "_".join([self.optimizer, f"NIN{self.channel_code}", *self.hparams, self.dataset])

    @property
    def filename(self) -> str:
        """The canonical file name."""
        return f"{self.run}_epoch_{self.epoch}{SUFFIX}"


def parse_genprob_name(name: str | os.PathLike[str]) -> GenProbName | None:
    """Parse a GenProb file name (a path is fine; only its last component is read).

    Returns
    -------
    GenProbName or None
        ``None`` when the name is not of the form ``OPT_NIN{5 digits}[_tokens]_DATASET_epoch_E.pth.tar``.
    """
    match = _NAME.match(Path(name).name)
    if match is None:
        return None
    tokens = match["stem"].split("_")
    code_at = next((i for i, token in enumerate(tokens) if _CODE.search(token)), None)
    if code_at is None:
        return None
    code_token = tokens[code_at]
    optimizer = "_".join([*tokens[:code_at], code_token[: -len("NIN00000")]]).strip("_")
    if not optimizer:
        return None
    return GenProbName(
        optimizer=optimizer,
        channel_code=_CODE.search(code_token)[1],  # type: ignore[index]
        hparams=tuple(tokens[code_at + 1 :]),
        dataset=match["dataset"],
        epoch=int(match["epoch"]),
    )


def genprob_filename(*, optimizer: str, channel_code: str, dataset: str, epoch: int, hparams: Sequence[str] = ()) -> str:
    """Build a GenProb file name, e.g. ``AdaM_NIN01234_lr0.03_CIFAR10_epoch_5.pth.tar``.

    Parameters
    ----------
    optimizer:
        Optimizer token (no ``NIN`` code in it).
    channel_code:
        Five digits, one per cell.
    dataset:
        Dataset token, without underscores (e.g. ``CIFAR10``).
    epoch:
        Non-negative epoch number.
    hparams:
        Hyperparameter tokens without underscores, e.g. ``("lr0.03", "wd0.0005")``.

    Returns
    -------
    str
        The file name; ``parse_genprob_name`` gives the same fields back.
    """
    if not (len(channel_code) == 5 and channel_code.isdigit()):
        raise ValueError(f"channel_code must be five digits, got {channel_code!r}")
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    for label, token in [("optimizer", optimizer), ("dataset", dataset), *(("hparams", t) for t in hparams)]:
        if not token or "_" in token or "/" in token or os.sep in token:
            raise ValueError(f"{label} tokens must be non-empty and free of '_' and path separators, got {token!r}")
    if "NIN" in optimizer:
        raise ValueError(f"optimizer must not contain 'NIN', got {optimizer!r}")
    name = GenProbName(optimizer, channel_code, tuple(hparams), dataset, epoch)
    return name.filename


def statistics_keys(epoch: int) -> dict[str, str]:
    """Map the project's performance names to GenProb's ``performance_statistics`` keys for ``epoch``."""
    return {key: f"{stem}_epoch_{epoch}" for key, stem in _STATISTICS_STEMS.items()}


def performance_from_statistics(statistics: Mapping[str, object], epoch: int) -> dict[str, float]:
    """The performance row of ``epoch`` from GenProb's ``performance_statistics``.

    Returns
    -------
    dict
        ``test_acc, test_loss, train_acc, train_loss, gap`` (fractions; NaN where a key is absent).

    Raises
    ------
    ValueError
        An entry is not one number (e.g. a tensor of several elements), naming the key.
    """
    row = {key: _as_float(stat, statistics.get(stat, math.nan)) for key, stat in statistics_keys(epoch).items()}
    row["gap"] = row["test_acc"] - row["train_acc"]
    return row


def save_genprob_checkpoint(
    path: str | os.PathLike[str],
    model_state: Mapping[str, torch.Tensor],
    performance: Mapping[str, float],
    *,
    epoch: int | None = None,
    history: Mapping[int, Mapping[str, float]] | None = None,
) -> Path:
    """Write a GenProb-format checkpoint (atomically: a temporary file, then a rename).

    Parameters
    ----------
    path:
        Destination file, normally named by ``genprob_filename`` (a directory is not accepted).
    model_state:
        The network's state dict; tensors are saved detached, on the CPU.
    performance:
        This epoch's ``test_acc, test_loss, train_acc, train_loss`` (accuracies as fractions).
    epoch:
        The checkpoint's epoch; default: the epoch in the file name (required if the name
        is not a GenProb name).
    history:
        Earlier epochs' performance (``{epoch: {...}}``), stored too, as GenProb does.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if epoch is None:
        parsed = parse_genprob_name(path)
        if parsed is None:
            raise ValueError(f"epoch is required: {path.name!r} is not a GenProb file name (see genprob_filename)")
        epoch = parsed.epoch
    statistics: dict[str, float] = {}
    for e, perf in sorted({**(history or {}), epoch: performance}.items()):
        missing = [key for key in PERFORMANCE_KEYS if key not in perf]
        if missing:
            raise ValueError(f"performance of epoch {e} lacks {missing}; expected keys {PERFORMANCE_KEYS}")
        statistics.update({stat: float(perf[key]) for key, stat in statistics_keys(e).items()})
    state = {name: t.detach().cpu().clone() if isinstance(t, torch.Tensor) else t for name, t in model_state.items()}
    payload = {"state_dict_network": state, "performance_statistics": statistics, "epoch": epoch}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def write_genprob_csv(
    path: str | os.PathLike[str],
    models: Iterable[tuple[Mapping[str, float], str, Sequence[Mapping[str, object]]]],
) -> Path:
    """Write the reference's per-layer CSV (SPEC §6) for a set of models.

    Parameters
    ----------
    path:
        Destination ``.csv``.
    models:
        ``(performance, model_id, layer_rows)`` per model: ``performance`` has
        ``test_acc, test_loss, train_acc, train_loss`` (``gap`` is recomputed), ``layer_rows``
        are ``Report.genprob_rows()`` (or rows with the same keys). ``path`` (the path norm)
        is written as 0.

    Returns
    -------
    Path
        ``path``; one row per layer and an empty row after each model, as the reference.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for performance, model_id, layer_rows in models:
            perf = [float(performance[key]) for key in PERFORMANCE_KEYS]
            perf.append(perf[0] - perf[2])
            for row in layer_rows:
                writer.writerow([*perf, *(row[c] for c in _METRIC_COLUMNS), 0, model_id, row["type"],
                                 *(row[c] for c in _WEIGHT_COLUMNS)])
            writer.writerow([])
    return path


def _as_float(key: str, value: object) -> float:
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"performance_statistics[{key!r}] is a tensor of shape {tuple(value.shape)}, not one number")
    try:
        return float(value.item() if isinstance(value, torch.Tensor) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ValueError(f"performance_statistics[{key!r}] is not a number: {value!r:.80}") from error
