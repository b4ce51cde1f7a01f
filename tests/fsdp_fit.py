"""FSDP2 (``fully_shard``, DTensor weights) on 2 CPU processes with gloo; run by tests/test_fsdp.py.

``python tests/fsdp_fit.py plain OUT``: ``probe.measure`` and ``ProbeHook`` on a sharded
model, on both ranks (spawned here), against the unsharded model; counts how many gathered
layers are alive at once. ``python tests/fsdp_fit.py lightning OUT``: a ``Trainer`` with
``ModelParallelStrategy`` (Lightning's launcher re-runs this script for rank 1) and
``ProbeCallback`` (synchronous, and in a background thread) plus ``EarlyStopping`` on a probe
metric. Each rank writes ``{mode}{rank}.json``.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import weakref
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probe
import probe.api
from tests.lightning_helpers import conv_net, loader


def _shard(net: nn.Module, mesh) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in net:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)


def _values(report: probe.Report) -> dict[str, float]:
    """Network measures and every per-layer quantity, by name."""
    values = {f"network/{k}": v for k, v in report.network.items()}
    for row in report.genprob_rows():
        values.update({f"{row['layer']}/{k}": float(v) for k, v in row.items() if k != "layer"})
    return values


def _plain_rank(rank: int, init: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from integrations.loop import ProbeHook

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    net = conv_net(depth=2)
    expected = _values(probe.measure(copy.deepcopy(net)))
    _shard(net, init_device_mesh("cpu", (2,)))

    alive, peak = set(), [0]
    gather = probe.api.gather

    def counting_gather(tensor):
        full = gather(tensor)
        alive.add(id(full))
        peak[0] = max(peak[0], len(alive))
        weakref.finalize(full, alive.discard, id(full))
        return full

    probe.api.gather = counting_gather
    report = probe.measure(net)
    probe.api.gather = gather
    with ProbeHook(net, log_dir=Path(out) / f"hook{rank}") as hook:
        hooked = hook.epoch_end(0)
    result = {
        "sharded": type(net[0].weight).__name__,
        "local_rows": net[0].weight.to_local().shape[0],
        "names": [layer.name for layer in report.layers],
        "measure": _values(report),
        "hook": _values(hooked),
        "expected": expected,
        "peak_gathered_layers": peak[0],
    }
    (Path(out) / f"plain{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def plain(out: Path) -> None:
    import torch.multiprocessing as mp

    init = f"file://{tempfile.mktemp(dir=out)}"
    mp.spawn(_plain_rank, args=(init, str(out)), nprocs=2)


def lightning(out: Path) -> None:
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.strategies import ModelParallelStrategy

    from integrations.lightning import ProbeCallback
    from probe.api import gather

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = conv_net()

        def configure_model(self) -> None:
            _shard(self.net, self.device_mesh["data_parallel"])

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Recorder(L.Callback):
        def __init__(self) -> None:
            self.states, self.metrics = {}, {}

        def on_train_epoch_end(self, trainer, module) -> None:  # every rank gathers; rank 0 keeps
            state = {k: gather(v).clone() for k, v in module.state_dict().items()}
            self.states[trainer.current_epoch] = state
            self.metrics[trainer.current_epoch] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                                   if k.startswith("probe/")}

    probes = {"sync": ProbeCallback(use_loggers=False),
              # its own name for F_p_BE's value (two callbacks may not log one name)
              "thread": ProbeCallback(use_loggers=False, background="thread", measures=["fro_p_t7_BE"])}
    recorder = Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=ModelParallelStrategy(), max_epochs=2, logger=False,
                        callbacks=[*probes.values(), EarlyStopping("probe/E_L2_BE", mode="max", patience=100), recorder],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Net(), loader(0))
    rank = trainer.global_rank
    result = {
        "metrics": recorder.metrics,
        "expected": {epoch: probe.measure(state).network for epoch, state in recorder.states.items()},
        **{mode: {"last_epoch": cb.last_epoch, "network": cb.last_report.network} for mode, cb in probes.items()},
    }
    (out / f"lightning{rank}.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():  # gloo's threads joined before exit, which could otherwise abort
        torch.distributed.destroy_process_group()  # ("terminate called without an active exception", seen once in CI)


if __name__ == "__main__":
    {"plain": plain, "lightning": lightning}[sys.argv[1]](Path(sys.argv[2]))
