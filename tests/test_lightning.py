"""integrations.lightning.ProbeCallback with real Trainers of both Lightning packages (CPU, tiny models).

Every logged value is checked against ``probe.measure`` of a copy of the weights taken at
that epoch; event files are read back with TensorBoard's own reader.
"""

from __future__ import annotations

import copy
import csv
import importlib
import time

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import probe
from integrations.lightning import ProbeCallback
from integrations.tensorboard import LAYER_QUANTITIES, LogOptions, heatmap_tag, layer_tag, spectrum_tag
from tests.tb_events import close, layout, load, scalars, value_at

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:.*(num_workers|log_every_n_steps).*")]

PACKAGES = ("lightning.pytorch", "pytorch_lightning")
BATCHES = 4  # training batches per epoch, one optimizer step each


@pytest.fixture(params=PACKAGES)
def pl(request):
    """The Lightning package under test (``lightning.pytorch`` and ``pytorch_lightning``)."""
    return pytest.importorskip(request.param)


def _loader(seed: int, n: int = 8 * BATCHES) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator))
    return DataLoader(data, batch_size=8)


def _module(pl, *, validation: bool = True, depth: int = 0, step_sleep: float = 0.0):
    """Conv(3→8), Conv(8→8), then ``depth`` × Linear(256→256) (cheap to train, slow to measure), Linear(→10).

    ``step_sleep`` seconds per training step stand in for a GPU-bound step (the training
    thread waits with the GIL released), so an epoch outlasts a measurement.
    """

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            middle = [nn.Linear(128, 256), *[nn.Linear(256, 256) for _ in range(depth)]] if depth else []
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), *middle,
                                     nn.Linear(256 if depth else 128, 10))
            self.steps = 0

        def training_step(self, batch, batch_idx):
            self.steps += 1
            time.sleep(step_sleep)
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return _loader(0)

    if validation:
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

        Net.validation_step = validation_step
        Net.val_dataloader = lambda self: _loader(1, 16)
    return Net()


def _recorder(pl, probe_callback: ProbeCallback | None = None):
    class Recorder(pl.Callback):
        """Copies the weights and the probe entries of callback_metrics at each epoch end;
        with ``probe_callback``, also its ``last_epoch`` with the metrics (``lag``)."""

        def __init__(self) -> None:
            self.states, self.steps, self.at_validation_end, self.at_train_epoch_end = {}, {}, {}, {}
            self.lag: dict[int, tuple[int | None, dict[str, float]]] = {}

        def on_validation_end(self, trainer, module) -> None:
            if not trainer.sanity_checking:
                self.at_validation_end[trainer.current_epoch] = _probe_metrics(trainer)

        def on_train_epoch_end(self, trainer, module) -> None:
            epoch = trainer.current_epoch
            self.states[epoch] = copy.deepcopy(module.state_dict())
            self.steps[epoch] = trainer.global_step
            self.at_train_epoch_end[epoch] = _probe_metrics(trainer)
            if probe_callback is not None:
                self.lag[epoch] = (probe_callback.last_epoch, _probe_metrics(trainer))

    return Recorder()


def _probe_metrics(trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("probe/")}


def _trainer(pl, tmp_path, callbacks, *, max_epochs: int = 3, logger=None, **kwargs):
    if logger is None:
        logger = importlib.import_module(f"{pl.__name__}.loggers").TensorBoardLogger(tmp_path, name="tb", version=0)
    options = {"enable_checkpointing": False, **kwargs}
    return pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, **options)


def _expected(state: dict) -> probe.Report:
    return probe.measure(state)  # the state dict route selects the same tensors as the module route


def test_logged_values_are_the_measures_of_each_epochs_weights(pl, tmp_path) -> None:
    recorder, callback = _recorder(pl), ProbeCallback(options=LogOptions(layer_quantities=LAYER_QUANTITIES, histograms=True))
    trainer = _trainer(pl, tmp_path, [recorder, callback])  # recorder first: order must not matter
    trainer.fit(_module(pl))

    events = load(tmp_path / "tb" / "version_0")
    assert [t.epoch for t in callback.timings] == [0, 1, 2]  # the sanity check was not measured
    for epoch, state in recorder.states.items():
        expected = _expected(state)
        step = recorder.steps[epoch]
        assert step == BATCHES * (epoch + 1)
        for name in probe.HEADLINE_NAMES:
            assert close(value_at(events, f"probe/{name}", step), expected.network[name]), (epoch, name)
            # in callback_metrics before on_validation_end, as float32
            assert close(recorder.at_validation_end[epoch][f"probe/{name}"], expected.network[name])
        layer = expected.layers[-1]
        assert close(scalars(events, layer_tag("ER", "BE", "in", layer.name))[step], layer.unfoldings["in"].BE["ER"])
        assert [h.step for h in events.Histograms(spectrum_tag("net.0.weight", "out"))] == [4, 8, 12]
    assert sorted(scalars(events, "probe/E_L2_BE")) == [4, 8, 12]
    assert [image.step for image in events.Images(heatmap_tag("SQ"))] == [4, 8, 12]
    assert "probe layers BE" in [category.title for category in layout(events).category]
    assert callback.last_epoch == 2
    assert callback.last_report.network == pytest.approx(_expected(recorder.states[2]).network, nan_ok=True)


