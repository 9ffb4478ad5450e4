"""Feeding data to ``fit``, ``evaluate`` and ``predict``: three ways, one training loop.

1. Arrays in memory, ``fit(x, y)``: moved to the model's device once, batches sliced there.
2. ``Dataset(x, y)``: rows read batch by batch from anything indexable by an array of row numbers,
   such as a memory-mapped array (``numpy.load(path, mmap_mode="r")``) far larger than memory, or
   ``Dataset.from_npy(x_path, y_path)``, which reads the rows with file I/O. The
   batches are the same rows in the same order as ``fit(x, y)`` with the same seed draws (the
   same seeded permutation), so a run on disk equals the run in memory.
3. Any iterable of batches: a generator, a PyTorch ``DataLoader``, a list of ``(x, y)`` tuples
   (``x`` alone for ``predict``). Each batch is converted at the boundary (``Backend.asarray``,
   which shares memory where the backend can, e.g. NumPy from a CPU tensor).

Batches of kinds 2 and 3 are read and copied to the device on a background thread while the
current step runs (``Prefetcher``: a bounded queue, ``prefetch`` batches ahead).
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import registry
from .errors import InputError, ShapeError

Array = Any


class Dataset:
    """Rows of ``x`` (and ``y``) read batch by batch: in-memory or memory-mapped arrays.

    Anything with ``.shape`` and indexing by an array of row numbers works (NumPy arrays and
    memmaps, h5py and zarr datasets); only the rows of each batch are read.

    Args:
        x, y: inputs and targets (``y`` may be None for ``predict``).
        release_pages: for memory-mapped arrays, hand the pages a batch touched back to the OS
            after reading it (``madvise(MADV_DONTNEED)``): they stay in the OS file cache, but no
            longer count as this process's resident memory, which then stays at a few batches
            however large the file. A mapped page that is read counts as resident otherwise.

    Example:
        >>> import numpy as np
        >>> from toolkit import Dense, Sequential
        >>> from toolkit.data import Dataset
        >>> x, y = np.ones((10, 3)), np.zeros((10, 1))
        >>> model = Sequential([Dense(1, input_dim=3)])
        >>> model.compile(loss="mse")
        >>> len(model.fit(Dataset(x, y), batch_size=4, epochs=2, verbose=0).history["loss"])
        2
    """

    def __init__(self, x: Any, y: Any = None, release_pages: bool = True) -> None:
        for name, array in (("x", x), ("y", y)):
            if array is not None and (not hasattr(array, "shape") or not hasattr(array, "__getitem__")):
                raise InputError(f"Dataset({name}=...) needs an array-like with .shape and row indexing "
                                 f"(a NumPy array or memmap); got {type(array).__name__}")
        if y is not None and y.shape[0] != x.shape[0]:
            raise ShapeError(f"Dataset: x has {x.shape[0]} rows but y has {y.shape[0]}")
        if x.shape[0] == 0:
            raise InputError("Dataset: x has 0 rows")
        self.x, self.y = x, y
        # NumPy memmaps keep their mapping in ``_mmap`` (np.load(..., mmap_mode="r") gives one).
        self._mappings = [m for m in (getattr(a, "_mmap", None) for a in (x, y)) if isinstance(m, mmap.mmap)]
        self.release_pages = release_pages and bool(self._mappings) and hasattr(mmap, "MADV_DONTNEED")

    @classmethod
    def from_npy(cls, x_path: str | os.PathLike, y_path: str | os.PathLike | None = None) -> Dataset:
        """A Dataset over ``.npy`` files read row by row with file I/O instead of a memory map:
        resident memory stays at the batches however the rows are shuffled (a mapped file's
        pages count as resident once read; see ``toolkit_backends.array_files``).

        Example:
            >>> import numpy as np, tempfile, os
            >>> folder = tempfile.mkdtemp()
            >>> np.save(os.path.join(folder, "x.npy"), np.arange(12.0).reshape(4, 3))
            >>> Dataset.from_npy(os.path.join(folder, "x.npy")).rows(np.array([2, 0]))[0].tolist()
            [[6.0, 7.0, 8.0], [0.0, 1.0, 2.0]]
        """
        files = registry.service("array_files")
        return cls(files.open_rows(x_path), None if y_path is None else files.open_rows(y_path))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def rows(self, rows: Any) -> tuple[Any, Any]:
        """The host arrays of ``rows`` (a slice, or host row numbers in the order wanted): copies,
        so that releasing the mapped pages cannot touch them."""
        x, y = self.x[rows], (None if self.y is None else self.y[rows])
        if self.release_pages:
            x, y = x.copy(), (None if y is None else y.copy())
            for mapping in self._mappings:
                mapping.madvise(mmap.MADV_DONTNEED)
        return x, y


def is_stream(x: Any) -> bool:
    """True for an iterable of batches: not an array, not a Dataset, not a nested list of numbers
    (a list of (x, y) tuples or dicts is a list of batches)."""
    if isinstance(x, (Dataset, str, bytes)) or hasattr(x, "shape") or hasattr(x, "__array__"):
        return False
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and isinstance(x[0], (tuple, dict))
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def stream_length(stream: Any) -> int | None:
    """Batches per pass, when the stream knows (``len``); None for generators."""
    try:
        return len(stream)
    except TypeError:
        return None


def split_batch(item: Any, with_targets: bool, where: str) -> tuple[Any, Any]:
    """``(x, y)`` of one streamed item; ``x`` alone is accepted when no targets are needed."""
    if isinstance(item, (tuple, list)) and len(item) == 2 and not hasattr(item, "shape"):
        return item[0], item[1]
    if isinstance(item, dict) and "x" in item:
        return item["x"], item.get("y")
    if with_targets:
        raise InputError(f"{where} of the stream is a {type(item).__name__}; training and evaluating need "
                         "(x, y) pairs")
    return item, None


class _Failure:
    """An exception raised while producing a batch, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class Prefetcher:
    """Items of ``source`` prepared by ``prepare`` on a background thread, ``depth`` ahead.

    The next batch is read (and copied to the device) while the current step runs. An exception
    in the producer reaches the consumer at the item where it happened; ``close`` stops the
    producer (a consumer that leaves early, on an error or early stopping, must call it)."""

    def __init__(self, source: Iterable[Any], prepare: Callable[[Any], Any], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(source), prepare), daemon=True,
                                        name="toolkit-prefetch")
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, iterator: Iterator[Any], prepare: Callable[[Any], Any]) -> None:
        try:
            for item in iterator:
                if not self._put(prepare(item)):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failure(error))
            return
        self._put(_DONE)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Immediate:
    """The same interface as ``Prefetcher`` with no thread (``prefetch=0``): each item is
    prepared when it is asked for."""

    def __init__(self, source: Iterable[Any], prepare: Callable[[Any], Any], depth: int = 0) -> None:
        self._iterator, self._prepare = iter(source), prepare

    def __iter__(self) -> Immediate:
        return self

    def __next__(self) -> Any:
        return self._prepare(next(self._iterator))

    def close(self) -> None:
        pass


def pipeline(source: Iterable[Any], prepare: Callable[[Any], Any], prefetch: int) -> Prefetcher | Immediate:
    return Prefetcher(source, prepare, prefetch) if prefetch > 0 else Immediate(source, prepare)
