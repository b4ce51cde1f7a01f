"""integrations.loop.ProbeHook in a real (tiny) training loop; logs read back with TensorBoard's reader."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import probe
from integrations.loop import ProbeHook
from integrations.tensorboard import LogOptions, heatmap_tag, layer_tag
from probe.options import MeasureOptions
from tests.tb_events import close, layout, load, scalars


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 3, 8, 8, generator=generator), torch.randint(0, 10, (32,), generator=generator)
    for batch in range(4):
        part = slice(8 * batch, 8 * batch + 8)
        loss = nn.functional.cross_entropy(model(x[part]), y[part])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_logged_values_are_the_measures_of_each_epochs_weights(tmp_path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    snapshots, returned = {}, {}
    with ProbeHook(model, log_dir=tmp_path, log_options=LogOptions(layer_quantities=("SQ",))) as hook:
        for epoch in range(3):
            _train_epoch(model, optimizer, epoch)
            snapshots[epoch] = copy.deepcopy(model.state_dict())
            returned[epoch] = hook.epoch_end(epoch)
        assert hook.last_epoch == 2 and hook.last_report is returned[2]

    events = load(tmp_path)
    for epoch, state in snapshots.items():
        expected = probe.measure(state)
        assert returned[epoch].network == pytest.approx(expected.network, nan_ok=True)
        for name in probe.HEADLINE_NAMES:
            logged = scalars(events, f"probe/{name}") if f"probe/{name}" in events.Tags()["scalars"] else {}
            if math.isnan(expected.network[name]):
                assert epoch not in logged, (epoch, name)  # undefined: not drawn
            else:
                assert close(logged[epoch], expected.network[name]), (epoch, name)
        layer = expected.layers[1]
        logged = scalars(events, layer_tag("SQ", "BE", "out", layer.name))[epoch]
        assert close(logged, layer.unfoldings["out"].BE["SQ"])
    assert sorted(scalars(events, "probe/E_L2_BE")) == [0, 1, 2]
    assert [image.step for image in events.Images(heatmap_tag("SQ"))] == [0, 1, 2]
    assert "probe network" in {category.title for category in layout(events).category}


def test_steps_follow_lightnings_convention_and_heatmaps_count_epochs(tmp_path) -> None:
    """``step=steps - 1`` puts the measures where Lightning logs its epoch metrics; the
    heatmap's columns are the epochs, whatever the step."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with ProbeHook(model, log_dir=tmp_path, log_options=LogOptions(heatmaps=("ER",))) as hook:
        for epoch in range(2):
            _train_epoch(model, optimizer, epoch)  # 4 optimizer steps per epoch
            hook.epoch_end(epoch, step=4 * (epoch + 1) - 1)
        history = hook._report_writer.history
    events = load(tmp_path)
    assert sorted(scalars(events, "probe/F_p_BE")) == [3, 7]
    assert [image.step for image in events.Images(heatmap_tag("ER"))] == [3, 7]
    assert sorted(history.columns) == [0, 1] and history.labelled_by_epoch


def test_every_n_epochs_and_an_existing_writer(tmp_path) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    writer = SummaryWriter(tmp_path)
    hook = ProbeHook(model, writer=writer, every_n_epochs=2, measures=["SQ_p_AE"], log_options=LogOptions(layer_quantities=()))
    results = []
    for epoch in range(4):
        _train_epoch(model, optimizer, epoch)
        results.append(hook.epoch_end(epoch, step=100 * epoch))
    hook.close()
    writer.add_scalar("still/open", 1.0, 0)  # the hook does not close a writer it was given
    writer.close()

    assert [r is None for r in results] == [True, False, True, False]
    events = load(tmp_path)
    assert sorted(scalars(events, "probe/SQ_p_AE")) == [100, 300]
    assert close(scalars(events, "probe/SQ_p_AE")[300], results[3].network["SQ_p_AE"])
    assert {t for t in events.Tags()["scalars"] if t.startswith("probe")} == {"probe/SQ_p_AE"}


def test_bad_use_fails_at_construction(tmp_path) -> None:
    model = _model()
    with pytest.raises(ValueError, match="no layer selected"):
        ProbeHook(model, log_dir=tmp_path, layers=lambda name, tensor: name.startswith("decoder"))
    with pytest.raises(ValueError, match="no layer selected"):
        ProbeHook(nn.Sequential(nn.BatchNorm1d(4)), log_dir=tmp_path)
    with pytest.raises(ValueError, match="exactly one of log_dir"):
        ProbeHook(model)
    with pytest.raises(ValueError, match="exactly one of log_dir"):
        ProbeHook(model, log_dir=tmp_path, writer=object())
    with pytest.raises(ValueError, match="every_n_epochs must be an integer >= 1, got every_n_epochs=0"):
        ProbeHook(model, log_dir=tmp_path, every_n_epochs=0)
    with pytest.raises(ValueError, match="unknown network measure measures='E_L2'"):
        ProbeHook(model, log_dir=tmp_path, measures=["E_L2"])
    with pytest.raises(TypeError, match="nn.Module"):
        ProbeHook({"w": torch.ones(3, 3)}, log_dir=tmp_path)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir()), "a failed construction must not create event files"


def test_diverged_weights_give_nan_measures_by_default(tmp_path) -> None:
    model = _model()
    with ProbeHook(model, log_dir=tmp_path) as hook:
        with torch.no_grad():
            model[0].weight.fill_(float("inf"))
        report = hook.epoch_end(0)
    assert all(v != v for v in report.network.values())
    with ProbeHook(model, log_dir=tmp_path / "strict", options=MeasureOptions(nonfinite="raise")) as hook, \
            pytest.raises(ValueError, match="'0.weight' has non-finite weights"):
        hook.epoch_end(0)


def test_nonfinite_weights_give_nan_measures_with_a_warning(tmp_path) -> None:
    model = _model()
    with ProbeHook(model, log_dir=tmp_path) as hook:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # finite weights: no warning
            hook.epoch_end(0)
        with torch.no_grad():
            model[3].weight[0, 0] = float("nan")
        with pytest.warns(RuntimeWarning, match=r"epoch 1: layer '3.weight' has non-finite weights \(NaN or Inf\); its "
                                                 r"quantities and the network measures are NaN") as caught:
            report = hook.epoch_end(1)
    assert len([w for w in caught if "non-finite" in str(w.message)]) == 1
    assert all(math.isnan(v) for v in report.network.values())


def test_lazy_modules_are_measured_once_materialised(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    with ProbeHook(model, log_dir=tmp_path) as hook:  # nothing to select yet: checked at the first epoch_end
        with pytest.raises(ValueError, match="still uninitialised"):
            hook.epoch_end(0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        _train_epoch(model, optimizer, 0)
        report = hook.epoch_end(0)
    assert [layer.name for layer in report.layers] == ["0.weight", "3.weight"]
    assert report.network == pytest.approx(probe.measure(model.state_dict()).network, nan_ok=True)


def test_a_log_dir_holding_an_earlier_run_is_named_in_a_warning(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh directory: no warning
        with ProbeHook(model, log_dir=tmp_path / "run") as hook:
            hook.epoch_end(0)
    with pytest.warns(UserWarning, match="already holds TensorBoard event files"):
        ProbeHook(model, log_dir=tmp_path / "run").close()
