"""On CUDA, every route gives the quantities of float64 svdvals within 1e-5 (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

import probe
from tests.test_spectrum import assert_quantities_match, matrix_with_condition

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("condition", [2.0, 1e3, 1e9])
@pytest.mark.parametrize("shape", [(256, 2304), (768, 768), (512, 4096)])
def test_cuda_matches_float64_svdvals_on_the_cpu(shape, condition):
    w = matrix_with_condition(*shape, condition)
    got = probe.measure({"w.weight": w.cuda()})
    want = probe.measure({"w.weight": w}, method="svd")
    assert_quantities_match(got, want)


def test_weights_stay_on_the_gpu_and_only_values_come_back():
    w = torch.randn(1024, 4096, device="cuda")
    before = torch.cuda.memory_allocated()
    report = probe.measure({"w.weight": w})
    assert report.layers[0].unfoldings["out"].s.shape == (1024,)
    assert torch.cuda.memory_allocated() <= before + (1 << 20)  # nothing left behind on the device
