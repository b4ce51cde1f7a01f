"""Settings travel one way: ``layers=`` and one ``MeasureOptions``, checked once, passed on unchanged."""

import math
from dataclasses import fields

import numpy as np
import pytest
import torch

import probe
from integrations.lightning import ProbeCallback
from integrations.loop import ProbeHook
from integrations.optuna import MeasurePruningCallback
from probe.options import LIVE, MeasureOptions, OptionShortcuts
from probe.replay.runner import Options


def _low_rank() -> dict[str, torch.Tensor]:
    """A layer whose AE values are defined (rank 3 plus noise), so reports compare with ``==``."""
    g = torch.Generator().manual_seed(0)
    return {"fc.weight": torch.randn(40, 3, generator=g) @ torch.randn(3, 30, generator=g) + 0.1 * torch.randn(40, 30, generator=g)}


BAD_OPTIONS = [
    ({"method": "lapack"}, r"method must be one of \('auto', 'gram64', 'svd'\), got 'lapack'"),
    ({"nonfinite": "skip"}, r"nonfinite must be one of"),
    ({"evbmf_xatol": 0.0}, r"evbmf_xatol must be a positive finite number or None, got 0.0"),
    ({"evbmf_xatol": math.inf}, r"evbmf_xatol must be a positive finite number or None, got inf"),
    ({"evbmf_xatol": True}, r"evbmf_xatol must be a positive finite number or None, got True"),
    ({"device": "gpu7"}, r"device must be a torch device"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_OPTIONS)
def test_bad_options_fail_at_construction_with_one_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MeasureOptions(**kwargs)
    with pytest.raises(ValueError, match=message):
        probe.measure(torch.nn.Linear(3, 2), **kwargs)  # the keyword shortcuts build the same object


def test_bad_layers_fail_in_every_front_end_with_one_message(tmp_path):
    message = r"layers must be one of \('auto', 'genprob'\) or a callable \(name, tensor\) -> bool, got 'convs'"
    for build in (lambda: probe.measure(torch.nn.Linear(3, 2), layers="convs"),
                  lambda: ProbeHook(torch.nn.Linear(3, 2), log_dir=tmp_path, layers="convs"),
                  lambda: ProbeCallback(layers="convs"),
                  lambda: MeasurePruningCallback(None, layers="convs"),  # type: ignore[arg-type]
                  lambda: Options(layers="convs")):
        with pytest.raises(ValueError, match=message):
            build()
    with pytest.raises(TypeError, match=r"layers must be one of .* got int"):
        probe.measure(torch.nn.Linear(3, 2), layers=3)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # the hook failed before creating an event file


def test_every_front_end_takes_the_options_object_and_refuses_anything_else(tmp_path):
    options = MeasureOptions(method="svd", evbmf_xatol=0.5, nonfinite="nan")
    hook = ProbeHook(torch.nn.Linear(3, 2), log_dir=tmp_path, options=options)
    assert hook.options is options and ProbeCallback(options=options).options is options
    assert MeasurePruningCallback(None, options=options).options is options  # type: ignore[arg-type]
    assert Options.of("auto", options) == Options(layers="auto", method="svd", evbmf_xatol=0.5)
    hook.close()
    from integrations.tensorboard import LogOptions
    with pytest.raises(TypeError, match="pass it as log_options="):
        ProbeCallback(options=LogOptions())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="options must be a probe.MeasureOptions"):
        probe.measure(torch.nn.Linear(3, 2), options={"method": "svd"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"unknown measuring option\(s\) \['layer'\]"):
        probe.measure(torch.nn.Linear(3, 2), layer="auto")  # type: ignore[call-arg]


def test_shortcuts_are_the_option_fields_and_apply_on_top_of_options():
    assert set(OptionShortcuts.__annotations__) == {f.name for f in fields(MeasureOptions)}
    weights = _low_rank()
    base = MeasureOptions(evbmf_xatol=1e-3)
    shortcut = probe.measure(weights, options=base, method="svd")
    assert shortcut.layers[0].unfoldings["in"].route == "svd"
    assert shortcut.network == probe.measure(weights, options=MeasureOptions(evbmf_xatol=1e-3, method="svd")).network
    assert MeasureOptions(nonfinite="nan") == LIVE


@pytest.mark.parametrize("value", [True, 0, 1.5, "2"])
def test_every_n_epochs_refuses_bools_and_non_integers(tmp_path, value):
    for build in (lambda: ProbeCallback(every_n_epochs=value), lambda: ProbeHook(torch.nn.Linear(3, 2), log_dir=tmp_path,
                                                                                 every_n_epochs=value)):
        with pytest.raises(ValueError, match=rf"every_n_epochs must be an integer >= 1, got every_n_epochs={value!r}"):
            build()


def test_the_background_worker_gets_the_options_unchanged():
    from integrations._background import Measurer
    options = MeasureOptions(method="gram64", evbmf_xatol=0.25, nonfinite="nan")
    measurer = Measurer("thread", options)
    try:
        tensors = _low_rank()
        report, _ = measurer.submit(tensors).result()
    finally:
        measurer.shutdown()
    assert report.network == probe.measure(tensors, layers=lambda n, t: True, options=options).network


def test_evbmf_xatol_set_live_gives_what_probe_measure_gives_with_the_same_options(tmp_path):
    """Every front end passes the options on unchanged: a coarse EVBMF tolerance changes AE values
    alike in the Lightning callback, the plain-loop hook and the Optuna pruning callback."""
    import optuna

    from tests.lightning_helpers import module, probe_metrics, recorder, trainer
    from tests.tb_events import close

    pl = pytest.importorskip("lightning.pytorch")
    options = MeasureOptions(evbmf_xatol=0.5, nonfinite="nan")
    record, study = recorder(pl), optuna.create_study()
    trial = study.ask()
    net = module(pl)
    fit = trainer(pl, tmp_path, [record, ProbeCallback(options=options, use_loggers=False)], max_epochs=1, logger=False)
    fit.fit(net)
    expected = probe.measure(record.states[0], options=options).network
    default = probe.measure(record.states[0], options=LIVE).network
    assert any(not close(expected[n], default[n]) for n in probe.HEADLINE_NAMES), "the tolerance must matter here"
    live = probe_metrics(fit)
    for name in probe.HEADLINE_NAMES:
        assert close(live[f"probe/{name}"], expected[name]), name
    # the pruning callback measures by itself when no ProbeCallback is listed
    trainer(pl, tmp_path, [record, MeasurePruningCallback(trial, options=options)], max_epochs=1, logger=False).fit(net)
    expected = probe.measure(record.states[0], options=options).network
    for name in probe.HEADLINE_NAMES:
        assert close(trial.user_attrs[f"probe:{name}"], expected[name]), name
    with ProbeHook(net, log_dir=tmp_path / "hook", options=options) as hook:
        report = hook.epoch_end(0)
    assert report is not None
    np.testing.assert_equal(report.network, probe.measure(net, options=options).network)
