"""Cost of ProbeTrainerCallback per evaluation in a Hugging Face ``Trainer``: synchronous vs background.

Workload: a BERT built from ``BertConfig`` (``--hidden`` wide, ``--layers`` encoder layers,
vocabulary 1,000; nothing downloaded) fine-tuned for sequence classification on random
token sequences, evaluated every ``--eval-steps`` steps on ``--eval-size`` sequences.
Modes: ``none`` (no callback), ``sync`` (``ProbeTrainerCallback()``), ``thread`` and
``process`` (``background=...``: the weights are copied when the step that precedes an
evaluation ends and measured while the evaluation loop runs; the evaluation's log waits for
the result). No mode sets ``metric_for_best_model``; TensorBoard reporting is on (the
callback writes its heatmaps there too).

Columns: ``s/eval`` is the median, over ``--repeats`` runs interleaved with the other modes,
of (run time − the ``none`` run's time of that repeat) / evaluations: what one evaluation's
measuring adds to the wall clock. ``blocking`` and ``measure`` are medians over the
evaluations of ``ProbeTrainerCallback.timings``: time the training thread spent in the
callback, and time ``probe.measure`` took (on the worker in background modes).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hf_overhead.py --threads 1
    .venv/bin/python benchmarks/hf_overhead.py --hidden 256 --layers 4 --eval-size 1024
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integrations.transformers import ProbeTrainerCallback

MODES = ("none", "sync", "thread", "process")


class Random(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 1000, (n, length), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def run(mode: str, options: argparse.Namespace, out: Path) -> tuple[float, int, list]:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=options.hidden, num_hidden_layers=options.layers,
                        num_attention_heads=max(1, options.hidden // 64), intermediate_size=4 * options.hidden,
                        max_position_embeddings=options.length)
    model = BertForSequenceClassification(config)
    args = TrainingArguments(str(out), max_steps=options.steps, eval_strategy="steps", eval_steps=options.eval_steps,
                             save_strategy="no", logging_strategy="no", report_to=["tensorboard"], use_cpu=True,
                             per_device_train_batch_size=16, per_device_eval_batch_size=64, disable_tqdm=True, seed=0)
    callbacks = [] if mode == "none" else [ProbeTrainerCallback(background=False if mode == "sync" else mode)]
    trainer = Trainer(model, args, train_dataset=Random(16 * options.steps, options.length, 1),
                      eval_dataset=Random(options.eval_size, options.length, 2), callbacks=callbacks)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    evaluations = sum("eval_loss" in entry for entry in trainer.state.log_history)
    return seconds, evaluations, callbacks[0].timings if callbacks else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--length", type=int, default=32, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--eval-steps", type=int, default=4)
    parser.add_argument("--eval-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--modes", default=",".join(MODES))
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    modes = options.modes.split(",")
    wall: dict[str, list[float]] = {m: [] for m in modes}
    timings: dict[str, list] = {m: [] for m in modes}
    evaluations = 0
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(options.repeats):
            for mode in modes:
                seconds, evaluations, measured = run(mode, options, Path(tmp) / f"{mode}{repeat}")
                wall[mode].append(seconds)
                timings[mode].extend(measured[1:])  # the first measurement warms up
    print(f"BERT hidden {options.hidden}, {options.layers} layers, {options.steps} steps, {evaluations} evaluations of "
          f"{options.eval_size} sequences; {torch.get_num_threads()} torch threads; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}")
    print("| mode | run s | s/eval added | blocking s/eval | measure s |")
    print("|---|---|---|---|---|")
    for mode in modes:
        added = "" if "none" not in wall else statistics.median(
            (w - n) / evaluations for w, n in zip(wall[mode], wall["none"]))
        blocking = statistics.median(t.blocking_s for t in timings[mode]) if timings[mode] else float("nan")
        measure = statistics.median(t.measure_s for t in timings[mode]) if timings[mode] else float("nan")
        print(f"| {mode} | {statistics.median(wall[mode]):.2f} | {added if added == '' else f'{added:+.3f}'} | "
              f"{blocking:.3f} | {measure:.3f} |")


if __name__ == "__main__":
    main()
