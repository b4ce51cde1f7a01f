"""benchmarks/speed.py --quick runs end to end and its accuracy table stays within SPEC §2's 1e-5."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from probe.spectrum import ROUTES

ROOT = Path(__file__).resolve().parent.parent


def test_speed_quick_prints_every_model_within_tolerance():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "benchmarks/speed.py", "--quick"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    lines = result.stdout.splitlines()
    cut = next(i for i, line in enumerate(lines) if line.startswith("where the time goes"))
    lines, profile = lines[:cut], [line.split() for line in lines[cut + 2:]]
    rows = [line.split() for line in lines]
    timing = [row for row in rows if len(row) > 3 and row[1] in ("init", "trained")]
    models = ("resnet18", "resnet50", "bert-base", "gpt2-medium")
    speed_rows = [row for row in timing if row[2] == "1"]  # model, weights, threads, ...
    accuracy_rows = [row for row in timing if row[2] != "1"]
    assert [(r[0], r[1]) for r in speed_rows] == [(m, w) for m in models for w in ("init", "trained")]
    assert [(r[0], r[1]) for r in accuracy_rows] == [(m, w) for m in models for w in ("init", "trained")]
    for row in accuracy_rows:
        assert float(row[2]) <= 1e-5 and float(row[3]) <= 1e-5, row  # auto, gram64: max rel. deviation
        assert {word for word in row[4:] if not word.rstrip(",").isdigit()} <= set(ROUTES), row
    cliff = [row for row in rows if row[:1] in (["3e+00"], ["5e+00"], ["1e+01"], ["1e+07"])]
    assert [row[5] for row in cliff] == ["gram32", "gram64", "gram64", "gram64+min"]
    assert all(float(row[6]) <= 1e-5 for row in cliff)
    floor = next(line for line in lines if line.startswith("kernel floor"))
    assert len(re.findall(r"\d\.\d{3}s", floor)) == 3 and float(re.findall(r"([\d.]+)x gram64", floor)[0]) > 0
    models_weights = [(m, w) for m in models for w in ("init", "trained")]
    assert [(row[0], row[1]) for row in profile] == models_weights  # measure, 7 parts, rest (ms)
    assert all(len(row) == 11 and float(row[2]) > 0 and all(float(x) >= 0 for x in row[3:10]) for row in profile)


def test_speed_large_prints_each_kind_within_tolerance():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "benchmarks/speed.py", "--models", "", "--threads", "1",
               "--repeats", "1", "--large", "96x96,64x200", "--large-kinds", "steep,ill,random"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[1:2] in (["steep"], ["ill"], ["random"])]
    assert [(row[0], row[1]) for row in rows] == [(shape, kind) for shape in ("96x96", "64x200")
                                                  for kind in ("steep", "ill", "random")]
    assert all(row[5] in ROUTES and float(row[6]) <= 1e-5 for row in rows), rows
    assert all(re.fullmatch(r"\d+\.\d\dms", x) for row in rows for x in row[2:4]), rows  # small: in ms, not 0.00s
    wrong = subprocess.run([*command[:-1], "steep,flat"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert wrong.returncode == 2 and "unknown --large-kinds ['flat']" in wrong.stderr