def test_monitors_work_without_a_validation_loop(pl, tmp_path) -> None:
    callbacks_module = importlib.import_module(f"{pl.__name__}.callbacks")
    recorder = _recorder(pl)
    stopper = callbacks_module.EarlyStopping("probe/E_L2_BE", mode="max", patience=10)
    checkpoint = callbacks_module.ModelCheckpoint(tmp_path / "ckpt", monitor="probe/SQ_p_BE", mode="max", save_top_k=1)
    callback = ProbeCallback(step="epoch")
    trainer = _trainer(pl, tmp_path, [stopper, checkpoint, callback, recorder], enable_checkpointing=True)
    trainer.fit(_module(pl, validation=False))

    events = load(tmp_path / "tb" / "version_0")
    logged = scalars(events, "probe/SQ_p_BE")
    assert sorted(logged) == [0, 1, 2]  # step="epoch"
    expected = {epoch: _expected(state).network["SQ_p_BE"] for epoch, state in recorder.states.items()}
    assert all(close(logged[e], expected[e]) for e in expected)
    assert float(checkpoint.best_model_score) == pytest.approx(max(logged.values()), rel=1e-6)
    assert float(stopper.best_score) == pytest.approx(max(scalars(events, "probe/E_L2_BE").values()), rel=1e-6)
    # the monitors, listed first, still saw every epoch's value (Lightning runs them after the others)
    assert recorder.at_train_epoch_end[2]["probe/SQ_p_BE"] == pytest.approx(expected[2], rel=1e-6)


@pytest.mark.parametrize("pl", ["pytorch_lightning"], indirect=True)
def test_every_n_epochs_and_a_non_tensorboard_logger(pl, tmp_path) -> None:
    loggers = importlib.import_module(f"{pl.__name__}.loggers")
    recorder, callback = _recorder(pl), ProbeCallback(every_n_epochs=2, measures=["E_L2_AE", "fro_wmean_t0_BE"])
    logger = [loggers.CSVLogger(tmp_path, name="csv", version=0), loggers.TensorBoardLogger(tmp_path, name="tb", version=0)]
    trainer = _trainer(pl, tmp_path, [recorder, callback], max_epochs=4, logger=logger)
    trainer.fit(_module(pl))

    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("probe/E_L2_AE")]
    assert [int(row["step"]) for row in rows] == [8, 16]  # epochs 1 and 3
    for row, epoch in zip(rows, (1, 3)):
        expected = _expected(recorder.states[epoch])
        assert close(float(row["probe/E_L2_AE"]), expected.network["E_L2_AE"])
        assert close(float(row["probe/fro_wmean_t0_BE"]), expected.value("fro_wmean_t0_BE"))
    events = load(tmp_path / "tb" / "version_0")
    assert sorted(scalars(events, "probe/fro_wmean_t0_BE")) == [8, 16]
    assert not any(t.startswith("probe/E_L2_BE") for t in events.Tags()["scalars"])
    assert sorted(recorder.at_validation_end) == [0, 1, 2, 3]
    assert "probe/E_L2_AE" not in recorder.at_validation_end[0]


def test_resume_restores_state_and_logs_no_duplicate_step(pl, tmp_path) -> None:
    callbacks_module = importlib.import_module(f"{pl.__name__}.callbacks")

    def checkpointing():
        # saved at validation end: the resumed fit replays the rest of that epoch (on_train_epoch_end),
        # where a callback without state would measure and log the epoch a second time
        return callbacks_module.ModelCheckpoint(tmp_path / "ckpt", save_last=True, save_top_k=-1,
                                                save_on_train_epoch_end=False)

    first, recorder = ProbeCallback(), _recorder(pl)
    _trainer(pl, tmp_path, [recorder, first, checkpointing()], max_epochs=2, enable_checkpointing=True).fit(_module(pl))
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    assert {"last_epoch": 1, "measured_epoch": 1} in state.values()

    resumed = ProbeCallback()
    trainer = _trainer(pl, tmp_path, [recorder, resumed, checkpointing()], max_epochs=4, enable_checkpointing=True)
    trainer.fit(_module(pl), ckpt_path=tmp_path / "ckpt" / "last.ckpt")

    assert [t.epoch for t in resumed.timings] == [2, 3]
    events = load(tmp_path / "tb" / "version_0")  # both runs wrote here
    logged = scalars(events, "probe/E_L2_BE")  # raises on a duplicate step
    assert sorted(logged) == [4, 8, 12, 16]
    for epoch in range(4):
        assert close(logged[recorder.steps[epoch]], _expected(recorder.states[epoch]).network["E_L2_BE"])


