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
