"""The layer table read in bounded memory: chunks of whole checkpoints, from CSV or Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from probe.replay import replay
from probe.replay.analysis import (
    iter_layers,
    layer_measures,
    load_layers,
    network_measure,
    write_report,
)
from tests.replay_helpers import make_family

NAMES = ["ER_mean_t0_BE", "SQ_wp_t4_BE", "ER_L2_t6_AE", "E_L2_BE"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chunks")
    make_family(folder / "family", models=3, epochs=2)
    replay([folder / "family"], folder / "out", parquet=True)
    return folder / "out"


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_chunks_hold_whole_checkpoints_and_add_up_to_the_table(out, tmp_path, source):
    directory = out
    if source == "csv":  # the same directory without its Parquet tables
        directory = tmp_path / "csv"
        directory.mkdir()
        (directory / "layers.csv").write_bytes((out / "layers.csv").read_bytes())
    full = load_layers(out)
    chunks = list(iter_layers(directory, chunk_rows=50))  # a checkpoint has 84 rows: every chunk boundary splits one
    assert len(chunks) == 6 and all(chunk["path"].nunique() == 1 for chunk in chunks)
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, full, check_dtype=False)


@pytest.mark.parametrize("chunk_rows", [10, 200, 10_000])
def test_layer_measures_equal_those_of_the_whole_table(out, chunk_rows):
    full = load_layers(out)
    paths = sorted(full["path"].unique())[1:5]
    got = layer_measures(out, NAMES, paths=paths, chunk_rows=chunk_rows)
    assert sorted(got.index) == paths
    for name in NAMES:
        expected = network_measure(full[full["path"].isin(paths)], name)
        np.testing.assert_array_equal(got[name].sort_index().to_numpy(), expected.sort_index().to_numpy())


def test_a_table_not_grouped_by_checkpoint_is_refused(out, tmp_path):
    shuffled = load_layers(out).sample(frac=1.0, random_state=0)
    (tmp_path / "bad").mkdir()
    shuffled.to_csv(tmp_path / "bad" / "layers.csv", index=False)
    with pytest.raises(ValueError, match="not grouped by checkpoint"):
        list(iter_layers(tmp_path / "bad", chunk_rows=100))


def test_a_repeated_block_counts_once_and_a_conflicting_one_is_refused(out, tmp_path, caplog):
    full = load_layers(out)
    first = full["path"].iloc[0]
    block = full[full["path"] == first]
    (tmp_path / "twice").mkdir()  # the first checkpoint's block written twice in a row
    pd.concat([block, full], ignore_index=True).to_csv(tmp_path / "twice" / "layers.csv", index=False)
    with caplog.at_level("WARNING"):
        got = layer_measures(tmp_path / "twice", NAMES, chunk_rows=50)
    assert f"repeats {len(block)} rows of {first!r}" in caplog.text
    expected = layer_measures(out, NAMES)
    pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index())
    changed = block.assign(ER=block["ER"] * 2)  # the same layers with other values
    (tmp_path / "conflict").mkdir()
    pd.concat([changed, full], ignore_index=True).to_csv(tmp_path / "conflict" / "layers.csv", index=False)
    with pytest.raises(ValueError, match=f"holds {first!r} layer 0 .* twice with different values"):
        layer_measures(tmp_path / "conflict", NAMES)


def test_report_recomputes_aggregates_chunk_by_chunk(out, tmp_path):
    files = write_report(out, report_dir=tmp_path / "report", measures=NAMES, plots=False)
    full = load_layers(out)
    for name in NAMES[:3]:
        expected = files.checkpoints["path"].map(network_measure(full, name))
        np.testing.assert_array_equal(files.checkpoints[name].to_numpy(), expected.to_numpy())
