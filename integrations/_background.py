"""Background measuring: a worker thread that measures weight copies, or hands them to a process.

``"thread"`` measures on the worker thread. Torch releases the GIL inside its kernels, but
``probe.measure`` also runs Python between them (EVBMF's scalar search, per-layer
bookkeeping); when the training loop is Python-bound too (small models, Lightning's
per-batch overhead), the two threads hand the GIL back and forth and both slow down.
``"process"`` sends the copies (as NumPy arrays through a pipe: no shared memory, whose
size containers often limit) to one spawned process that measures with a single CPU
thread; the worker thread only waits for it. Either way the reports are logged by the
caller on the training thread: TensorBoard writing is Python-bound too, and on the worker
thread it would slow training more than it costs there. The caller queues measurements
(:meth:`Measurer.enqueue`, at most :data:`MAX_IN_FLIGHT` at once) and collects them in order
(:meth:`Measurer.collect`). The process's start-up (it imports torch: seconds) overlaps
training: until it answers, measurements run on the worker thread. This module imports neither
Lightning nor TensorBoard, so the spawned process starts quickly.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from time import perf_counter
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

import probe
from probe.layers import every_tensor
from probe.options import MeasureOptions

Kind = Literal["thread", "process"]
KINDS = ("thread", "process")
MAX_IN_FLIGHT = 2
"""At most this many measurements queued or running (:meth:`Measurer.enqueue`); the next one waits."""


class Finished(NamedTuple):
    """A queued measurement, done: ``report`` and ``seconds``, or the ``error`` it raised."""

    tag: Any  # what the caller enqueued it with
    report: probe.Report | None
    error: Exception | None
    seconds: float


def measure_selected(tensors: dict[str, torch.Tensor], options: MeasureOptions) -> tuple[probe.Report, float]:
    """``probe.measure`` of already-selected tensors (the selection: every one of them), and the seconds it took."""
    start = perf_counter()
    report = probe.measure(tensors, layers=every_tensor, options=options)
    return report, perf_counter() - start


def _measure_arrays(arrays: dict[str, np.ndarray], options: MeasureOptions) -> tuple[probe.Report, float]:
    return measure_selected({name: torch.from_numpy(a) for name, a in arrays.items()}, options)


_PR_SET_PDEATHSIG = 1


def _start_process(parent: int) -> None:
    torch.set_num_threads(1)  # leave the other cores to training
    # Ctrl-C in a terminal reaches the whole process group: the trainer shuts down gracefully and
    # waits for the measurement in flight here, so this process must not die of it (it dies with the trainer)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """End this process when process ``parent`` ends (however it ends)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
            if os.getppid() != parent:  # it died before the request took effect
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="probe-watchdog").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _as_array(tensor: torch.Tensor) -> np.ndarray:
    # bfloat16 has no NumPy dtype; float32 holds it exactly (and the engine upcasts anyway)
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


class Measurer:
    """Measure weight copies off the training thread.

    Parameters
    ----------
    kind:
        ``"thread"`` or ``"process"`` (module docstring).
    options:
        How to measure (the tensors submitted are the selection; the options pickle as they are).
    """

    def __init__(self, kind: Kind, options: MeasureOptions) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self._options = options
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-measure")
        self._process: ProcessPoolExecutor | None = None
        self._started: Future | None = None  # the process's first answer
        self._queued: deque[tuple[Any, Future]] = deque()  # in flight, oldest first
        self._finished: deque[Finished] = deque()  # taken off the queue, not collected yet
        if kind == "process":
            context = multiprocessing.get_context("spawn")  # fork would copy the trainer's threads and state
            self._process = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_process,
                                                initargs=(os.getpid(),))
            # it imports torch and probe (seconds): training goes on meanwhile, and the thread measures
            self._started = self._process.submit(int)

    @property
    def ready(self) -> bool:
        """Whether submitted work goes where ``kind`` says: the process has started (or died: the thread)."""
        return self._started is None or self._started.done()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for :attr:`ready`; return it."""
        if self._started is not None:
            wait([self._started], timeout)
        return self.ready

    def submit(self, tensors: dict[str, torch.Tensor]) -> Future:
        """Measure ``tensors`` (copies the caller will not touch again).

        Returns
        -------
        Future
            Resolves to ``(report, seconds)``, ``seconds`` the time ``probe.measure`` took.
        """
        return self._thread.submit(self._job, tensors)

    def enqueue(self, tensors: dict[str, torch.Tensor], tag: Any) -> None:
        """Queue the measurement of ``tensors`` (copies), identified by ``tag``, for :meth:`collect`.

        With :data:`MAX_IN_FLIGHT` queued already, first waits for the oldest (so copies never
        pile up when measuring is slower than training).
        """
        while len(self._queued) >= MAX_IN_FLIGHT:
            self._take_oldest()
        self._queued.append((tag, self.submit(tensors)))

    def collect(self, *, wait: bool) -> Iterator[Finished]:
        """The queued measurements that are done, oldest first, up to the first still running
        (``wait``: every one, waiting for each in turn).

        A wait interrupted (Ctrl-C) leaves that measurement queued, so a later
        ``collect(wait=True)`` still returns it.
        """
        while self._finished or (self._queued and (wait or self._queued[0][1].done())):
            if not self._finished:
                self._take_oldest()
            yield self._finished.popleft()

    def _take_oldest(self) -> None:
        tag, future = self._queued[0]
        try:
            report, seconds = future.result()
            error = None
        except Exception as caught:
            report, seconds, error = None, float("nan"), caught
        finally:
            if future.done():
                self._queued.popleft()
        self._finished.append(Finished(tag, report, error, seconds))

    def _job(self, tensors: dict[str, torch.Tensor]) -> tuple[probe.Report, float]:
        if self._process is None or not self.ready:  # not started yet: this measurement in the thread
            return measure_selected(tensors, self._options)
        arrays = {name: _as_array(t.cpu()) for name, t in tensors.items()}
        try:
            return self._process.submit(_measure_arrays, arrays, self._options).result()
        except BrokenProcessPool as error:
            warnings.warn(f"probe: the measuring process died ({error}); measuring goes on in a thread of the "
                          "training process", RuntimeWarning, stacklevel=2)
            self._process.shutdown(wait=False)
            self._process = None
            return measure_selected(tensors, self._options)

    @property
    def pid(self) -> int | None:
        """The measuring process's id (``"process"`` kind, while it runs), else ``None``."""
        processes = getattr(self._process, "_processes", None) or {}
        return next(iter(processes), None)

    def shutdown(self) -> None:
        """Wait for submitted work, then stop the thread and let the process exit on its own."""
        self._thread.shutdown(wait=True)
        if self._process is not None:
            self._process.shutdown(wait=False)  # all its work is done; its exit (~0.5 s) needs no waiting
