"""Shared makers for the replay tests: small GenProb-format families and hostile files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from probe.replay import genprob_filename, save_genprob_checkpoint
from probe.zoo import GenProbNet

REFERENCE_DIR = Path(__file__).parent / "data" / "genprob"
REFERENCE_FILE = REFERENCE_DIR / "SGD_NIN10001_lr0.08_wd0.0005_mom0.9_bs64_step10_DIGITS10_epoch_4.pth.tar"


def make_family(directory: Path, *, models: int = 3, epochs: int = 3, base: int = 8) -> list[Path]:
    """``models`` × ``epochs`` GenProb files of small random GenProbNets with made-up performance."""
    codes = ("10001", "21012", "00300", "12345", "54321", "33333")
    paths = []
    for m in range(models):
        for epoch in range(epochs):
            torch.manual_seed(100 * m + epoch)
            state = GenProbNet(codes[m % len(codes)], base=base, step=2, stem_channels=4).state_dict()
            acc = 0.5 + 0.05 * m + 0.02 * epoch
            performance = {"test_acc": acc, "test_loss": 1.0 - acc, "train_acc": acc + 0.01 * m, "train_loss": 0.9 - acc}
            name = genprob_filename(optimizer=("SGD", "AdaM")[m % 2], channel_code=codes[m % len(codes)],
                                    hparams=(f"lr0.{m + 1}", "wd0.0005"), dataset="DIGITS10", epoch=epoch)
            paths.append(save_genprob_checkpoint(directory / name, state, performance))
    return paths


class Payload:
    """Unpickling this creates ``marker`` (via ``io.open``): a stand-in for malicious code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (io.open, (self.marker, "w"))


def make_malicious(path: Path, marker: Path) -> Path:
    """A plausible state-dict file whose unpickling would run ``Payload``."""
    torch.save({"state_dict": {"layer.weight": torch.randn(4, 4)}, "extra": Payload(marker)}, path)
    return path


class Crash:
    """Unpickling this ends the process at once (``os._exit``), as a kill for memory or a
    crash in native code would: only a trusted (``unsafe``) load runs it."""

    def __reduce__(self) -> tuple:
        return (os._exit, (3,))


def make_crashing(path: Path) -> Path:
    """A state-dict file whose (unsafe) loading kills the process loading it."""
    torch.save({"state_dict": {"layer.weight": torch.randn(4, 4)}, "extra": Crash()}, path)
    return path


def truncate(source: Path, target: Path, *, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``source`` to ``target``."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def garbage(target: Path, size: int = 600) -> Path:
    """Random bytes with a checkpoint suffix."""
    target.write_bytes(os.urandom(size))
    return target


def group_processes(pgid: int) -> list[str]:
    """Command lines of the live (not zombie) processes of process group ``pgid`` (Linux ``/proc``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{entry}: {command[:120]}")
    return found
