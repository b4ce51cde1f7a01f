import pytest
import torch

from probe.unfold import unfold


def test_linear_gives_the_same_matrix_twice_oriented():
    w = torch.randn(10, 56)
    mats = unfold(w)
    assert mats["in"] is mats["out"]
    assert mats["in"].shape == (10, 56)
    assert unfold(torch.randn(56, 10))["in"].shape == (10, 56)


@pytest.mark.parametrize("kernel", [(3,), (3, 3), (3, 3, 3)])
def test_conv_unfoldings(kernel):
    w = torch.randn(6, 4, *kernel)
    k = int(torch.tensor(kernel).prod())
    mats = unfold(w)
    assert mats["out"].shape == (6, 4 * k)
    assert mats["in"].shape == (4, 6 * k)
    # in unfolding: input channel i holds every weight w[:, i]
    assert torch.equal(mats["in"][1].sort().values, w[:, 1].flatten().sort().values)


@pytest.mark.parametrize("shape", [(12, 5, 1), (12, 5, 1, 1), (5, 12, 1, 1, 1)])
def test_one_element_kernel_gives_one_matrix(shape):
    """Its in and out unfoldings are transposes: one matrix, one spectrum (like linear)."""
    w = torch.randn(*shape)
    mats = unfold(w)
    assert mats["in"] is mats["out"] and mats["in"].shape == (5, 12)
    assert torch.equal(mats["in"], w.reshape(shape[0], shape[1]) if shape[0] < shape[1] else w.reshape(shape[0], shape[1]).T)


def test_tall_unfolding_is_transposed():
    w = torch.randn(56, 48, 1, 1)
    assert unfold(w)["out"].shape == (48, 56)


def test_bad_rank_names_the_layer():
    with pytest.raises(ValueError, match="'bn.weight'"):
        unfold(torch.randn(8), "bn.weight")
