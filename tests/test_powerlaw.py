"""WeightWatcher's power-law fit (probe.powerlaw, SPEC §10) and its network measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probe
from probe.aggregate import TAIL_NAMES, check_measure_name, parse_measure_name
from probe.powerlaw import MIN_EIGENVALUES, THRESHOLD, fit_power_law


def _pareto(alpha: float, xmin: float, n: int, seed: int) -> np.ndarray:
    """``n`` draws of the continuous power law ``p(x) ∝ x^(−alpha)``, ``x ≥ xmin`` (inverse CDF)."""
    u = np.random.default_rng(seed).random(n)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def _naive(x: np.ndarray) -> tuple[float, float]:
    """The fit written as a plain loop over candidates (SPEC §10), for comparison."""
    x = np.sort(x[x > THRESHOLD])
    n_all, best = x.size, (math.inf, math.nan, math.nan)
    for i in range(n_all - 1):
        tail = x[i:]
        n = tail.size
        spread = np.log(tail / x[i]).sum()
        if spread <= 0 or (n_all < 20 and n < 8):
            continue
        alpha = 1 + (n - 1 if n_all < 20 else n) / spread
        ks = np.abs(1 - (tail / x[i]) ** (1 - alpha) - np.arange(n) / n).max()
        if ks < best[0]:
            best = (ks, alpha, x[i])
    return best[1], best[2]


@pytest.mark.parametrize("alpha", [2.0, 3.5, 6.0])
def test_recovers_the_exponent_of_pareto_samples(alpha):
    fit = fit_power_law(_pareto(alpha, 0.5, 3000, seed=int(alpha * 10)))
    sigma = (fit.alpha - 1) / math.sqrt(fit.tail)  # the MLE's standard error
    assert abs(fit.alpha - alpha) < 4 * sigma
    assert fit.lambda_max == pytest.approx(_pareto(alpha, 0.5, 3000, seed=int(alpha * 10)).max())
    assert fit.alphahat == pytest.approx(fit.alpha * math.log10(fit.lambda_max))


def test_finds_the_tail_above_a_uniform_body():
    rng = np.random.default_rng(1)
    body = rng.uniform(0.01, 1.0, 2000)  # not a power law
    tail = _pareto(3.0, 1.0, 1000, seed=2)
    fit = fit_power_law(np.concatenate([body, tail]))
    assert 0.9 <= fit.xmin <= 1.6
    assert abs(fit.alpha - 3.0) < 4 * (fit.alpha - 1) / math.sqrt(fit.tail)


@pytest.mark.parametrize("n", [9, 15, 19, 20, 64, 700])
def test_matches_a_plain_loop_including_the_small_sample_rule(n):
    rng = np.random.default_rng(n)
    lam = np.linalg.svd(rng.standard_t(3, (n, 2 * n)), compute_uv=False) ** 2
    alpha, xmin = _naive(lam)
    fit = fit_power_law(rng.permutation(lam))  # any order
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.xmin == xmin


@pytest.mark.parametrize(
    "values",
    [
        [],
        [1.0] * (MIN_EIGENVALUES - 2) + [2.0],  # 7 values
        [3.0] * 50,  # all equal: no spread
        [0.0] * 40 + [1e-7] * 5 + [1.0, 2.0, 3.0],  # zeros and tiny values dropped: 3 left
        [1.0, 2.0, math.nan] + [3.0] * 10,
        [1.0, -2.0] + [3.0] * 10,
    ],
)
def test_degenerate_spectra_give_nan(values):
    fit = fit_power_law(np.array(values))
    assert math.isnan(fit.alpha) and math.isnan(fit.alphahat) and fit.tail == 0


def test_eight_values_with_spread_are_enough():
    fit = fit_power_law(np.array([1.0] * (MIN_EIGENVALUES - 1) + [2.0]))
    assert fit.tail == MIN_EIGENVALUES and fit.xmin == 1.0
    assert fit.alpha == pytest.approx(1 + (MIN_EIGENVALUES - 1) / math.log(2.0))  # small-sample MLE, n − 1


def test_lambda_max_is_kept_when_the_fit_is_undefined():
    fit = fit_power_law(np.array([4.0, 1.0, 0.0]))
    assert math.isnan(fit.alpha) and fit.lambda_max == 4.0


def test_names_extend_the_one_grammar():
    assert parse_measure_name("alpha_mean_BE")[1:] == ("alpha", "mean", "t0", "BE")
    assert parse_measure_name("alphahat_p_t4_BE")[1:] == ("alphahat", "p", "t4", "BE")
    assert check_measure_name("alphahat_mean_BE") == "alphahat_mean_BE"
    assert len(TAIL_NAMES) == 2 + 2 * 5 * 8
    for bad in ("alpha_mean_AE", "alpha_BE", "alpha_mean_t0_AE", "alphahat_L3_t0_BE"):
        with pytest.raises(ValueError, match="alpha_mean_BE"):
            check_measure_name(bad)


def test_report_aggregates_alpha_over_unfoldings_and_leaves_out_undefined_fits():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 10), torch.nn.Linear(10, 4))
    report = probe.measure(model)
    fits = [layer.unfoldings[u].power_law for u in ("in", "out") for layer in report.layers]
    alphas = [f.alpha for f in fits if math.isfinite(f.alpha)]
    assert len(alphas) == 4  # Linear(10, 4) has 4 eigenvalues: undefined, left out
    assert report.value("alpha_mean_BE") == pytest.approx(sum(alphas) / 4)
    hats = [f.alpha * math.log10(f.lambda_max) for f in fits if math.isfinite(f.alpha)]
    assert report.value("alphahat_mean_BE") == pytest.approx(sum(hats) / 4)
    assert report.value("alpha_L2_t0_BE") == pytest.approx(math.sqrt(sum(a * a for a in alphas) / 4))
    s = report.layers[0].unfoldings["in"].s
    assert report.layers[0].unfoldings["in"].power_law == fit_power_law(s**2)
    with pytest.raises(ValueError, match="BE"):
        report.vector("alpha", "AE")


def test_a_non_finite_layer_makes_alpha_nan():
    state = {"a.weight": torch.randn(32, 64), "b.weight": torch.full((16, 32), math.nan)}
    report = probe.measure(state, nonfinite="nan")
    assert math.isnan(report.layers[1].unfoldings["in"].power_law.alpha)
    assert math.isnan(report.value("alpha_mean_BE"))
    assert math.isfinite(probe.measure({"a.weight": state["a.weight"]}).value("alpha_mean_BE"))


def test_the_power_law_table_and_probe_measure_alpha(tmp_path, capsys):
    from probe.cli import main

    torch.manual_seed(0)
    state = {"fc.weight": torch.randn(64, 256), "head.weight": torch.randn(4, 64), "conv.weight": torch.randn(16, 3, 3, 3)}
    torch.save(state, tmp_path / "m.pt")
    assert main(["measure", str(tmp_path / "m.pt"), "--alpha"]) == 0
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] in (["fc.weight"], ["head.weight"], ["conv.weight"]) and len(line.split()) == 8}
    report = probe.measure(state)
    fc = report.layers[0].unfoldings["in"].power_law
    assert rows[("fc.weight", "both")] == ["64", f"{fc.alpha:.3f}", f"{fc.alphahat:.3f}", f"{fc.xmin:.4g}", str(fc.tail), f"{fc.ks:.3f}"]
    assert rows[("head.weight", "both")] == ["4"] + ["–"] * 5  # 4 eigenvalues: undefined
    assert set(rows) == {("fc.weight", "both"), ("head.weight", "both"), ("conv.weight", "in"), ("conv.weight", "out")}
    table = report.format_power_law()
    assert f"{'alpha_mean_BE':<16} {report.value('alpha_mean_BE'): .6g}" in table.splitlines()
