"""The pruners' pure statistics against independent expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from integrations.optuna._trust import (
    correlation_lower_bound,
    holm,
    is_poor,
    percentile_threshold,
    rank_correlation,
    trust_p_value,
)


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Spearman = 1 - 6 Σd² / (n(n² - 1)) without ties: ranks (1,2,3,4,5) vs (2,1,4,3,5), Σd² = 4
    assert rank_correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert rank_correlation([1, 2, math.nan, 4, 5], [1, 2, 99, 3, 5]) == pytest.approx(1.0)  # NaN pairs dropped
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))
    assert math.isnan(rank_correlation([1.0], [2.0]))
    with pytest.raises(ValueError, match="equal length"):
        rank_correlation([1, 2], [1])


def test_correlation_lower_bound():
    assert correlation_lower_bound(1.0, 10) > 0.99
    # tanh(atanh 0.9 - 1.645 sqrt((1 + 0.405) / 7))
    assert correlation_lower_bound(0.9, 10) == pytest.approx(math.tanh(math.atanh(0.9) - 1.6449 * math.sqrt(1.405 / 7)), abs=1e-4)
    assert correlation_lower_bound(0.6, 10) < 0.05
    assert correlation_lower_bound(-0.9, 10) == correlation_lower_bound(0.9, 10)
    assert math.isnan(correlation_lower_bound(0.9, 3))


@pytest.mark.parametrize(("rho", "n"), [(0.8, 20), (0.5, 40), (0.35, 100), (-0.7, 15)])
def test_trust_p_value_agrees_with_the_confidence_bound(rho, n):
    """p ≤ α exactly when the (1 - α) lower bound of |ρ| reaches the threshold (one-sided)."""
    threshold = 0.3
    p = trust_p_value(abs(rho), n, threshold, either_sign=False)
    for alpha in (0.001, 0.01, 0.05, 0.2):
        bound = correlation_lower_bound(rho, n, confidence=1 - alpha)
        if abs(p - alpha) > 1e-9:
            assert (p <= alpha) == (bound >= threshold)
    assert trust_p_value(rho, n, threshold, either_sign=True) == pytest.approx(min(1.0, 2 * p))


def test_trust_p_value_edges():
    assert trust_p_value(0.3, 50, 0.3, either_sign=False) == pytest.approx(0.5)  # at the threshold: z = 0
    assert trust_p_value(-0.9, 50, 0.3, either_sign=False) == 1.0  # wrong sign for a one-sided candidate
    assert trust_p_value(math.nan, 50, 0.3, either_sign=True) == 1.0
    assert trust_p_value(0.9, 3, 0.3, either_sign=True) == 1.0
    # the docstring's worked example: rho = 0.8 over 20 trials against 0.3, sign learned
    z = (math.atanh(0.8) - math.atanh(0.3)) / math.sqrt((1 + 0.32) / 17)
    assert trust_p_value(0.8, 20, 0.3, either_sign=True) == pytest.approx(2 * norm.sf(z)) == pytest.approx(0.0046, abs=1e-4)


def test_holm():
    # sorted: 0.005 ≤ 0.05/4, 0.01 ≤ 0.05/3, 0.03 > 0.05/2: stop
    assert holm([0.01, 0.04, 0.03, 0.005], alpha=0.05) == [True, False, False, True]
    assert holm([0.04, 0.001], alpha=0.05) == [True, True]  # 0.001 ≤ 0.025, then 0.04 ≤ 0.05
    assert holm([0.02, 0.02], alpha=0.05) == [True, True]  # 0.02 ≤ 0.025, then 0.02 ≤ 0.05
    assert holm([0.03, 0.04], alpha=0.05) == [False, False]  # 0.03 > 0.025: nothing rejected
    assert holm([], alpha=0.05) == []


def test_percentile_rule():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile_threshold(values, percentile=50, higher_is_better=True) == np.median(values)
    assert percentile_threshold(values, percentile=25, higher_is_better=True) == 3.25  # keeps the top quarter
    assert percentile_threshold(values, percentile=25, higher_is_better=False) == 1.75
    assert is_poor(1.0, [1.0, 2.0, 3.0], percentile=50, higher_is_better=True)
    assert not is_poor(2.0, [1.0, 2.0, 3.0], percentile=50, higher_is_better=True)
    assert is_poor(3.0, [1.0, 2.0, 3.0], percentile=50, higher_is_better=False)
    assert not is_poor(1.5, [1.0, 2.0, 3.0, 4.0, math.nan], percentile=25, higher_is_better=False)
