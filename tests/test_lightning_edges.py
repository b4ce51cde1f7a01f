"""ProbeCallback in the setups power users run: lazy modules, their own ``probe/*`` metrics,
two validations at one optimizer step, LR-scheduler monitors, ``barebones=True``, SWA,
non-finite weights. Real Trainers, tiny models; every value checked against ``probe.measure``.
"""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
from torch import nn

import probe
from integrations.lightning import ProbeCallback
from tests.lightning_helpers import PACKAGES, loader, module, recorder, recording_stopper, trainer
from tests.tb_events import close, load, scalars

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:.*(num_workers|log_every_n_steps|LeafSpec|exists and is not empty).*")]


@pytest.fixture(params=PACKAGES)
def pl(request):
    """The Lightning package under test (``lightning.pytorch`` and ``pytorch_lightning``)."""
    return pytest.importorskip(request.param)


def _callbacks(pl):
    return importlib.import_module(f"{pl.__name__}.callbacks")


# ------------------------------------------------------------------ 1. lazy modules

def _lazy_module(pl):
    class LazyNet(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return loader(0)

    return LazyNet()


def test_lazy_modules_are_measured_once_materialised(pl, tmp_path) -> None:
    callback = ProbeCallback(use_loggers=False)
    record = recorder(pl, callback)
    net = _lazy_module(pl)
    trainer(pl, tmp_path, [callback, record], max_epochs=2, logger=False).fit(net)
    assert [layer.name for layer in callback.last_report.layers] == ["net.0.weight", "net.3.weight"]
    assert callback.last_epoch == 1
    for epoch, (last_epoch, metrics) in record.lag.items():
        assert last_epoch == epoch
        assert close(metrics["probe/E_L2_BE"], probe.measure(record.states[epoch]).network["E_L2_BE"]), epoch


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_lazy_modules_that_select_nothing_fail_at_the_first_batch(pl, tmp_path) -> None:
    net = _lazy_module(pl)
    with pytest.raises(ValueError, match=r"ProbeCallback\(layers=.*\) on LazyNet: no layer selected"):
        trainer(pl, tmp_path, [ProbeCallback(layers=lambda name, tensor: "decoder" in name)]).fit(net)


# ------------------------------------------------------------------ 2. the probe/ namespace

def _module_logging(pl, name: str, *, where: str = "validation_step"):
    """The helper module, also logging ``name`` (its own metric): 0.25 (+ 0.125 an epoch) per validation
    batch, or 0.5 in ``on_validation_epoch_end`` or per training batch (``where``)."""
    net = module(pl)
    if where == "validation_step":
        original = type(net).validation_step

        def validation_step(self, batch, batch_idx):
            original(self, batch, batch_idx)
            self.log(name, 0.25 + 0.125 * self.current_epoch)

        type(net).validation_step = validation_step
    elif where == "on_validation_epoch_end":
        type(net).on_validation_epoch_end = lambda self: self.log(name, 0.5)
    else:
        original_training = type(net).training_step

        def training_step(self, batch, batch_idx):
            loss = original_training(self, batch, batch_idx)
            self.log(name, 0.5, on_step=False, on_epoch=True)
            return loss

        type(net).training_step = training_step
    return net


def test_a_users_own_probe_metric_passes_through(pl, tmp_path) -> None:
    stopper = _callbacks(pl).EarlyStopping("probe/acc", mode="max", patience=5)
    callback = ProbeCallback(measures=["E_L2_BE"])
    record = recorder(pl)
    trainer(pl, tmp_path, [stopper, callback, record], max_epochs=2).fit(_module_logging(pl, "probe/acc"))
    assert float(stopper.best_score) == 0.375  # the module's values, untouched (epoch 0: 0.25, epoch 1: 0.375)
    events = load(tmp_path / "tb" / "version_0")
    assert scalars(events, "probe/acc") == {3: 0.25, 7: 0.375}  # logged by Lightning, once per step
    logged = scalars(events, "probe/E_L2_BE")
    assert sorted(logged) == [3, 7]
    for epoch, state in record.states.items():
        assert close(logged[4 * epoch + 3], probe.measure(state).network["E_L2_BE"])


@pytest.mark.parametrize("where", ["validation_step", "training_step", "on_validation_epoch_end"])
def test_a_module_logging_a_name_the_callback_logs_is_refused_before_it_is_logged(pl, where, tmp_path) -> None:
    net = _module_logging(pl, "probe/F_p_BE", where=where)
    with pytest.raises(ValueError, match=rf"'probe/F_p_BE' is logged by `{where}` too"):
        trainer(pl, tmp_path, [ProbeCallback(measures=["E_L2_BE", "F_p_BE"])]).fit(net)
    assert net.steps <= 1  # refused at the first batch that logged it
    events = tmp_path / "tb" / "version_0"
    assert not events.exists() or "probe/F_p_BE" not in load(events).Tags()["scalars"]


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_validate_and_test_outside_fit_are_left_alone(pl, tmp_path) -> None:
    net = _module_logging(pl, "probe/F_p_BE")  # the callback logs nothing outside fit: no clash there
    run = trainer(pl, tmp_path, [ProbeCallback(measures=["F_p_BE"])])
    assert run.validate(net, loader(1, 16), verbose=False) == [{"probe/F_p_BE": 0.25, "val_loss": pytest.approx(
        float(run.callback_metrics["val_loss"]))}]


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_two_probe_callbacks_logging_one_name_are_refused_at_fit_start(pl, tmp_path) -> None:
    net = module(pl)
    twice = [ProbeCallback(measures=["E_L2_BE", "F_p_BE"]), ProbeCallback(measures=["F_p_BE"], every_n_epochs=2)]
    with pytest.raises(ValueError, match=r"two ProbeCallbacks log \['probe/F_p_BE'\]"):
        trainer(pl, tmp_path, twice).fit(net)
    assert net.steps == 0


# ------------------------------------------------------------------ 6. two validations at one optimizer step

@pytest.mark.parametrize("background", [False, "thread"])
@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_patience_advances_once_per_optimizer_step(pl, background, tmp_path) -> None:
    stopper = recording_stopper(pl, "probe/E_L2_BE", mode="max", patience=100)
    callback = ProbeCallback(use_loggers=False, background=background)
    # 4 batches an epoch, one optimizer step each 4: validations at global steps 0, 0, 0, 1 | 1, 1, 1, 2
    run = trainer(pl, tmp_path, [stopper, callback], max_epochs=2, logger=False, accumulate_grad_batches=4,
                  val_check_interval=0.25)
    run.fit(module(pl))
    assert [step for step, _, _ in stopper.reads] == [0, 1, 2]
    for step, value, state in stopper.reads:
        assert close(value, probe.measure(state).network["E_L2_BE"]), step
    best, wait = -math.inf, 0  # EarlyStopping's rule (mode="max", min_delta=0), once per fresh value
    for _, value, _ in stopper.reads:
        best, wait = (value, 0) if value > best else (best, wait + 1)
    assert stopper.wait_count == wait


# ------------------------------------------------------------------ 7. LR-scheduler monitors

def _with_plateau(pl, *, validation: bool, interval: str = "epoch"):
    net = module(pl, validation=validation)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=5, threshold=0.0)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.plateau, "monitor": "probe/E_L2_BE", "interval": interval}}

    type(net).configure_optimizers = configure_optimizers
    return net


