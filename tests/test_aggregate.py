import math

import numpy as np
import pytest

from probe.aggregate import AGGREGATIONS, aggregate, grid, transform


def test_aggregations_skip_missing_entries():
    x = np.array([1.0, 0.0, 4.0, 2.0])  # one missing entry
    w = np.array([1.0, 100.0, 2.0, 1.0])
    assert aggregate(x, w, "mean") == pytest.approx(7 / 3)
    assert aggregate(x, w, "L2") == pytest.approx(math.sqrt(21) / math.sqrt(3))
    assert aggregate(x, w, "p") == pytest.approx(8 ** (1 / 3))
    assert aggregate(x, w, "wmean") == pytest.approx((1 + 8 + 2) / 4)
    assert aggregate(x, w, "wp") == pytest.approx(1 ** 0.25 * 4 ** 0.5 * 2 ** 0.25)


def test_transforms_use_full_count():
    a, n = 2.0, 6
    expected = [a, a * n, math.sqrt(a), math.sqrt(a * n), math.log(a), math.log(a * n),
                math.log(math.sqrt(a)), math.log(math.sqrt(a * n))]
    assert [transform(a, f"t{i}", n) for i in range(8)] == pytest.approx(expected)


def test_all_missing_is_nan_not_an_error():
    table = grid(np.zeros(4), np.ones(4))
    assert table.shape == (len(AGGREGATIONS), 8)
    assert np.isnan(table).all()


def test_l2_of_huge_entries_does_not_overflow():
    x = np.array([3e300, 4e300])
    assert aggregate(x, np.ones(2), "L2") == pytest.approx(5e300 / math.sqrt(2))


def test_nan_entry_propagates():
    assert math.isnan(aggregate(np.array([1.0, math.nan]), np.ones(2), "mean"))


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(np.ones(2), np.ones(2), "median")
    with pytest.raises(ValueError, match="aggregation"):  # checked before the all-missing early return
        aggregate(np.zeros(2), np.ones(2), "median")
    with pytest.raises(ValueError, match="transform"):
        transform(1.0, "t9", 2)


def test_measure_names_are_checked_in_one_place():
    from probe.aggregate import AGGREGATE_NAMES, HEADLINE_NAMES, check_measure_name

    assert len(AGGREGATE_NAMES) == 320 and "ER_L2_t6_BE" in AGGREGATE_NAMES
    assert all(check_measure_name(n) == n for n in (*HEADLINE_NAMES, *AGGREGATE_NAMES))
    for bad in ("E_L2", "ER_L2_t8_BE", "ER_median_t0_BE", 3):
        with pytest.raises(ValueError, match=r"unknown network measure monitor="):
            check_measure_name(bad, argument="monitor")


def test_measure_names_parse_into_their_parts():
    from probe.aggregate import parse_measure_name

    assert tuple(parse_measure_name("SQ_p_AE")) == ("SQ_p_AE", "SQ", "p", "t0", "AE")
    assert tuple(parse_measure_name("E_L2_BE")) == ("E_L2_BE", "ER", "L2", "t6", "BE")
    assert tuple(parse_measure_name("fro_wp_t3_BE")) == ("fro_wp_t3_BE", "fro", "wp", "t3", "BE")
    for bad in ("E_L2", "ER_median_t0_BE", "ER_L2_t9_BE", "SQ_p_XE", None):
        with pytest.raises(ValueError, match="unknown network measure names="):
            parse_measure_name(bad, argument="names")


@pytest.mark.parametrize("signal", [1.0, 0.0])  # pure noise: EVBMF keeps nothing, AE undefined
def test_one_aggregate_is_its_grid_cell(signal):
    """``Report.aggregate`` computes one cell alone (the headline measures, at every
    ``measure``); it equals that cell of ``Report.grid``, NaN where the grid is NaN."""
    import torch

    import probe
    from probe.aggregate import MEASURES, TRANSFORMS, VARIANTS

    g = torch.Generator().manual_seed(0)

    def low_rank_plus_noise(rows: int, cols: int) -> torch.Tensor:
        low_rank = torch.randn(rows, 3, generator=g) @ torch.randn(3, cols, generator=g)
        return signal * low_rank + 0.05 * torch.randn(rows, cols, generator=g)

    weights = {"a.weight": low_rank_plus_noise(16, 72).reshape(16, 8, 3, 3),
               "b.weight": low_rank_plus_noise(24, 40), "c.weight": low_rank_plus_noise(10, 24)}
    report = probe.measure(weights)
    assert report.ae_defined == bool(signal)
    for variant in VARIANTS:
        for measure in MEASURES:
            table = report.grid(measure, variant)
            for i, how in enumerate(AGGREGATIONS):
                for j, t in enumerate(TRANSFORMS):
                    np.testing.assert_equal(report.aggregate(measure, variant, how, t), table[i, j])


@pytest.mark.parametrize("count", [11, 12, 21, 42])
def test_equal_entries_aggregate_to_their_value_exactly(count):
    """exp(mean(log x)) of equal x moves by ulps with the count; a column of equal measures must stay constant."""
    x = np.full(count, math.pi / 2)
    for how in AGGREGATIONS:
        assert aggregate(x, np.arange(1.0, count + 1), how) == math.pi / 2, how
