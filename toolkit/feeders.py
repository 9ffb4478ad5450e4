"""What ``fit`` iterates: per epoch, the batches of one kind of data as checked device arrays.

Each feeder yields ``(rows, x, y)``: the rows of the global batch (for the loss average; the
whole batch in data-parallel training) and this process's share of it, on the model's device,
validated (shape, dtype, finiteness). A batch that fails a check raises the error with its
index, before its step runs, so the weights stay those from before that batch.

    ArrayFeeder     arrays in memory, moved to the device once; batches sliced there
    DatasetFeeder   a ``toolkit.data.Dataset`` (e.g. memory-mapped): the same seeded batches,
                    each read from the host and copied on a background thread
    StreamFeeder    any iterable of (x, y) batches, converted as they come
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import data
from .errors import InputError, ToolkitError
from .ops.random import step_key

if TYPE_CHECKING:
    from .distributed import DataParallel
    from .model import Sequential

Array = Any


def check_finite(x: Array, what: str, xp: Any) -> None:
    finite = xp.isfinite(x)
    if not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(~finite, xp.int64)))
        raise InputError(f"{what} contain {bad} NaN or inf value(s); clean the data or pass check_finite=False")


def batch_ranges(n: int, batch_size: int, drop_remainder: bool = False) -> list[tuple[int, int]]:
    """(start, stop) of each batch of ``n`` rows; ``drop_remainder`` leaves out a last, shorter one."""
    last = n - n % batch_size if drop_remainder else n
    return [(start, min(start + batch_size, n)) for start in range(0, last, batch_size)]


class EpochOrder:
    """The rows' order in each epoch of ``fit``: a permutation drawn from (seed, epoch number),
    the epoch counted over the model's life (``epochs_completed``, kept in checkpoints), so a run
    resumed from a checkpoint shuffles as the uninterrupted run did, on every backend."""

    def __init__(self, model: Sequential, seed: int | None, shuffle: bool) -> None:
        self.model, self.shuffle = model, shuffle
        self.seed = model.random_seed if seed is None else seed

    def __call__(self, n: int) -> Array | None:
        if not self.shuffle:
            return None
        return self.model.backend.random(step_key(self.seed, self.model.epochs_completed)).permutation(n)


def _named(error: ToolkitError, where: str) -> ToolkitError:
    """The same kind of error, its message prefixed with the batch it came from."""
    renamed = type(error)(f"{where}: {error}")
    renamed.__cause__ = error
    return renamed


class Converter:
    """Host (or foreign) batches to checked arrays of the model (run on the prefetch thread)."""

    def __init__(self, model: Sequential, finite: bool, with_targets: bool = True) -> None:
        self.model, self.finite, self.with_targets = model, finite, with_targets

    def __call__(self, where: str, x: Any, y: Any) -> tuple[Array, Array | None]:
        with self.model.backend.transfer_stream():
            return self._convert(where, x, y)

    def _convert(self, where: str, x: Any, y: Any) -> tuple[Array, Array | None]:
        model = self.model
        try:
            xb = model.as_input(x)
            if self.finite:
                check_finite(xb, "inputs", model.backend.xp)
            if not self.with_targets:
                return xb, None
            if y is None:
                raise InputError("the batch has inputs but no targets")
            return xb, model.prepare_targets(y, xb.shape[0])  # checks the targets' shape and values
        except ToolkitError as error:
            raise _named(error, where) from error


class ArrayFeeder:
    """Arrays already on the device: the seeded permutation picks each batch's rows there."""

    def __init__(self, model: Sequential, x: Array, y: Array, batch_size: int, order: EpochOrder,
                 distributed: DataParallel | None, drop_remainder: bool = False) -> None:
        self.x, self.y, self.order, self.distributed = x, y, order, distributed
        self.xp = model.backend.xp
        self.ranges = batch_ranges(x.shape[0], batch_size, drop_remainder)
        self.steps: int | None = len(self.ranges)

    def epoch(self, epoch: int) -> Iterator[tuple[int, Array, Array]]:
        order = self.order(self.x.shape[0])
        for start, stop in self.ranges:
            if order is None:
                xb, yb = self.x[start:stop, ...], self.y[start:stop, ...]
            else:
                rows = order[start:stop]
                xb, yb = self.xp.take(self.x, rows, axis=0), self.xp.take(self.y, rows, axis=0)
            if self.distributed is not None:
                xb, yb = self.distributed.local_batch(xb, yb)
            yield stop - start, xb, yb

    def close(self) -> None:
        pass


