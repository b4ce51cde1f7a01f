import pytest
import torch
from torch import nn

from probe.layers import select_layers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.down = nn.Conv1d(8, 4, 1)
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 2)


def names(selected):
    return [name for name, _ in selected]


def test_auto_on_a_module_takes_conv_and_linear_weights():
    assert names(select_layers(Net())) == ["conv.weight", "down.weight", "fc.weight"]


def test_auto_on_a_state_dict_takes_2d_to_5d_weights():
    assert names(select_layers(Net().state_dict())) == ["conv.weight", "down.weight", "embed.weight", "fc.weight"]


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
    with pytest.raises(ValueError, match="unknown layer preset 'convs'"):
        select_layers(Net(), "convs")
    with pytest.raises(TypeError, match="state dict"):
        select_layers([torch.ones(2, 2)])
