import math

import numpy as np
import pytest

from probe.quantities import quantities, stable_quality


def test_hand_computed_values():
    q = quantities(np.array([2.0, 1.0]), rank=2)
    assert q["S"] == pytest.approx(3 / 4)
    assert q["C"] == pytest.approx(2.0)
    assert q["ER"] == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert q["spec"] == 2.0
    assert q["fro"] == pytest.approx(math.sqrt(5))
    assert q["SQ"] == pytest.approx(math.atan2(0.75, 0.5))


def test_s_divides_by_full_rank_for_truncated_values():
    q = quantities(np.array([3.0, 1.0]), rank=10)  # AE: two kept of ten
    assert q["S"] == pytest.approx(4 / 30)


def test_zero_singular_value_is_defined():
    q = quantities(np.array([1.0, 1.0, 0.0]), rank=3)
    assert q["C"] == math.inf
    assert q["ER"] == pytest.approx(math.log(2))  # the zero adds 0, not NaN
    assert q["SQ"] == pytest.approx(math.atan2(2 / 3, 1.0))


def test_single_kept_component():
    q = quantities(np.array([5.0]), rank=4)
    assert q["ER"] == 0.0 and math.copysign(1, q["ER"]) == 1.0
    assert q["C"] == 1.0
    assert q["SQ"] == pytest.approx(math.pi / 2)


@pytest.mark.parametrize("values", [np.zeros(0), np.zeros(4)])
def test_empty_or_zero_spectrum_is_missing(values):
    assert all(v == 0.0 for v in quantities(values, rank=4).values())


def test_stable_quality_missing_inputs():
    assert stable_quality(0.0, 3.0) == 0.0
    assert stable_quality(0.5, 0.0) == 0.0


@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200])
def test_norms_neither_overflow_nor_underflow(scale):
    q = quantities(np.array([4.0, 3.0]) * scale, rank=2)
    assert q["fro"] == pytest.approx(5.0 * scale, rel=1e-15)
    assert q["spec"] == 4.0 * scale and q["S"] == pytest.approx(7 / 8) and q["C"] == pytest.approx(4 / 3)
