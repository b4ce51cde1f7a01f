import pytest
import torch
from torch import nn

import probe
from probe.layers import every_tensor, normalise_name, select_layers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.down = nn.Conv1d(8, 4, 1)
        self.embed = nn.Embedding(10, 4)
        self.attn = nn.MultiheadAttention(4, 2)
        self.qkv = nn.Linear(4, 12)  # a fused projection
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)


AUTO = ["conv.weight", "down.weight", "embed.weight", "attn.in_proj_weight", "attn.out_proj.weight", "qkv.weight",
        "frozen.weight", "fc.weight"]


def names(selected):
    return [name for name, _ in selected]


def test_auto_takes_every_2d_to_5d_weight_of_a_module_and_of_its_state_dict():
    net = Net()
    assert names(select_layers(net)) == AUTO
    assert names(select_layers(net.state_dict())) == AUTO
    assert names(select_layers(torch.nn.Sequential(net).state_dict())) == [f"0.{n}" for n in AUTO]
    chosen = dict(select_layers(net))
    assert chosen["attn.in_proj_weight"].shape == (12, 4) and not chosen["fc.weight"].requires_grad


def test_wrapper_components_are_dropped_from_names():
    net = Net()
    compiled = torch.compile(net)  # an OptimizedModule: keys "_orig_mod.conv.weight" ...
    assert names(select_layers(compiled)) == AUTO
    ddp_checkpoint = {f"module.{k}": v for k, v in net.state_dict().items()}  # saved from DDP / DataParallel
    assert names(select_layers(ddp_checkpoint)) == AUTO
    fsdp1 = {f"_fsdp_wrapped_module.{k}": v for k, v in net.state_dict().items()}
    assert names(select_layers(fsdp1)) == AUTO
    assert normalise_name("net._orig_mod.0._checkpoint_wrapped_module.weight") == "net.0.weight"
    assert normalise_name("model.module.weight") == "model.module.weight"  # a user's own `module` is kept
    report_module, report_compiled = probe.measure(net), probe.measure(compiled)
    assert [layer.name for layer in report_compiled.layers] == AUTO
    assert report_compiled.network == pytest.approx(report_module.network, nan_ok=True)


def test_name_collision_after_normalising_is_an_error():
    with pytest.raises(ValueError, match="'a.weight' and 'a._orig_mod.weight' have the same name"):
        select_layers({"a.weight": torch.ones(2, 2), "a._orig_mod.weight": torch.ones(2, 2)})


def test_every_tensor_keeps_names_as_given():
    tensors = {"module.fc.weight": torch.ones(2, 2)}
    assert names(select_layers(tensors, every_tensor)) == ["module.fc.weight"]


def test_genprob_preset_takes_4d_conv_and_down_tensors():
    sd = {"stem.0.weight": torch.ones(8, 3, 3, 3), "cell0.RELUConvBN0.1.weight": torch.ones(8, 8, 3, 3),
          "cell1.down_sample.1.weight": torch.ones(8, 8, 1, 1), "classifier.weight": torch.ones(10, 8),
          "cell0.RELUConvBN0.2.weight": torch.ones(8)}
    assert names(select_layers(sd, "genprob")) == ["cell0.RELUConvBN0.1.weight", "cell1.down_sample.1.weight"]


def test_callable_filter_and_module_state():
    chosen = select_layers(Net(), lambda name, t: name.startswith("fc.") and t.ndim == 2)
    assert names(chosen) == ["fc.weight"]
    assert not chosen[0][1].requires_grad


def test_empty_selection_and_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="no layer selected.*'auto'"):
        select_layers(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="no layer selected: the layer filter"):
        select_layers(Net(), lambda name, t: False)
    with pytest.raises(ValueError, match=r"layers must be one of \('auto', 'genprob'\) or a callable .* got 'convs'"):
        select_layers(Net(), "convs")
    with pytest.raises(TypeError, match="state dict"):
        select_layers([torch.ones(2, 2)])


