"""Regenerate the README's pictures from the current code (``make screenshots``; not part of CI).

Runs the demo (or reuses ``--demo-out``), serves its TensorBoard logs, photographs
TensorBoard in headless Chromium and copies the report's correlation plot:

- ``docs/tensorboard_scalars.png``: the ``probe/*`` and ``val/acc`` charts of every run
  (the Lightning run and the Optuna trials share one x axis);
- ``docs/tensorboard_heatmap.png``: the Lightning run's ``probe_heatmap/SQ`` image at
  its actual size;
- ``docs/report_correlation.png``: ``probe report``'s Spearman-with-test-accuracy plot.
- ``docs/optuna_dashboard_pruned.png``: optuna-dashboard's page of the demo study's first pruned
  trial, whose note says why the measure pruner stopped it (the recorded MNIST family replayed
  under the default pruner when the demo pruned nothing).

Needs Debian's ``chromium`` (``apt-get install -y chromium``). TensorBoard's settings
(smoothing, settings pane) live in the browser's localStorage and some views need a
click, so TensorBoard is loaded in a frame of a page served by a small same-origin proxy,
which sets them first and clicks.

    .venv/bin/python docs/screenshots.py                      # runs the full demo first (~5 min)
    .venv/bin/python docs/screenshots.py --demo-out demo_out  # reuse a finished `make demo`
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"scalarSmoothing": 0, "timeSeriesSettingsPaneOpened": False}
SHOTS = {
    # file: (window size, TensorBoard URL path and query, the text of a control to click once loaded)
    "tensorboard_scalars.png": ((1400, 1000), "/?forceSVG=true&smoothing=0&tagFilter=probe%2F%7Cval%2Facc#timeseries", ""),
    "tensorboard_heatmap.png": ((1400, 900), "/?forceSVG=true#images&tagFilter=probe_heatmap%2FSQ", "Show actual image size"),
}
SEED_PAGE = "/probe-screenshot-frame.html"
FRAME_PAGE = """<!doctype html><style>html, body, iframe {{ margin: 0; border: 0; width: 100%; height: 100%; }}</style>
<script>localStorage.setItem("_tb_global_settings", {settings});</script>
<iframe id="board" src={url}></iframe>
<script>
const text = {click};
function find(root) {{  // the innermost element showing `text`, also inside shadow roots
  for (const element of root.querySelectorAll("*")) {{
    const inner = element.shadowRoot && find(element.shadowRoot);
    if (inner) return inner;
    if (element.children.length === 0 && element.textContent.trim() === text) return element;
  }}
  return null;
}}
function click() {{
  const target = text && find(document.getElementById("board").contentDocument);
  if (target) target.click(); else if (text) setTimeout(click, 500);
}}
setTimeout(click, 4000);
</script>"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def executable(script: str, module: str) -> list[str]:
    """``script`` next to this Python (the venv's), else ``python -m module``."""
    path = Path(sys.executable).parent / script
    return [str(path)] if path.is_file() else [sys.executable, "-m", module]


def wait_until_loaded(base: str, logdir: Path, seconds: float = 300.0) -> None:
    """Wait until TensorBoard serves ``probe/F_p_BE`` of every run under ``logdir``."""
    runs = {path.parent for path in logdir.rglob("events.out.tfevents.*")}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=10) as response:
                tags = json.load(response)
            if sum("probe/F_p_BE" in run_tags for run_tags in tags.values()) >= len(runs):
                return
        except (urllib.error.URLError, ConnectionError, ValueError):
            pass
        time.sleep(2.0)
    raise SystemExit(f"TensorBoard at {base} did not load the {len(runs)} runs of {logdir} within {seconds:.0f} s")


def proxy(target: str) -> http.server.ThreadingHTTPServer:
    """A same-origin proxy to TensorBoard that also serves the page seeding localStorage."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path.startswith(SEED_PAGE):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                page = FRAME_PAGE.format(settings=json.dumps(json.dumps(SETTINGS)), url=json.dumps(query["next"][0]),
                                         click=json.dumps(query.get("click", [""])[0]))
                self._reply(200, {"Content-Type": "text/html"}, page.encode())
            else:
                self._forward(None)

        def do_POST(self) -> None:
            self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def _forward(self, body: bytes | None) -> None:
            request = urllib.request.Request(target + self.path, data=body, method=self.command,
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    self._reply(response.status, dict(response.headers), response.read())
            except urllib.error.HTTPError as error:
                self._reply(error.code, dict(error.headers), error.read())

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def chromium_screenshot(url: str, target: Path, size: tuple[int, int], *, budget_ms: int = 30000) -> Path:
    """``url`` photographed by headless Chromium (a fresh profile) into ``target``."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        f"--virtual-time-budget={budget_ms}", f"--screenshot={target}", url],
                       check=True, capture_output=True, timeout=300)
    return target


