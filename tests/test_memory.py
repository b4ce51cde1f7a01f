"""Measuring one layer needs at most 2× its float32 bytes of extra memory (issue 24)."""

from __future__ import annotations

import pytest

from benchmarks.memory import run_case

# LAPACK workspaces (MKL: ~1 KB per row), OpenBLAS buffers, a 4 MB Gram block, Python objects
_CONSTANT = 16 << 20


@pytest.mark.parametrize(("rows", "cols", "kind", "route"), [
    (2048, 2048, "random", "gram64"),  # the float64 Gram is exactly 2× a square float32 matrix
    (2048, 2048, "power", "gram64+min"),  # the Gram, freed, then one float64 copy for LU
    (1024, 4096, "ill", "svd"),  # one float64 copy, reduced in place by QR
    (512, 4096, "random", "gram32"),
])
def test_extra_peak_memory_is_at_most_twice_the_layer(rows, cols, kind, route):
    result = run_case(rows, cols, kind)
    assert result["route"] == route
    assert 0 < result["extra"] <= 2 * result["tensor"] + _CONSTANT, result