class TiedLM(nn.Module):
    """An embedding and an LM head that share one weight (``lm_head.weight`` sorts first)."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(40, 12)
        self.mid = nn.Linear(12, 12)
        self.lm_head = nn.Linear(12, 40, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, x):
        return self.lm_head(torch.relu(self.mid(self.wte(x)))).mean(1)


def test_a_tied_weight_counts_once_under_one_name_in_every_format(tmp_path):
    import lightning.pytorch as pl
    from safetensors.torch import save_model
    from torch.utils.data import DataLoader, TensorDataset

    from probe.replay import load_checkpoint

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lm = TiedLM()

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.lm(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    module = Module()
    data = DataLoader(TensorDataset(torch.randint(0, 40, (8, 3)), torch.randint(0, 40, (8,))), batch_size=4)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, data)
    trainer.save_checkpoint(tmp_path / "tied.ckpt")
    lm = module.lm
    torch.save(lm.state_dict(), tmp_path / "tied.pt")
    save_model(lm, str(tmp_path / "tied.safetensors"))  # keeps one name of the pair: lm_head.weight

    # independent expectation: the two distinct matrices, each once
    expected = probe.measure({"mid.weight": lm.mid.weight.detach().clone(), "lm_head.weight": lm.wte.weight.detach().clone()},
                             layers=every_tensor).network
    sources = {"module": lm, "state dict": lm.state_dict(), "Lightning module": module}
    sources.update({f: load_checkpoint(tmp_path / f).state_dict for f in ("tied.ckpt", "tied.pt", "tied.safetensors")})
    for what, source in sources.items():
        chosen = sorted(name.removeprefix("lm.") for name in names(select_layers(source)))
        assert chosen == ["lm_head.weight", "mid.weight"], what
        assert probe.measure(source).network == pytest.approx(expected, rel=1e-7, nan_ok=True), what


def test_views_of_one_storage_that_differ_are_not_ties():
    base = torch.randn(8, 6)
    state = {"a.weight": base, "b.weight": base[:4], "c.weight": base.T, "d.weight": base.clone()}
    assert names(select_layers(state)) == ["a.weight", "b.weight", "c.weight", "d.weight"]
    assert names(select_layers({"z.weight": base, "a.weight": base, "m.weight": base.view(8, 6)})) == ["a.weight"]


def _parametrized_net() -> nn.Module:
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    with pytest.warns(FutureWarning):  # the deprecated hook form, still found in checkpoints
        legacy = torch.nn.utils.weight_norm(nn.Linear(5, 7))
    net = nn.Sequential(
        parametrizations.weight_norm(nn.Linear(6, 8)),
        parametrizations.spectral_norm(nn.Conv2d(8, 5, 3)),
        parametrizations.weight_norm(nn.Conv1d(5, 5, 1), dim=None),
        parametrizations.spectral_norm(nn.ConvTranspose2d(5, 3, 2)),  # torch's dim=1 for a transposed conv
        nn.Linear(3, 5),
        legacy,
    )
    net.train()
    for layer in (net[1], net[3]):  # a few power iterations, so u and v are not their initial values
        for _ in range(3):
            _ = layer.weight
    return net.eval()


def test_parametrized_weights_are_measured_as_their_effective_weight_live_and_offline(tmp_path):
    net = _parametrized_net()
    effective = {f"{i}.weight": net[i].weight.detach().clone() for i in range(6)}  # what torch computes (eval mode)
    chosen = dict(select_layers(net))
    assert list(chosen) == list(effective)
    for name, weight in effective.items():
        torch.testing.assert_close(chosen[name], weight, rtol=1e-5, atol=0, msg=name)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    expected = probe.measure(effective, layers=every_tensor).network
    for source in (net, net.state_dict(), torch.load(tmp_path / "net.pt", weights_only=True)):
        assert probe.measure(source).network == pytest.approx(expected, rel=1e-5, nan_ok=True)
    assert all(t.is_floating_point() for t in chosen.values())


def test_a_parametrization_that_cannot_be_rebuilt_is_named_once_in_a_warning():
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    net = nn.Sequential(parametrizations.orthogonal(nn.Linear(4, 4)), nn.Linear(4, 3))
    with pytest.warns(UserWarning) as caught:
        report = probe.measure(net.state_dict())
    skipped = [str(w.message) for w in caught if "parametrized" in str(w.message)]
    assert len(skipped) == 1 and "0.weight" in skipped[0] and "1.weight" not in skipped[0]
    assert [layer.name for layer in report.layers] == ["1.weight"]
    with pytest.warns(UserWarning, match="0.weight"), pytest.raises(ValueError, match="1 parametrized layers skipped"):
        select_layers(nn.Sequential(parametrizations.orthogonal(nn.Linear(4, 4))))


def test_tensors_that_only_look_like_a_hook_form_stay_ordinary():
    state = {"proj_g": torch.randn(3, 3), "proj_v": torch.randn(4, 4), "head.weight": torch.randn(2, 3)}
    assert dict(select_layers(state, lambda name, t: True)).keys() == state.keys()


def test_a_trainer_with_the_callback_measures_tied_and_parametrized_layers(tmp_path):
    """Live: a model whose layers are all parametrized (was: "no layer selected" at fit start)
    and a tied embedding and head; the callback's last report is the checkpoint's measure."""
    import lightning.pytorch as pl
    from torch.nn.utils import parametrizations
    from torch.utils.data import DataLoader, TensorDataset

    from integrations.lightning import ProbeCallback
    from probe.replay import load_checkpoint

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lm = TiedLM()
            self.lm.mid = parametrizations.weight_norm(self.lm.mid)
            self.head = parametrizations.spectral_norm(nn.Linear(40, 2))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.head(self.lm(x)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    module, callback = Module(), ProbeCallback(use_loggers=False)
    data = DataLoader(TensorDataset(torch.randint(0, 40, (8, 3)), torch.randint(0, 2, (8,))), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu", callbacks=[callback])
    trainer.fit(module, data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert [layer.name for layer in callback.last_report.layers] == ["lm.mid.weight", "lm.lm_head.weight", "head.weight"]
    module.eval()
    effective = {"lm.mid.weight": module.lm.mid.weight, "lm.lm_head.weight": module.lm.wte.weight, "head.weight": module.head.weight}
    expected = probe.measure({k: v.detach().clone() for k, v in effective.items()}, layers=every_tensor).network
    assert callback.last_report.network == pytest.approx(expected, rel=1e-5, nan_ok=True)
    offline = probe.measure(load_checkpoint(tmp_path / "last.ckpt").state_dict).network
    assert offline == pytest.approx(callback.last_report.network, rel=1e-7, nan_ok=True)


def test_auto_leaves_out_normalisation_weights_of_more_than_one_dimension():
    model = nn.ModuleDict({"conv": nn.Conv2d(3, 8, 3), "ln": nn.LayerNorm([8, 16, 16]), "final_norm": nn.RMSNorm([16, 16]),
                           "fc": nn.Linear(16, 4)})
    assert [name for name, _ in select_layers(model)] == ["conv.weight", "fc.weight"]
    chosen = select_layers(model, layers=lambda name, tensor: name.endswith("weight") and tensor.ndim >= 2)
    assert [name for name, _ in chosen] == ["conv.weight", "ln.weight", "final_norm.weight", "fc.weight"]


def test_spectral_norm_on_a_square_weight_uses_the_dimension_torch_used():
    """Both dimensions of a ConvTranspose2d(6, 6, 3) or a Linear(8, 8) fit u: the stored u, v tell which one."""
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    for module in (parametrizations.spectral_norm(nn.ConvTranspose2d(6, 6, 3)),  # dim=1, torch's default for it
                   parametrizations.spectral_norm(nn.Linear(8, 8), dim=1),
                   parametrizations.spectral_norm(nn.Linear(8, 8))):
        for _ in range(3):
            module(torch.randn(2, 6, 5, 5) if isinstance(module, nn.ConvTranspose2d) else torch.randn(2, 8))
        module.eval()
        (name, weight), = select_layers(module)
        assert name == "weight" and torch.allclose(weight, module.weight.detach(), rtol=1e-5, atol=1e-7)
