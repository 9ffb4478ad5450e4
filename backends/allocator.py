"""Keep freed large arrays in the C heap while a CPU backend is in use, instead of handing them back
to the operating system and faulting them in again on the next step.

NumPy allocates through glibc's ``malloc``. glibc serves a request above its mmap threshold (128 KiB,
raised on the fly up to 32 MiB as larger blocks are freed) with a fresh ``mmap``, and it returns heap
memory above its trim threshold with ``munmap``/``brk``. A training step that allocates a few MB of temporaries
(an LSTM's gates for every time step, a convolution's columns) then pays a page fault for every
4 KiB page it touches, every step. On this project's 2-core virtual machines a fault costs about 2 µs:
``x @ W + b`` at (1792, 28) × (28, 512) float32 took 4.4 ms, and 0.5 ms once freed memory
stayed in the heap. The sequential-MNIST LSTM step at batch 64 went from 22 to 11 ms, the GRU's from 24 to 10.5 ms.
XLA's CPU buffers come from the same ``malloc``: the jitted Adam step of a 784-256-256-10 MLP (batch 128), whose
outputs are four fresh 1 MB buffers each step, went from 4.4 to 2.9 ms.

So the NumPy, numba and JAX (CPU) backends raise both thresholds once, when first made, to values that keep
a training step's temporaries in the heap: memory freed at the top of the heap is kept up to
``TRIM_THRESHOLD`` (it is reused by the next step; it is returned when more than that is free), and
blocks below ``MMAP_THRESHOLD`` (glibc's largest allowed) come from the heap. This is the same
effect as setting ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` in the environment; if the
user has set either, or ``MALLOC_TOP_PAD_``, or on a C library other than glibc, nothing is changed.

The buffers a model keeps for its lifetime (flat parameters, gradients, optimizer state: what
``Backend.zeros`` makes) come from ``long_lived_zeros``: from 1 MiB on, a mapping of their own advised
onto transparent huge pages (``madvise(MADV_HUGEPAGE)``, which Linux honours when THP is ``always`` or
``madvise``). An optimizer update streams four or more such buffers at once, and on 4 KiB pages of a
virtual machine each page's first touch in a pass costs a two-level page walk: the Adam update of a
784-256-256-10 MLP (269,322 parameters) took 143–171 µs inside a step with its buffers in the heap and
115–122 µs on huge pages (230–390 µs against 105 µs alone, on freshly mapped pages); the whole Adam
step (config a of ``benchmarks/train_step.py``) took 2–12 % less, SGD's (three buffers) no less.
Smaller buffers stay in the heap, where a huge page would hold more than twice their bytes. (NumPy
itself advises huge pages for arrays of 4 MiB and more, over the 2 MiB-aligned pages inside them;
these buffers start on one.) An optimizer state loaded from a checkpoint replaces the buffers with the
loaded arrays, in the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import mmap
import os
from typing import Any

import numpy as np

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 * 2**20
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they were set."""
    if any(name in os.environ for name in _USER_SETTINGS):
        return False  # the user's choice wins
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


HUGE_PAGE = 2 * 2**20
HUGE_PAGES_FROM = 2**20  # smaller buffers stay in the heap: a huge page would hold more than twice their bytes


@functools.cache
def huge_pages_allowed() -> bool:
    """Whether this process may ask for transparent huge pages (Linux, THP not ``never``)."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            return "[never]" not in setting.read()
    except OSError:
        return False


def long_lived_zeros(shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
    """Zeros for a buffer that lives as long as a model (flat parameters, gradients, optimizer
    state): from ``HUGE_PAGES_FROM`` bytes on, on transparent huge pages where the system offers them."""
    dtype = np.dtype(dtype)
    count = math.prod(shape) if isinstance(shape, tuple) else shape
    nbytes = count * dtype.itemsize
    if nbytes < HUGE_PAGES_FROM or not huge_pages_allowed():
        return np.zeros(shape, dtype=dtype)
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # zeroed by the system
    raw = np.frombuffer(region, dtype=np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    region.madvise(mmap.MADV_HUGEPAGE, start, size)
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def long_lived_like(array: np.ndarray) -> np.ndarray:
    """``long_lived_zeros`` shaped like ``array``."""
    return long_lived_zeros(array.shape, array.dtype)