@pytest.mark.parametrize("validation", [True, False], ids=["validation", "no-validation"])
def test_a_plateau_scheduler_on_a_probe_metric_reads_each_epochs_measure(pl, validation, tmp_path) -> None:
    callback = ProbeCallback(use_loggers=False, every_n_epochs=2)
    record = recorder(pl)
    net = _with_plateau(pl, validation=validation)
    trainer(pl, tmp_path, [callback, record], max_epochs=3, logger=False).fit(net)
    expected = [probe.measure(record.states[epoch]).network["E_L2_BE"] for epoch in range(3)]
    assert close(net.plateau.best, max(expected))  # it read each epoch's value (the best of them)
    assert [t.epoch for t in callback.timings] == [0, 1, 2]


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_a_step_interval_scheduler_on_a_probe_metric_is_refused_at_fit_start(pl, tmp_path) -> None:
    net = _with_plateau(pl, validation=True, interval="step")
    with pytest.raises(ValueError, match=r"lr scheduler monitors 'probe/E_L2_BE' with interval='step'.*interval='epoch'"):
        trainer(pl, tmp_path, [ProbeCallback(use_loggers=False)], logger=False).fit(net)
    assert net.steps == 0


# ------------------------------------------------------------------ 8. barebones

def _barebones(pl, callbacks, **kwargs):
    return pl.Trainer(barebones=True, max_epochs=2, accelerator="cpu", devices=1, callbacks=callbacks, **kwargs)


@pytest.mark.parametrize("validation", [True, False], ids=["validation", "no-validation"])
def test_barebones_monitors_read_the_measures(pl, validation, tmp_path) -> None:
    stopper = recording_stopper(pl, "probe/SQ_p_BE", mode="max", patience=100)
    callback = ProbeCallback(use_loggers=False, measures=["SQ_p_BE"])
    net = module(pl, validation=validation)
    _barebones(pl, [stopper, callback]).fit(net)
    assert [step for step, _, _ in stopper.reads] == [4, 8]
    for step, value, state in stopper.reads:
        assert close(value, probe.measure(state).network["SQ_p_BE"]), step


