"""Smoke test of benchmarks/pruner_latency.py: the quick run times every decision on real storages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pruner_latency


def test_quick_run_prints_one_record_per_storage_and_pruner(capsys):
    pruner_latency.main(["--quick", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["storage"], r["pruner"]) for r in rows] == [
        (storage, pruner) for storage in ("inmemory", "journal") for pruner in pruner_latency.PRUNERS
    ]
    for row in rows:
        assert (row["trials"], row["epochs"]) == (50, 3)
        assert 0 < row["decide_p50_ms"] <= row["decide_p90_ms"] and row["join_s"] >= 0 and row["report_p50_ms"] > 0
