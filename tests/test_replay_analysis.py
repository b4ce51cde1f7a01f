"""Correlation analysis and report: numbers against hand computations and scipy, filters, plots."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import probe
from probe.replay import load_checkpoint, replay
from probe.replay.analysis import (
    correlations,
    filter_checkpoints,
    load_tables,
    network_measure,
    with_measures,
    write_report,
)
from tests.replay_helpers import make_family

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _table() -> pd.DataFrame:
    """Hand-made: dataset A has epochs 1 and 2 (6 models), B epoch 1 (4 models, one NaN, one inf)."""
    return pd.DataFrame({
        "dataset": ["A"] * 12 + ["B"] * 4,
        "optimizer": ["SGD", "AdaM"] * 8,
        "hparams": ["lr0.1 wd0", "lr0.01 wd0"] * 8,
        "epoch": [1] * 6 + [2] * 6 + [1] * 4,
        "m": [0.1, 0.4, 0.4, 0.9, 0.3, 0.7, 2.0, 1.0, 3.0, 5.0, 4.0, 4.0, 1.0, np.nan, 3.0, 2.0],
        "k": [1.0] * 6 + [3.0, 1.0, 2.0, 2.0, 5.0, 4.0] + [1.0, 2.0, np.inf, 3.0],
        "test_acc": [0.5, 0.6, 0.55, 0.9, 0.52, 0.8, 0.7, 0.6, 0.75, 0.9, 0.8, 0.85, 0.3, 0.4, 0.5, 0.45],
        "gap": [-0.1, -0.05, -0.2, 0.0, -0.15, -0.02, -0.1, -0.3, -0.1, -0.01, -0.05, -0.02, 0.0, -0.1, -0.2, -0.3],
    })


def _ranks(v: np.ndarray) -> np.ndarray:
    return np.array([np.sum(v < x) + (np.sum(v == x) + 1) / 2 for x in v])


def _pearson(x, y) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()))


def _kendall_tau_b(x, y) -> float:
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))


def test_correlations_match_hand_computation_and_scipy():
    table = _table()
    result = correlations(table, measures=["m", "k"], targets=["test_acc", "gap"], by=["dataset"])
    assert len(result) == 3 * 2 * 2
    for _, row in result.iterrows():
        group = table[(table["dataset"] == row["dataset"]) & (table["epoch"] == row["epoch"])]
        x, y = group[row["measure"]].to_numpy(), group[row["target"]].to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        assert row["n"] == len(x)
        if row["measure"] == "k" and row["epoch"] == 1 and row["dataset"] == "A":  # constant measure
            assert math.isnan(row["pearson"]) and math.isnan(row["spearman"]) and math.isnan(row["kendall"])
            continue
        assert row["pearson"] == pytest.approx(_pearson(x, y), rel=1e-12)
        assert row["spearman"] == pytest.approx(_pearson(_ranks(x), _ranks(y)), rel=1e-12)
        assert row["kendall"] == pytest.approx(_kendall_tau_b(x, y), rel=1e-12)
        assert row["pearson_p"] == pytest.approx(stats.pearsonr(x, y)[1], rel=1e-9)
        assert row["spearman_p"] == pytest.approx(stats.spearmanr(x, y)[1], rel=1e-9)
        assert row["kendall_p"] == pytest.approx(stats.kendalltau(x, y)[1], rel=1e-9)
    b = result[(result["dataset"] == "B") & (result["target"] == "test_acc")].set_index("measure")
    assert b.loc["m", "n"] == 3 and b.loc["k", "n"] == 3  # the NaN and the inf pairs are left out


def test_correlations_min_count_grouping_and_errors():
    table = _table()
    result = correlations(table, measures=["m"], targets=["test_acc"], by=["dataset"], min_count=4)
    b = result[result["dataset"] == "B"].iloc[0]
    assert b["n"] == 3 and math.isnan(b["spearman"])
    pooled = correlations(table, measures=["m"], targets=["test_acc"], by=())
    assert list(pooled["epoch"]) == [1, 2] and list(pooled["n"]) == [9, 6]
    by_optimizer = correlations(table, measures=["m"], targets=["test_acc"], by=["dataset", "optimizer"])
    assert set(zip(by_optimizer["dataset"], by_optimizer["optimizer"])) == {("A", "SGD"), ("A", "AdaM"), ("B", "SGD"), ("B", "AdaM")}
    with pytest.raises(ValueError, match="lacks columns"):
        correlations(table, measures=["nope"])


def test_filters():
    table = _table()
    assert set(filter_checkpoints(table, optimizers=["SGD"])["optimizer"]) == {"SGD"}
    assert len(filter_checkpoints(table, datasets=["B"], hparams=["lr0.01", "wd0"])) == 2
    assert len(filter_checkpoints(table, hparams=["lr0.1"])) == 8  # whole tokens, not prefixes
    with pytest.raises(ValueError, match=r"optimizer=\['SAM'\].*AdaM"):
        filter_checkpoints(table, optimizers=["SAM"])


def test_measures_recomputed_from_the_layer_table_equal_the_report(tmp_path):
    paths = make_family(tmp_path / "family", models=2, epochs=1)
    replay([tmp_path / "family"], tmp_path / "out")
    checkpoints, layers = load_tables(tmp_path / "out")
    names = [*probe.HEADLINE_NAMES, "ER_mean_t4_AE", "SQ_wp_t0_BE", "spec_L2_t3_AE", "fro_wmean_t1_BE"]
    table = with_measures(checkpoints, layers, names)
    for path in paths:
        report = probe.measure(load_checkpoint(path).state_dict, layers="genprob")
        row = table[table["path"] == str(path.resolve())].iloc[0]
        for name in names:
            assert row[name] == pytest.approx(report.value(name), rel=1e-12, nan_ok=True), name
    assert network_measure(layers, "E_L2_BE").to_dict() == pytest.approx(
        dict(zip(checkpoints["path"], checkpoints["E_L2_BE"])), rel=1e-12)


def test_write_report_csv_and_plots(tmp_path):
    import matplotlib.image

    make_family(tmp_path / "family", models=4, epochs=3)
    replay([tmp_path / "family"], tmp_path / "out")
    files = write_report(tmp_path / "out", measures=["E_L2_BE", "SQ_p_AE", "ER_mean_t0_BE"], optimizers=["SGD", "AdaM"],
                         hparams=["wd0.0005"], plot_methods=["spearman", "kendall"])
    written = pd.read_csv(files.correlations_csv)
    checkpoints, layers = load_tables(tmp_path / "out")
    expected = correlations(with_measures(checkpoints, layers, ["E_L2_BE", "SQ_p_AE", "ER_mean_t0_BE"]),
                            measures=["E_L2_BE", "SQ_p_AE", "ER_mean_t0_BE"])
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert sorted(written["epoch"].unique()) == [0, 1, 2]
    assert set(written[written["measure"] != "SQ_p_AE"]["n"]) == {4}
    sparse = written[written["measure"] == "SQ_p_AE"]  # random weights: EVBMF mostly keeps nothing
    assert (sparse["n"] < 3).all() and sparse["spearman"].isna().all()
    names = sorted(p.name for p in files.plots)
    assert names == sorted([f"corr_{t}_{m}.png" for t in ("test_acc", "gap") for m in ("spearman", "kendall")]
                           + [f"scatter_{t}_epoch{e}.png" for t in ("test_acc", "gap") for e in (0, 2)])
    for path in files.plots:
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    only_sgd = write_report(tmp_path / "out", report_dir=tmp_path / "sgd", optimizers=["SGD"], plots=False)
    assert set(only_sgd.correlations.query("measure == 'E_L2_BE'")["n"]) == {2} and only_sgd.plots == ()
    with pytest.raises(ValueError, match="scatter epoch 7"):
        write_report(tmp_path / "out", scatter_epochs=[7])


def test_recomputed_ae_aggregates_follow_the_kept_share_rule(tmp_path):
    """An AE aggregate recomputed from layers.csv is NaN where EVBMF kept a component in fewer than
    half the unfoldings, as the report's own (SPEC §5): SQ_p_t0_AE is SQ_p_AE by definition."""
    import torch

    generator = torch.Generator().manual_seed(0)
    structured = torch.randn(40, 2, generator=generator) @ torch.randn(2, 60, generator=generator)
    for name, low_rank in (("few", 1), ("most", 3)):
        state = {f"l{i}.weight": structured + 0.01 * torch.randn(40, 60, generator=generator) if i < low_rank
                 else torch.randn(40, 60, generator=generator) for i in range(4)}
        torch.save(state, tmp_path / f"{name}.pt")
    replay([tmp_path / "few.pt", tmp_path / "most.pt"], tmp_path / "out")
    checkpoints, layers = load_tables(tmp_path / "out")
    table = with_measures(checkpoints, layers, ["SQ_p_t0_AE", "spec_p_t7_AE"]).set_index("path")
    few, most = (table.loc[str((tmp_path / f"{name}.pt").resolve())] for name in ("few", "most"))
    assert math.isnan(few["SQ_p_AE"]) and math.isnan(few["SQ_p_t0_AE"]) and math.isnan(few["spec_p_t7_AE"])
    assert most["SQ_p_t0_AE"] == most["SQ_p_AE"] and most["spec_p_t7_AE"] == pytest.approx(most["S_p_AE"], rel=1e-12)
    assert math.isnan(probe.measure(torch.load(tmp_path / "few.pt")).value("SQ_p_t0_AE"))
