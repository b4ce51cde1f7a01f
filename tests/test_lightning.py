"""integrations.lightning.ProbeCallback with real Trainers of both Lightning packages (CPU, tiny models).

Every logged value is checked against ``probe.measure`` of a copy of the weights taken at
that epoch; event files are read back with TensorBoard's own reader, CSV files with ``csv``;
steps are checked against those of Lightning's own epoch-level metrics.
"""

from __future__ import annotations

import csv
import importlib
import warnings

import pytest
import torch

import probe
from integrations.lightning import ProbeCallback
from integrations.tensorboard import LAYER_QUANTITIES, LogOptions, heatmap_tag, layer_tag, spectrum_tag
from probe.options import MeasureOptions
from tests.lightning_helpers import BATCHES, PACKAGES, module, recorder, trainer
from tests.tb_events import close, layout, load, scalars, value_at

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:.*(num_workers|log_every_n_steps|LeafSpec).*")]


@pytest.fixture(params=PACKAGES)
def pl(request):
    """The Lightning package under test (``lightning.pytorch`` and ``pytorch_lightning``)."""
    return pytest.importorskip(request.param)


def _expected(state: dict) -> probe.Report:
    return probe.measure(state)  # the state dict route selects the same tensors as the module route


def _csv_rows(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_logged_values_are_the_measures_of_each_epochs_weights(pl, tmp_path) -> None:
    record, callback = recorder(pl), ProbeCallback(log_options=LogOptions(layer_quantities=LAYER_QUANTITIES, histograms=True))
    trainer(pl, tmp_path, [record, callback]).fit(module(pl))  # recorder first: order must not matter

    events = load(tmp_path / "tb" / "version_0")
    lightning_steps = sorted(scalars(events, "val_loss"))  # Lightning's own epoch-level metrics
    assert lightning_steps == sorted(scalars(events, "train_loss")) == [3, 7, 11]
    assert [t.epoch for t in callback.timings] == [0, 1, 2]  # the sanity check was not measured
    for epoch, state in record.states.items():
        expected, step = _expected(state), lightning_steps[epoch]
        for name in probe.HEADLINE_NAMES:
            assert close(value_at(events, f"probe/{name}", step), expected.network[name]), (epoch, name)
            # in callback_metrics before on_validation_end, as float32
            assert close(record.at_validation_end[epoch][f"probe/{name}"], expected.network[name])
        layer = expected.layers[-1]
        assert close(scalars(events, layer_tag("ER", "BE", "in", layer.name))[step], layer.unfoldings["in"].BE["ER"])
    assert [h.step for h in events.Histograms(spectrum_tag("net.0.weight", "out"))] == lightning_steps
    assert sorted(scalars(events, "probe/E_L2_BE")) == lightning_steps
    assert [image.step for image in events.Images(heatmap_tag("SQ"))] == lightning_steps
    assert "probe layers BE" in [category.title for category in layout(events).category]
    assert callback.last_epoch == 2
    assert callback.last_report.network == pytest.approx(_expected(record.states[2]).network, nan_ok=True)


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual-2-optimizers"])
@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_steps_and_epochs_match_lightnings_own_metrics_on_every_logger(pl, manual, tmp_path) -> None:
    loggers = importlib.import_module(f"{pl.__name__}.loggers")
    record, callback = recorder(pl), ProbeCallback(every_n_epochs=2, measures=["E_L2_AE", "fro_wmean_t0_BE"])
    logger = [loggers.CSVLogger(tmp_path, name="csv", version=0), loggers.TensorBoardLogger(tmp_path, name="tb", version=0)]
    trainer(pl, tmp_path, [record, callback], max_epochs=4, logger=logger).fit(module(pl, manual=manual))

    if manual:
        assert record.steps[0] == 2 * BATCHES  # two optimizer steps per batch: global_step runs twice as fast
    rows = _csv_rows(tmp_path / "csv" / "version_0" / "metrics.csv")
    own = {int(r["epoch"]): int(r["step"]) for r in rows if r.get("train_loss")}  # Lightning's own rows
    assert own == {0: 3, 1: 7, 2: 11, 3: 15}
    probed = [r for r in rows if r.get("probe/E_L2_AE")]
    assert [(int(r["epoch"]), int(r["step"])) for r in probed] == [(1, own[1]), (3, own[3])]  # epoch column filled
    for row in probed:
        expected = _expected(record.states[int(row["epoch"])])
        assert close(float(row["probe/E_L2_AE"]), expected.network["E_L2_AE"])
        assert close(float(row["probe/fro_wmean_t0_BE"]), expected.value("fro_wmean_t0_BE"))
    events = load(tmp_path / "tb" / "version_0")
    assert sorted(scalars(events, "probe/fro_wmean_t0_BE")) == [own[1], own[3]]
    assert sorted(scalars(events, "train_loss")) == sorted(own.values())
    assert not any(t.startswith("probe/E_L2_BE") for t in events.Tags()["scalars"])


def test_monitoring_without_a_validation_loop_and_step_epoch(pl, tmp_path) -> None:
    callbacks_module = importlib.import_module(f"{pl.__name__}.callbacks")
    record = recorder(pl)
    stopper = callbacks_module.EarlyStopping("probe/E_L2_BE", mode="max", patience=10)
    checkpoint = callbacks_module.ModelCheckpoint(tmp_path / "ckpt", monitor="probe/SQ_p_BE", mode="max", save_top_k=1)
    callback = ProbeCallback(step="epoch")
    trainer(pl, tmp_path, [stopper, checkpoint, callback, record], enable_checkpointing=True).fit(module(pl, validation=False))

    events = load(tmp_path / "tb" / "version_0")
    logged = scalars(events, "probe/SQ_p_BE")
    assert sorted(logged) == [0, 1, 2]  # step="epoch"
    expected = {epoch: _expected(state).network["SQ_p_BE"] for epoch, state in record.states.items()}
    assert all(close(logged[e], expected[e]) for e in expected)
    assert float(checkpoint.best_model_score) == pytest.approx(max(logged.values()), rel=1e-6)
    assert float(stopper.best_score) == pytest.approx(max(scalars(events, "probe/E_L2_BE").values()), rel=1e-6)
    # the monitors, listed first, still saw every epoch's value (Lightning runs them after the others)
    assert record.at_train_epoch_end[2]["probe/SQ_p_BE"] == pytest.approx(expected[2], rel=1e-6)


@pytest.mark.parametrize("build", ["configure_model", "setup"])
@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_layers_built_in_configure_model_or_setup(pl, build, tmp_path) -> None:
    record, callback = recorder(pl), ProbeCallback(use_loggers=False)
    trainer(pl, tmp_path, [record, callback], max_epochs=2, logger=False).fit(module(pl, build=build))
    assert callback.last_epoch == 1
    assert callback.last_report.network == pytest.approx(_expected(record.states[1]).network, nan_ok=True)


@pytest.mark.parametrize("pl", ["pytorch_lightning"], indirect=True)
def test_a_callback_reused_in_a_new_trainer_measures_every_epoch_of_each_fit(pl, tmp_path) -> None:
    callback = ProbeCallback(use_loggers=False, measures=["F_p_BE"])
    for fit in range(2):  # e.g. two-stage fine-tuning
        record, net = recorder(pl), module(pl)
        trainer(pl, tmp_path, [record, callback], max_epochs=2, logger=False).fit(net)
        assert [t.epoch for t in callback.timings] == [0, 1], fit
        assert record.at_validation_end[1] == {"probe/F_p_BE": pytest.approx(_expected(record.states[1]).network["F_p_BE"])}


def _checkpointing(pl, tmp_path):
    # saved at validation end: the resumed fit replays the rest of that epoch (on_train_epoch_end),
    # where a callback without state would measure and log the epoch a second time
    callbacks_module = importlib.import_module(f"{pl.__name__}.callbacks")
    return callbacks_module.ModelCheckpoint(tmp_path / "ckpt", save_last=True, save_top_k=-1, save_on_train_epoch_end=False)


def test_resume_restores_state_and_logs_no_duplicate_step(pl, tmp_path) -> None:
    first, record = ProbeCallback(), recorder(pl)
    trainer(pl, tmp_path, [record, first, _checkpointing(pl, tmp_path)], max_epochs=2, enable_checkpointing=True).fit(module(pl))
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"][first.state_key]
    assert (state["measured_at"], state["last_epoch"]) == (2 * BATCHES, 1)

    resumed = ProbeCallback()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = trainer(pl, tmp_path, [record, resumed, _checkpointing(pl, tmp_path)], max_epochs=4, enable_checkpointing=True)
        run.fit(module(pl), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert not [w for w in caught if "ProbeCallback" in str(w.message)]  # same options: no warning

    assert [t.epoch for t in resumed.timings] == [2, 3]
    events = load(tmp_path / "tb" / "version_0")  # both runs wrote here
    logged = scalars(events, "probe/E_L2_BE")  # raises on a duplicate step
    assert sorted(logged) == sorted(scalars(events, "val_loss")) == [3, 7, 11, 15]
    for epoch in range(4):
        assert close(logged[4 * epoch + 3], _expected(record.states[epoch]).network["E_L2_BE"])


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_resume_with_changed_options_warns_once_and_keeps_the_state(pl, tmp_path) -> None:
    first = ProbeCallback(measures=["E_L2_BE"])
    trainer(pl, tmp_path, [first, _checkpointing(pl, tmp_path)], max_epochs=2, enable_checkpointing=True).fit(module(pl))

    changed = ProbeCallback(measures=["E_L2_BE", "F_p_BE"], background="thread")  # another state key too
    run = trainer(pl, tmp_path, [changed, _checkpointing(pl, tmp_path)], max_epochs=3, enable_checkpointing=True)
    with pytest.warns(UserWarning, match=r"resumed with changed options \['background', 'measures'\]") as caught:
        run.fit(module(pl), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert sum("ProbeCallback: resumed" in str(w.message) for w in caught) == 1
    assert [t.epoch for t in changed.timings] == [2]
    events = load(tmp_path / "tb" / "version_0")
    assert sorted(scalars(events, "probe/E_L2_BE")) == [3, 7, 11]  # no step twice
    assert sorted(scalars(events, "probe/F_p_BE")) == [11]


@pytest.mark.parametrize(("pl", "kind", "copy_to"), [("lightning.pytorch", True, "cpu"), ("pytorch_lightning", "process", "cpu"),
                                                     ("lightning.pytorch", "thread", "model")], indirect=["pl"])
def test_background_mode_logs_each_epoch_at_its_own_step(pl, kind, copy_to, tmp_path) -> None:
    callback = ProbeCallback(background=kind, copy_to=copy_to, log_options=LogOptions(layer_quantities=("SQ",), histograms=False))
    record = recorder(pl, callback)
    trainer(pl, tmp_path, [record, callback], max_epochs=3).fit(module(pl))

    events = load(tmp_path / "tb" / "version_0")
    logged = scalars(events, "probe/E_L2_BE")
    assert sorted(logged) == sorted(scalars(events, "val_loss")) == [3, 7, 11]  # all flushed, each at its own step
    for epoch, state in record.states.items():
        expected = _expected(state)  # the copy, not the later weights, was measured
        assert close(logged[4 * epoch + 3], expected.network["E_L2_BE"])
        assert close(value_at(events, "probe/F_p_AE", 4 * epoch + 3), expected.network["F_p_AE"])
    assert callback.last_epoch == 2 and callback._measurer is None  # flushed and shut down
    assert [t.epoch for t in callback.timings] == [0, 1, 2]
    # no monitor: callback_metrics hold the latest finished report, that of last_epoch (at most the current epoch)
    for epoch, (last_epoch, metrics) in record.lag.items():
        if last_epoch is None:
            assert metrics == {}
            continue
        assert last_epoch <= epoch
        assert close(metrics["probe/E_L2_BE"], _expected(record.states[last_epoch]).network["E_L2_BE"])


@pytest.mark.parametrize("pl", ["pytorch_lightning"], indirect=True)
def test_monitoring_without_a_logger(pl, tmp_path) -> None:
    record, callback = recorder(pl), ProbeCallback(use_loggers=False, measures=["SQ_p_BE"])
    trainer(pl, tmp_path, [record, callback], max_epochs=2, logger=False).fit(module(pl))
    for epoch, state in record.states.items():
        assert record.at_validation_end[epoch] == {"probe/SQ_p_BE": pytest.approx(_expected(state).network["SQ_p_BE"])}
    assert callback.last_epoch == 1


def test_bad_use_fails_early_with_a_clear_message(pl, tmp_path) -> None:
    with pytest.raises(ValueError, match="the Trainer has no logger.*ProbeCallback\\(use_loggers=False\\)"):
        trainer(pl, tmp_path, [ProbeCallback()], logger=False).fit(module(pl))

    for build in ("init", "configure_model"):
        net = module(pl, build=build)
        selects_nothing = ProbeCallback(layers=lambda name, tensor: "decoder" in name)
        with pytest.raises(ValueError, match=r"ProbeCallback\(layers=.*\) on Net: no layer selected"):
            trainer(pl, tmp_path, [selects_nothing]).fit(net)
        assert net.steps == 0  # failed at fit start, before any training

    stopper = importlib.import_module(f"{pl.__name__}.callbacks").EarlyStopping("probe/F_p_AE")
    with pytest.raises(ValueError, match=r"a callback monitors \['probe/F_p_AE'\], which no ProbeCallback measures"):
        trainer(pl, tmp_path, [ProbeCallback(measures=["F_p_BE"]), stopper]).fit(module(pl))

    with pytest.raises(ValueError, match="unknown network measure measures='SQ_p'"):
        ProbeCallback(measures=["E_L2_BE", "SQ_p"])
    with pytest.raises(ValueError, match="every_n_epochs must be an integer >= 1, got every_n_epochs=0"):
        ProbeCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match=r"copy_to must be one of \('cpu', 'model'\), got copy_to='gpu'"):
        ProbeCallback(copy_to="gpu")
    with pytest.raises(ValueError, match=r"background must be one of \(False, True, 'thread', 'process'\), got background='async'"):
        ProbeCallback(background="async")
    with pytest.raises(ValueError, match=r"step must be one of \('lightning', 'epoch'\), got step='batch'"):
        ProbeCallback(step="batch")


@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_nonfinite_raise_fails_the_fit(pl, tmp_path) -> None:
    net = module(pl)
    with torch.no_grad():
        net.net[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'net.0.weight' has non-finite weights"):
        trainer(pl, tmp_path, [ProbeCallback(options=MeasureOptions(nonfinite="raise"), background=True)], max_epochs=2).fit(net)


@pytest.mark.parametrize("background", [False, "thread"])
@pytest.mark.parametrize("pl", ["lightning.pytorch"], indirect=True)
def test_finite_divergence_never_loses_the_training_run(pl, background, tmp_path) -> None:
    class Diverge(pl.Callback):
        """Scales the first conv to ~1e20 (finite) for the epoch-end measurement, then restores it."""

        def __init__(self) -> None:
            self.saved = None

        def on_train_epoch_end(self, trainer, net) -> None:
            weight = net.net[0].weight
            self.saved = weight.detach().clone()
            with torch.no_grad():
                weight.mul_(1e20)
                weight[0, 0, 0, 0] = 1e30

        def on_train_epoch_start(self, trainer, net) -> None:
            if self.saved is not None:
                with torch.no_grad():
                    net.net[0].weight.copy_(self.saved)

    callback = ProbeCallback(use_loggers=False, background=background)
    record = recorder(pl, callback)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(pl, tmp_path, [Diverge(), callback, record], max_epochs=2, logger=False).fit(module(pl, validation=False))
    assert callback.last_epoch == 1  # the fit ran to its end
    for epoch, state in record.states.items():
        try:
            expected = _expected(state).network["E_L2_BE"]
        except Exception as error:
            assert any(type(error).__name__ in str(w.message) and "NaN" in str(w.message) for w in caught), caught
            expected = float("nan")
        last_epoch, metrics = record.lag[epoch]
        if last_epoch == epoch:  # synchronous: always; background: when it was finished
            assert close(metrics["probe/E_L2_BE"], expected), epoch