class DatasetFeeder:
    """A ``Dataset`` read batch by batch with the same permutation ``ArrayFeeder`` draws, so a run
    on disk equals the run in memory; in data-parallel training each process reads only its rows."""

    def __init__(self, model: Sequential, dataset: data.Dataset, batch_size: int, order: EpochOrder,
                 distributed: DataParallel | None, finite: bool, prefetch: int, drop_remainder: bool = False) -> None:
        self.model, self.dataset, self.order = model, dataset, order
        self.distributed, self.prefetch = distributed, prefetch
        self.convert = Converter(model, finite)
        self.ranges = batch_ranges(len(dataset), batch_size, drop_remainder)
        self.steps: int | None = len(self.ranges)
        self._pipeline: Any = None
        if not model.built:  # build on this thread, from the first row
            model.as_input(dataset.rows(slice(0, 1))[0])

    def _reads(self, epoch: int, order: Any) -> Iterator[tuple[str, int, Any]]:
        for index, (start, stop) in enumerate(self.ranges):
            rows: Any = slice(start, stop) if order is None else order[start:stop]
            if self.distributed is not None:
                rows = self.distributed.local_rows(rows, stop - start)
            yield f"batch {index + 1} of epoch {epoch + 1}", stop - start, rows

    def _read(self, item: tuple[str, int, Any]) -> tuple[int, Array, Array]:
        where, count, rows = item
        x, y = self.dataset.rows(rows)
        xb, yb = self.convert(where, x, y)
        return count, xb, yb

    def epoch(self, epoch: int) -> Iterator[tuple[int, Array, Array]]:
        order = self.order(len(self.dataset))  # the permutation fit(x, y) draws, on the host for indexing the rows
        if order is not None:
            order = self.model.backend.to_host(order)
        self._pipeline = data.pipeline(self._reads(epoch, order), self._read, self.prefetch)
        yield from self._pipeline

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()


class StreamFeeder:
    """An iterable of ``(x, y)`` batches. Without ``steps_per_epoch`` an epoch is one pass over
    it (a generator can be read once); with it, epochs take that many batches from one running
    iterator, started again when a re-iterable source (a DataLoader, a list) runs out. In
    data-parallel training process r takes batches r, r + N, r + 2N, … of each epoch."""

    def __init__(self, model: Sequential, stream: Any, steps_per_epoch: int | None,
                 distributed: DataParallel | None, finite: bool, prefetch: int) -> None:
        self.stream, self.steps_per_epoch, self.distributed, self.prefetch = stream, steps_per_epoch, distributed, prefetch
        self.convert = Converter(model, finite)
        self.reiterable = iter(stream) is not stream
        length = data.stream_length(stream)
        self.steps = steps_per_epoch if steps_per_epoch is not None else length
        if distributed is not None:
            if self.steps is None:
                raise InputError("data-parallel training on a stream needs its length: give steps_per_epoch, or a "
                                 "stream with len() (a DataLoader, a list), or a toolkit.data.Dataset")
            self.steps //= distributed.size
            if self.steps == 0:
                raise InputError(f"the stream has fewer batches per epoch than the {distributed.size} ranks")
        self._running: Iterator[Any] | None = None
        self._pipeline: Any = None
        self.ran_out = False
        self.exhausted = False  # the source ran out: fit stops after this epoch

    def _items(self, epoch: int) -> Iterator[Any]:
        if self.steps_per_epoch is None:
            items: Iterator[Any] = iter(self.stream)
        else:
            items = self._endless()
        if self.distributed is not None:  # this rank's batches: r, r + N, ...; the others are skipped
            size, rank = self.distributed.size, self.distributed.rank
            assert self.steps is not None  # checked in __init__: data-parallel streams have a length
            items = itertools.islice(items, rank, self.steps * size, size)
        elif self.steps_per_epoch is not None:
            items = itertools.islice(items, self.steps_per_epoch)
        index = 0
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as error:
                error.add_note(f"raised by the data stream while producing batch {index + 1} of epoch {epoch + 1}; "
                               "the model keeps the weights from before that batch")
                raise
            index += 1
            yield f"batch {index} of epoch {epoch + 1}", item

    def _endless(self) -> Iterator[Any]:
        while True:
            if self._running is None:
                self._running = iter(self.stream)
            # Not ``yield from``: closing this generator (an epoch's islice ends) must not close the
            # user's iterator, which the next epoch continues.
            for item in self._running:  # noqa: UP028
                yield item
            self._running = None
            if not self.reiterable:
                self.ran_out = True
                return

    def _convert(self, item: tuple[str, Any]) -> tuple[int, Array, Array]:
        where, batch = item
        x, y = data.split_batch(batch, True, where)
        xb, yb = self.convert(where, x, y)
        count = xb.shape[0] if self.distributed is None else self.distributed.strided_rows(xb.shape[0])
        return count, xb, yb

    def epoch(self, epoch: int) -> Iterator[tuple[int, Array, Array]]:
        self._pipeline = data.pipeline(self._items(epoch), self._convert, self.prefetch)
        produced = 0
        for item in self._pipeline:
            produced += 1
            yield item
        if self.ran_out and self.steps is not None and 0 < produced < self.steps:
            self.exhausted = True
            warnings.warn(f"the data stream ran out part-way through epoch {epoch + 1}: {produced} of its "
                          f"{self.steps} steps ran; training stops after this epoch (give a re-iterable source, "
                          "or fewer epochs × steps_per_epoch)", RuntimeWarning, stacklevel=3)
        if produced == 0:
            if epoch > 0 and self.steps_per_epoch is not None and self.ran_out:
                self.exhausted = True
                warnings.warn(f"the data stream ran out after epoch {epoch}; training stopped (give a re-iterable "
                              "source, or fewer epochs × steps_per_epoch)", RuntimeWarning, stacklevel=3)
                return
            if epoch > 0 and not self.reiterable:
                raise InputError(f"the data stream yielded no batches in epoch {epoch + 1}: a generator can be read "
                                 "once; give steps_per_epoch to spread it over epochs, or a re-iterable source "
                                 "(a DataLoader, a list, a toolkit.data.Dataset)")
            raise InputError(f"the data stream yielded no batches in epoch {epoch + 1}")

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
