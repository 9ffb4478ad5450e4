"""Who uses the CPU cores during ``fit`` on the NumPy and numba backends: the BLAS libraries'
thread pools (NumPy's OpenBLAS and SciPy's, which numba's kernels call), set together by one owner.

Why measure instead of fixing a number: on a quiet 2-core machine two BLAS threads make a large product
1.9× faster, but with one other busy program on the machine the second thread waits for a core and the
same training ran 2.5× slower than with one thread (``examples/mnist_cnn.py`` on numba: 5.0 s against
1.9 s; OpenBLAS's threads spin while they wait, so they also slow the program they compete with). So
``fit`` times its first steps with one thread and with all of them, alternately, and keeps the faster
(one thread unless all of them are faster by 10 %): on a busy machine or for a small network it
settles on one thread, on a quiet machine with large products on all of them. It measures again at
the start of a later epoch once ``REPROBE`` times as long as the measuring took has passed (a machine
gets busy or quiet), so measuring costs at most about 1/``REPROBE`` of the run: measured at every
epoch, the digits MLP's 23-step epochs spent half their steps measuring, and on a busy machine the
steps on two threads waited for a core (30 epochs: 0.19–0.29 s quiet, 0.38–0.85 s busy). The thread
count changes the last bits of some products (OpenBLAS on two threads sums some of them in another
order), so a run's weights may differ from another's at float32 round-off when the choice differs;
``TOOLKIT_NUM_THREADS=1`` (or any fixed count) repeats a run bit for bit.

``TOOLKIT_NUM_THREADS`` caps the threads (default: the cores this process may run on); at 1 nothing is
measured and the libraries run on one thread.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from toolkit.errors import BackendError


def thread_budget() -> int:
    """``TOOLKIT_NUM_THREADS``, or the cores this process may run on."""
    given = os.environ.get("TOOLKIT_NUM_THREADS", "").strip()
    if not given:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not given.isdigit() or int(given) < 1:
        raise BackendError(f"TOOLKIT_NUM_THREADS={given!r}: give a whole number of threads ≥ 1, or leave it unset "
                           "to use the cores this process may run on")
    return int(given)


_tuned: int | None = None  # the count a running fit's tuner has set (None outside fit)


def step_threads() -> int:
    """Threads a training step may use now: the count ``fit``'s tuner has chosen (or is trying), else
    the budget. The numba backend's blocked convolution pass spreads its blocks over this many, so the
    tuner's choice (one thread on a busy machine) holds for its threads as for BLAS's."""
    return _tuned if _tuned is not None else thread_budget()


def blas_controllers() -> list[Any]:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process (raises ImportError
    without threadpoolctl)."""
    from threadpoolctl import ThreadpoolController

    return [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]


class BlasThreadTuner:
    """At the first epoch, and at a later epoch's start once ``REPROBE`` times the last measuring's
    duration has passed: one untimed warm-up step on each count, then ``PROBE`` timed steps at one BLAS
    thread and ``PROBE`` at ``most``, alternately (fewer when all threads are ``CROWDED``), then the
    faster count until the next measuring. ``close`` gives every library back the thread count it had."""

    PROBE = 5
    MARGIN = 0.9  # all the threads must be 10 % faster: one thread is the choice that cannot be crowded
    REPROBE = 20
    CROWDED = 2.0  # every step on all the threads this much slower than every step on one: decided

    def __init__(self, most: int) -> None:
        self.libraries = blas_controllers()
        self.before = [lib.num_threads for lib in self.libraries]
        self.most = most
        self.chosen = most
        self.probing = False
        self._samples: dict[int, list[float]] = {}
        self._current, self._started, self._warm_up = -1, 0.0, 0  # -1: not set by us yet
        self._probe_started, self._probe_ended, self._probe_took = 0.0, None, 0.0  # None: never measured

    def _set(self, threads: int) -> None:
        global _tuned
        if threads != self._current:
            for lib in self.libraries:
                lib.set_num_threads(threads)
            self._current = threads
        _tuned = threads

    def epoch_begin(self) -> None:
        if self.most == 1:  # nothing to choose
            self._set(1)
            return
        now = time.perf_counter()
        if self._probe_ended is not None and now - self._probe_ended < self.REPROBE * self._probe_took:
            self._set(self.chosen)  # measured recently enough
            return
        self._samples = {1: [], self.most: []}
        self.probing, self._warm_up, self._probe_started = True, 2, now

    def step_begin(self) -> None:
        if self.probing:
            ones, manys = self._samples[1], self._samples[self.most]
            first = self._warm_up == 2 or (not self._warm_up and len(ones) <= len(manys))
            self._set(1 if first else self.most)
            self._started = time.perf_counter()

    def step_end(self) -> None:
        if not self.probing:
            return
        took = time.perf_counter() - self._started
        if self._warm_up:
            # Untimed: one step on one thread (the first pays for compiling and first touches), then one on
            # all of them (it wakes or starts OpenBLAS's threads: 15–24 ms for the digits MLP's 0.4 ms step).
            self._warm_up -= 1
            return
        self._samples[self._current].append(took)
        ones, manys = self._samples[1], self._samples[self.most]
        # A crowded second thread shows at once: stop there, since every step on it also wakes OpenBLAS's
        # threads, which then spin for a while beside the program that crowds them.
        crowded = len(ones) == len(manys) and min(manys) > self.CROWDED * max(ones)
        if crowded or all(len(times) >= self.PROBE for times in self._samples.values()):
            one, many = statistics.median(ones), statistics.median(manys)
            self.chosen = self.most if many < self.MARGIN * one else 1
            self._set(self.chosen)
            self.probing = False
            self._probe_ended = time.perf_counter()
            self._probe_took = self._probe_ended - self._probe_started

    def close(self) -> None:
        global _tuned
        for lib, threads in zip(self.libraries, self.before, strict=True):
            lib.set_num_threads(threads)
        self._current = -1
        _tuned = None


def tuner() -> Any:
    """A ``BlasThreadTuner`` for this process, or None where there is nothing to set (no BLAS library
    found, threadpoolctl missing)."""
    most = thread_budget()
    try:
        found = BlasThreadTuner(most)
    except ImportError:
        return None
    return found if found.libraries else None
