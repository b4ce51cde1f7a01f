"""How fast the ``probe`` command answers ``--help`` (it must not import torch first).

Runs each command in a fresh interpreter ``--repeats`` times, side by side with the
interpreter's own start-up and with ``import torch`` (what ``--help`` cost before the
package imports became lazy), and prints a table of wall times.

    .venv/bin/python benchmarks/cli_latency.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "python -c pass (interpreter start-up)": ["-c", "pass"],
    "probe --help": ["-m", "probe.cli", "--help"],
    "probe measure --help": ["-m", "probe.cli", "measure", "--help"],
    "probe replay --help": ["-m", "probe.cli", "replay", "--help"],
    "probe report --help": ["-m", "probe.cli", "report", "--help"],
    "python -c 'import torch' (for comparison)": ["-c", "import torch"],
}


def wall_time(args: list[str]) -> float:
    """Seconds one fresh ``python ARGS`` takes, output discarded; fails loudly on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per command (default 7)")
    args = parser.parse_args()
    wall_time(["-c", "import torch"])  # warm the file cache, as a second call would find it
    print(f"{'command':<44} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, argv in CASES.items():
        times = [wall_time(argv) for _ in range(args.repeats)]
        print(f"{name:<44} {statistics.median(times):>9.3f} {min(times):>7.3f} {max(times):>7.3f}")


if __name__ == "__main__":
    main()