def screenshot(base: str, name: str, size: tuple[int, int], path: str, click: str, out: Path, attempts: int = 3) -> Path:
    """TensorBoard's page photographed until its charts are drawn (Chromium sometimes captures
    the cards before their lines: then again, with twice the time), else an error."""
    url = f"{base}{SEED_PAGE}?" + urllib.parse.urlencode({"next": path, "click": click})
    for attempt in range(attempts):
        target = chromium_screenshot(url, out / name, size, budget_ms=30000 * 2**attempt)
        if drawn(target):
            return target
    raise SystemExit(f"{target}: TensorBoard's charts were still empty after {attempts} captures")


def drawn(png: Path) -> bool:
    """Whether the page below TensorBoard's orange header and right of its runs pane shows
    coloured pixels (chart lines, images): at least 0.5 % of them (a drawn page: 3-11 %)."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)[150:, 400:]
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 80).mean()) >= 0.005


def dashboard_pruned_trial(study_db: Path, out: Path) -> Path:
    """optuna-dashboard's page of the first pruned trial of the demo's study (its note says why);
    when the demo pruned nothing (nothing was trusted), of a study replaying the recorded MNIST
    family with the default pruner instead (``benchmarks/data/family_mnist.csv``)."""
    import optuna

    study = optuna.load_study(study_name="probe-demo", storage=f"sqlite:///{study_db}")
    pruned = [t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    if not pruned:
        study_db = Path(tempfile.mkdtemp(prefix="probe-screenshots-")) / "replayed_study.db"
        study = replayed_study(study_db)
        pruned = [t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    with dashboard(study_db) as base:
        url = f"{base}/dashboard/studies/{study._study_id}/trials?numbers={pruned[0]}"
        return chromium_screenshot(url, out / "optuna_dashboard_pruned.png", (1800, 820), budget_ms=20000)


def replayed_study(study_db: Path):  # -> optuna.Study
    """The MNIST family's 48 recorded runs replayed (in a fixed order) into a fresh SQLite
    study named ``probe-demo`` under ``LearnedMeasurePruner()``."""
    import optuna

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pruning

    from integrations.optuna import LearnedMeasurePruner, replay_study

    study_db.parent.mkdir(parents=True, exist_ok=True)
    study_db.unlink(missing_ok=True)
    runs, _ = pruning.load_runs(ROOT / "benchmarks" / "data" / "family_mnist.csv")
    study = optuna.create_study(study_name="probe-demo", storage=f"sqlite:///{study_db}", direction="maximize",
                                pruner=LearnedMeasurePruner())
    replay_study([runs[i] for i in pruning.draw(len(runs), len(runs), 0)], study=study)
    return study


@contextlib.contextmanager
def dashboard(study_db: Path) -> Iterator[str]:
    """optuna-dashboard serving ``study_db`` on a free local port, while the block runs; its base URL."""
    port = free_port()
    server = subprocess.Popen([*executable("optuna-dashboard", "optuna_dashboard._cli"), f"sqlite:///{study_db}",
                               "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(150):
            with socket.socket() as probe_socket:
                if probe_socket.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-out", type=Path, default=None, help="a finished demo's output (default: run the demo now)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default docs/)")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        raise SystemExit("needs chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as scratch:
        demo = args.demo_out
        if demo is None:
            demo = Path(scratch) / "demo"
            subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(demo)], check=True, cwd=ROOT)
        port = free_port()
        board = subprocess.Popen([*executable("tensorboard", "tensorboard.main"), "--logdir", str(demo / "tensorboard"),
                                  "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = None
        try:
            wait_until_loaded(f"http://127.0.0.1:{port}", demo / "tensorboard")
            server = proxy(f"http://127.0.0.1:{port}")
            base = f"http://127.0.0.1:{server.server_address[1]}"
            args.out.mkdir(parents=True, exist_ok=True)
            for name, (size, path, click) in SHOTS.items():
                print(screenshot(base, name, size, path, click, args.out))
        finally:
            if server is not None:
                server.shutdown()
            board.terminate()
            board.wait(timeout=30)
        report = shutil.copyfile(demo / "report" / "corr_test_acc_spearman.png", args.out / "report_correlation.png")
        print(report)
        print(dashboard_pruned_trial(demo / "study.db", args.out))


if __name__ == "__main__":
    main()