def test_barebones_with_loggers_is_refused_with_advice_that_works(pl, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"barebones=True.*ProbeCallback\(use_loggers=False\)"):
        _barebones(pl, [ProbeCallback()]).fit(module(pl))


# ------------------------------------------------------------------ 9. StochasticWeightAveraging

def test_swa_weights_that_end_up_saved_are_measured(pl, tmp_path) -> None:
    swa = _callbacks(pl).StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=1)
    callback = ProbeCallback()
    record = recorder(pl)
    net = module(pl)
    trainer(pl, tmp_path, [swa, callback, record], max_epochs=3).fit(net)
    final = probe.measure(net.state_dict()).network["E_L2_BE"]
    last_epoch = probe.measure(record.states[2]).network["E_L2_BE"]
    assert not close(final, last_epoch)  # SWA swapped the weights after the last epoch's measurement
    assert close(callback.last_report.network["E_L2_BE"], final)
    logged = scalars(load(tmp_path / "tb" / "version_0"), "probe/E_L2_BE")
    assert sorted(logged) == [3, 7, 11, 12]  # the averaged weights one step after the last epoch's
    assert close(logged[11], last_epoch) and close(logged[12], final)


# ------------------------------------------------------------------ 11. non-finite weights

@pytest.mark.parametrize(("pl", "background"), [("lightning.pytorch", False), ("pytorch_lightning", "thread"),
                                                ("lightning.pytorch", "process")], indirect=["pl"])
def test_nonfinite_weights_give_nan_measures_with_a_warning(pl, background, tmp_path) -> None:
    class Poison(pl.Callback):
        """Waits for the measuring process (its start-up overlaps the first epochs), then puts a NaN in the first conv."""

        def on_train_epoch_start(self, trainer, net) -> None:
            if callback._measurer is not None:
                assert callback._measurer.wait_ready(60)
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    net.net[0].weight[0, 0, 0, 0] = math.nan

    callback = ProbeCallback(background=background, use_loggers=False)
    record = recorder(pl, callback)
    net = module(pl, validation=False)
    net.configure_optimizers = lambda: torch.optim.SGD(net.parameters(), lr=0.0)  # the NaN stays put
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(pl, tmp_path, [Poison(), callback, record], max_epochs=2, logger=False).fit(net)
    nonfinite = [str(w.message) for w in caught if "non-finite" in str(w.message)]
    assert len(nonfinite) == 1, nonfinite
    assert "epoch 1" in nonfinite[0] and "'net.0.weight'" in nonfinite[0] and "NaN" in nonfinite[0]
    assert callback.last_epoch == 1 and all(math.isnan(v) for v in callback.last_report.network.values())
    assert not math.isnan(probe.measure(record.states[0]).network["E_L2_BE"])


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
@pytest.mark.parametrize("validation", [True, False])
def test_a_second_fit_on_the_same_trainer_goes_on_measuring(pl, validation, tmp_path) -> None:
    """The loops keep the first fit's logged entries: they are the callback's own, not a clash."""
    net = module(pl, validation=validation)
    run = trainer(pl, tmp_path, [ProbeCallback(measures=["F_p_BE"])], max_epochs=1, num_sanity_val_steps=2)
    run.fit(net)
    run.fit_loop.max_epochs = 2
    run.fit(net)
    assert run.global_step == 2 * 4
    assert float(run.callback_metrics["probe/F_p_BE"]) == pytest.approx(
        probe.measure(net, options=probe.options.LIVE).value("F_p_BE"), rel=1e-6)


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_a_failing_layer_filter_in_background_fails_the_measurement_not_the_run(pl, tmp_path) -> None:
    calls = []

    def flaky(name: str, tensor: torch.Tensor) -> bool:
        calls.append(name)
        if len(calls) > 8:  # the selection check at fit start passes; later calls fail
            raise KeyError("filter failed")
        return tensor.ndim >= 2

    run = trainer(pl, tmp_path, [ProbeCallback(measures=["F_p_BE"], layers=flaky, background="thread")], max_epochs=2)
    with pytest.warns(RuntimeWarning, match=r"measuring epoch \d failed .KeyError: 'filter failed'.; its measures are NaN"):
        run.fit(module(pl))
    assert run.global_step == 2 * 4 and math.isnan(float(run.callback_metrics["probe/F_p_BE"]))