@pytest.mark.parametrize(("pl", "kind"), [("lightning.pytorch", True), ("pytorch_lightning", "process")], indirect=["pl"])
def test_background_mode_logs_each_epoch_and_blocks_little(pl, kind, tmp_path) -> None:
    # heatmaps are drawn on the training thread (when a report is logged); this test times the measuring
    callback = ProbeCallback(background=kind, options=LogOptions(heatmaps=(), layer_quantities=("SQ",), histograms=False))
    recorder = _recorder(pl, callback)
    trainer = _trainer(pl, tmp_path, [recorder, callback], max_epochs=3)
    trainer.fit(_module(pl, depth=8, step_sleep=0.1))  # measuring takes much longer than copying

    events = load(tmp_path / "tb" / "version_0")
    logged = scalars(events, "probe/E_L2_BE")
    assert sorted(logged) == [4, 8, 12]  # all flushed, each at its own epoch's step
    for epoch, state in recorder.states.items():
        expected = _expected(state)  # the copy, not the later weights, was measured
        assert close(logged[recorder.steps[epoch]], expected.network["E_L2_BE"])
        assert close(value_at(events, "probe/F_p_AE", recorder.steps[epoch]), expected.network["F_p_AE"])
    assert callback.last_epoch == 2 and callback._measurer is None  # flushed and shut down
    assert [t.epoch for t in callback.timings] == [0, 1, 2]
    # epoch 0 also pays for opening the event file and writing the layout: compare the later epochs
    blocking = sum(t.blocking_s for t in callback.timings[1:])
    measuring = sum(t.measure_s for t in callback.timings[1:])
    assert blocking < 0.25 * measuring, callback.timings
    # callback_metrics hold the latest finished report, that of last_epoch (at most the current epoch)
    for epoch, (last_epoch, metrics) in recorder.lag.items():
        if last_epoch is None:
            assert metrics == {}
            continue
        assert last_epoch <= epoch
        assert close(metrics["probe/E_L2_BE"], _expected(recorder.states[last_epoch]).network["E_L2_BE"])


@pytest.mark.parametrize("pl", ["pytorch_lightning"], indirect=True)
def test_monitoring_without_a_logger(pl, tmp_path) -> None:
    recorder, callback = _recorder(pl), ProbeCallback(use_loggers=False, measures=["SQ_p_BE"])
    trainer = _trainer(pl, tmp_path, [recorder, callback], max_epochs=2, logger=False)
    trainer.fit(_module(pl))
    for epoch, state in recorder.states.items():
        assert recorder.at_validation_end[epoch] == {"probe/SQ_p_BE": pytest.approx(_expected(state).network["SQ_p_BE"])}
    assert callback.last_epoch == 1


def test_bad_use_fails_early_with_a_clear_message(pl, tmp_path) -> None:
    with pytest.raises(ValueError, match="the Trainer has no logger.*ProbeCallback\\(use_loggers=False\\)"):
        _trainer(pl, tmp_path, [ProbeCallback()], logger=False).fit(_module(pl))

    module = _module(pl)
    selects_nothing = ProbeCallback(layers=lambda name, tensor: "decoder" in name)
    with pytest.raises(ValueError, match=r"ProbeCallback\(layers=.*\) on Net: no layer selected"):
        _trainer(pl, tmp_path, [selects_nothing]).fit(module)
    assert module.steps == 0  # failed at setup, before any training

    with pytest.raises(ValueError, match="unknown network measure measures='SQ_p'"):
        ProbeCallback(measures=["E_L2_BE", "SQ_p"])
    with pytest.raises(ValueError, match="every_n_epochs must be a positive int, got 0"):
        ProbeCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="copy_to must be 'cpu' or 'model', got 'gpu'"):
        ProbeCallback(copy_to="gpu")
    with pytest.raises(ValueError, match="background must be False, True, 'thread' or 'process', got 'async'"):
        ProbeCallback(background="async")
    with pytest.raises(ValueError, match="step must be"):
        ProbeCallback(step="batch")


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_measuring_errors_fail_the_fit(pl, tmp_path) -> None:
    module = _module(pl)
    with torch.no_grad():
        module.net[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'net.0.weight' has non-finite weights"):
        _trainer(pl, tmp_path, [ProbeCallback(nonfinite="raise", background=True)], max_epochs=2).fit(module)
