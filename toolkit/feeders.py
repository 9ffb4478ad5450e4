"""The one way in for data: ``feeder_for`` turns whatever a user passes to ``fit``,
``evaluate`` or ``predict`` (arrays of any library, lists, memmaps, a ``Dataset``, generators,
DataLoaders, with or without targets, validation data) into the feeder the loops read, with every
check of the data in one place.

Each feeder yields, per epoch, ``(rows, x, y)``: the rows of the global batch (for the loss
average; the whole batch in data-parallel training) and this process's share of it, on the
model's device, validated (shape, dtype, finiteness); ``y`` is None for ``predict``. A batch that
fails a check raises the error with its index, before its step runs, so the weights stay those
from before that batch.

    ArrayFeeder     arrays in memory, moved to the device once; batches sliced there
    DatasetFeeder   a ``toolkit.data.Dataset`` (e.g. memory-mapped): the same seeded batches,
                    each read from the host and copied on a background thread
    StreamFeeder    any iterable of (x, y) batches, converted as they come
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import data
from .errors import InputError, ShapeError, ToolkitError
from .ops.random import step_key
from .validation import check_int

if TYPE_CHECKING:
    from .distributed import DataParallel
    from .trainer import Trainer

Array = Any


def _check_finite(x: Array, what: str, xp: Any) -> None:
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

    def __init__(self, model: Trainer, seed: int | None, shuffle: bool) -> None:
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


def _where(index: int, epoch: int, named_epoch: bool) -> str:
    """How an error names a batch: "batch 3 of epoch 2" in training, "batch 3" otherwise."""
    return f"batch {index + 1} of epoch {epoch + 1}" if named_epoch else f"batch {index + 1}"


class Converter:
    """Host (or foreign) batches to checked arrays of the model (run on the prefetch thread)."""

    def __init__(self, model: Trainer, finite: bool, with_targets: bool = True) -> None:
        self.model, self.finite, self.with_targets = model, finite, with_targets

    def __call__(self, where: str, x: Any, y: Any) -> tuple[Array, Array | None]:
        with self.model.backend.transfer_stream():
            return self._convert(where, x, y)

    def _convert(self, where: str, x: Any, y: Any) -> tuple[Array, Array | None]:
        model = self.model
        try:
            xb = model.as_input(x)
            if self.finite:
                _check_finite(xb, "inputs", model.backend.xp)
            if not self.with_targets:
                return xb, None
            if y is None:
                raise InputError("the batch has inputs but no targets")
            return xb, model.prepare_targets(y, xb.shape[0])  # checks the targets' shape and values
        except ToolkitError as error:
            raise _named(error, where) from error


class ArrayFeeder:
    """Arrays already on the device: the seeded permutation picks each batch's rows there."""

    def __init__(self, model: Trainer, x: Array, y: Array | None, batch_size: int, order: EpochOrder | None = None,
                 distributed: DataParallel | None = None, drop_remainder: bool = False) -> None:
        self.x, self.y, self.order, self.distributed = x, y, order, distributed
        self.backend, self.xp = model.backend, model.backend.xp
        # An empty input is one empty batch (predict answers it with an empty batch, as PyTorch).
        self.ranges = batch_ranges(x.shape[0], batch_size, drop_remainder) or [(0, 0)]
        self.steps: int | None = len(self.ranges)
        self.held_out: tuple[Array, Array] | None = None  # rows validation_split kept out of x and y

    def _rows(self, start: int, stop: int, order: Any) -> tuple[Array, Array | None]:
        """Rows start:stop of x and y, or of their rows in the epoch's order (``order``, on the host)."""
        arrays = (self.x,) if self.y is None else (self.x, self.y)
        if order is None:
            taken = tuple(array[start:stop, ...] for array in arrays)
        else:
            taken = self.backend.take_rows(arrays, order[start:stop])
        return taken[0], None if self.y is None else taken[1]

    def epoch(self, epoch: int) -> Iterator[tuple[int, Array, Array]]:
        for _, rows, xb, yb in self.groups(epoch, 1):
            yield rows, xb, yb

    def groups(self, epoch: int, size: int) -> Iterator[tuple[int, int, Array, Array]]:
        """The epoch as (batches, rows per batch, x, y) for ``compile(steps_per_execution=size)``: each
        ``size`` consecutive batches of one size taken at once (one ``take`` of their rows, then x, y
        reshaped to (size, rows, …)), other batches one by one (1, rows, x, y)."""
        # The epoch's order on the host: a batch's slice of it costs nothing there (on JAX, slicing a device
        # array was a dispatch per batch).
        drawn = None if self.order is None else self.order(self.x.shape[0])
        order = None if drawn is None else self.backend.to_host(drawn)
        index = 0
        while index < len(self.ranges):
            run = self.ranges[index:index + size]
            start, stop = run[0]
            rows = stop - start
            count = size if len(run) == size and all(b - a == rows for a, b in run) else 1
            stop = run[count - 1][1]
            xb, yb = self._rows(start, stop, order)
            if count > 1:
                assert yb is not None and self.distributed is None  # fit alone groups, with targets
                xb = self.xp.reshape(xb, (count, rows, *xb.shape[1:]))
                yb = self.xp.reshape(yb, (count, rows, *yb.shape[1:]))
            elif self.distributed is not None:
                xb, yb = self.distributed.local_batch(xb, yb)
            yield count, rows, xb, yb
            index += count

    def close(self) -> None:
        pass


def stacked_groups(batches: Iterable[tuple[int, Array, Array]], size: int,
                   xp: Any) -> Iterator[tuple[int, int, Array, Array]]:
    """``groups`` of a feeder that reads batch by batch: each ``size`` consecutive batches of one shape
    stacked (x, y of shape (size, rows, …)), other batches one by one; as (batches, rows per batch, x, y)."""
    pending: list[tuple[int, Array, Array]] = []
    for item in batches:
        _, x, y = item
        if pending and (x.shape != pending[0][1].shape or y.shape != pending[0][2].shape):
            yield from ((1, *batch) for batch in pending)
            pending = []
        pending.append(item)
        if len(pending) == size:
            if size == 1:
                yield 1, *item
            else:
                yield size, item[0], xp.stack([b[1] for b in pending]), xp.stack([b[2] for b in pending])
            pending = []
    yield from ((1, *batch) for batch in pending)


class DatasetFeeder:
    """A ``Dataset`` read batch by batch with the same permutation ``ArrayFeeder`` draws, so a run
    on disk equals the run in memory; in data-parallel training each process reads only its rows."""

    def __init__(self, model: Trainer, dataset: data.Dataset, batch_size: int, order: EpochOrder | None,
                 distributed: DataParallel | None, finite: bool, prefetch: int, drop_remainder: bool = False,
                 with_targets: bool = True) -> None:
        self.model, self.dataset, self.order = model, dataset, order
        self.distributed, self.prefetch = distributed, prefetch
        self.convert = Converter(model, finite, with_targets)
        self.named_epochs = order is not None
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
            yield _where(index, epoch, self.named_epochs), stop - start, rows

    def _read(self, item: tuple[str, int, Any]) -> tuple[int, Array, Array]:
        where, count, rows = item
        x, y = self.dataset.rows(rows)
        xb, yb = self.convert(where, x, y)
        return count, xb, yb

    def epoch(self, epoch: int) -> Iterator[tuple[int, Array, Array]]:
        order = None if self.order is None else self.order(len(self.dataset))  # fit(x, y)'s permutation
        if order is not None:  # on the host, for indexing the rows
            order = self.model.backend.to_host(order)
        self._pipeline = data.pipeline(self._reads(epoch, order), self._read, self.prefetch)
        yield from self._pipeline

    def groups(self, epoch: int, size: int) -> Iterator[tuple[int, int, Array, Array]]:
        return stacked_groups(self.epoch(epoch), size, self.model.backend.xp)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()


class StreamFeeder:
    """An iterable of ``(x, y)`` batches. Without ``steps_per_epoch`` an epoch is one pass over
    it (a generator can be read once); with it, epochs take that many batches from one running
    iterator, started again when a re-iterable source (a DataLoader, a list) runs out. In
    data-parallel training process r takes batches r, r + N, r + 2N, … of each epoch."""

    def __init__(self, model: Trainer, stream: Any, steps_per_epoch: int | None,
                 distributed: DataParallel | None, finite: bool, prefetch: int, training: bool = True,
                 with_targets: bool = True) -> None:
        self.stream, self.steps_per_epoch, self.distributed, self.prefetch = stream, steps_per_epoch, distributed, prefetch
        self.training, self.with_targets = training, with_targets
        self.xp = model.backend.xp
        # Warnings name the user's line: under Trainer.fit, training.fit and ``groups`` (or, outside fit,
        # under the Trainer's method and its function in training.py).
        self._caller_level = 5 if training else 4
        self.convert = Converter(model, finite, with_targets)
        self.reiterable = not isinstance(stream, Iterator)  # without calling iter(): a DataLoader would start its workers
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
            yield _where(index, epoch, self.training), item
            index += 1

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
        x, y = data.split_batch(batch, self.with_targets, where)
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
                          "or fewer epochs × steps_per_epoch)", RuntimeWarning, stacklevel=self._caller_level)
        if produced == 0 and self.training:  # evaluate and predict say it in their own words
            if epoch > 0 and self.steps_per_epoch is not None and self.ran_out:
                self.exhausted = True
                warnings.warn(f"the data stream ran out after epoch {epoch}; training stopped (give a re-iterable "
                              "source, or fewer epochs × steps_per_epoch)", RuntimeWarning, stacklevel=self._caller_level)
                return
            if epoch > 0 and not self.reiterable:
                raise InputError(f"the data stream yielded no batches in epoch {epoch + 1}: a generator can be read "
                                 "once; give steps_per_epoch to spread it over epochs, or a re-iterable source "
                                 "(a DataLoader, a list, a toolkit.data.Dataset)")
            raise InputError(f"the data stream yielded no batches in epoch {epoch + 1}")

    def groups(self, epoch: int, size: int) -> Iterator[tuple[int, int, Array, Array]]:
        return stacked_groups(self.epoch(epoch), size, self.xp)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()


Feeder = ArrayFeeder | DatasetFeeder | StreamFeeder
PURPOSES = ("fit", "validation_data", "evaluate", "predict")


def feeder_for(model: Trainer, x: Any, y: Any = None, *, purpose: str, batch_size: int | None = None,
               epochs: int = 1, shuffle: bool = False, seed: int | None = None, steps_per_epoch: int | None = None,
               prefetch: int = 0, check_finite: bool = False, drop_remainder: bool = False,
               distributed: DataParallel | None = None, validation_split: float = 0.0,
               sample_weight: Any = None, class_weight: dict[int, float] | None = None) -> Feeder:
    """The feeder of ``fit``, ``evaluate``, ``predict`` or ``fit``'s validation data (``purpose``)
    for whatever the user passed: arrays of any library (moved to the device once, checked once),
    a ``toolkit.data.Dataset`` (read batch by batch) or any iterable of batches (converted as they
    come). Every check of the data happens here, before a step runs; ``fit`` only trains on
    shuffled orders (``EpochOrder``). With ``validation_split`` the held-out arrays are the
    returned feeder's ``held_out``: pass them back here as ``"validation_data"``.

    ``batch_size`` None (evaluate, predict): arrays in one batch, a Dataset whole."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}; got {purpose!r}")
    training, with_targets = purpose == "fit", purpose != "predict"
    streamed = isinstance(x, data.Dataset) or data.is_stream(x)
    if streamed and y is not None:
        raise InputError(f"a {type(x).__name__} brings its own targets: pass it alone, without y")
    if streamed and (sample_weight is not None or class_weight is not None):
        raise InputError("sample_weight and class_weight need arrays (x, y) in memory; for a Dataset or a stream, "
                         "load the arrays, or weight the samples when you build the batches")
    if streamed and validation_split:
        raise InputError("validation_split needs arrays in memory; give validation_data for a Dataset or a stream")
    if steps_per_epoch is not None and not data.is_stream(x):
        raise InputError("steps_per_epoch applies to streams of batches; arrays and Datasets take every row each epoch")
    if purpose == "validation_data" and epochs > 1 and isinstance(x, Iterator):
        raise InputError(
            f"validation_data is a {type(x).__name__}, which can be read once, but fit runs {epochs} epochs and "
            "validates after each; give a re-iterable source (a list of batches, a DataLoader, a "
            "toolkit.data.Dataset, or arrays (x_val, y_val))")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    order = EpochOrder(model, seed, shuffle) if training else None
    if training and distributed is not None:
        distributed.prepare(model)
    feeder: Feeder
    if isinstance(x, data.Dataset):
        feeder = DatasetFeeder(model, x, len(x) if batch_size is None else batch_size, order,
                               distributed if training else None, check_finite, prefetch if training else 0,
                               drop_remainder, with_targets)
    elif streamed:
        feeder = StreamFeeder(model, x, steps_per_epoch, distributed if training else None, check_finite,
                              prefetch if training else 0, training, with_targets)
    else:
        prepared = isinstance(x, HeldOut)  # validation_split's rows: checked and converted already
        if purpose == "validation_data" and isinstance(x, (tuple, list)) and len(x) == 2:  # (x_val, y_val)
            x, y = x
        if not prepared:
            x = model.as_input(x, allow_empty=purpose == "predict")
            if check_finite:
                _check_finite(x, "inputs", model.backend.xp)
            y = model.prepare_targets(y, x.shape[0]) if with_targets else None
        if sample_weight is not None or class_weight is not None:
            y = _weighted(model, y, sample_weight, class_weight)
        held_out = None
        if validation_split:
            x, y, held_out = _split(x, y, validation_split)
            _warn_if_unseen_classes(model, y, held_out[1], validation_split)
        feeder = ArrayFeeder(model, x, y, max(x.shape[0], 1) if batch_size is None else batch_size, order,
                             distributed if training else None, drop_remainder)
        feeder.held_out = held_out
    if training and not data.is_stream(x):
        rows = len(x) if isinstance(x, data.Dataset) else x.shape[0]
        assert batch_size is not None  # fit always has one
        _check_last_batch(model, rows, batch_size, drop_remainder)
        if distributed is not None:
            distributed.check_batch_size(batch_size)
            distributed.check_batches(model, rows, batch_size)
    return feeder


def _weighted(model: Trainer, y: Array, sample_weight: Any, class_weight: dict[int, float] | None) -> Array:
    """Prepared targets carrying ``sample_weight`` (one weight per sample, or per position of a
    sequence) times ``class_weight`` (a weight per class, 1 for classes it leaves out), Keras' meanings:
    the loss becomes (1/N) Σᵢ wᵢ lᵢ (``toolkit.losses.Loss.weight_targets``)."""
    backend, xp = model.backend, model.backend.xp
    loss = model._compiled_loss()
    weights = xp.ones(y.shape[:-1], dtype=y.dtype, device=backend.device)
    loss.weight_targets(y, weights, xp)  # a loss that cannot carry weights says so first
    if sample_weight is not None:
        given = backend.asarray(sample_weight)
        if not xp.isdtype(given.dtype, ("real floating", "integral")):
            raise InputError(f"sample_weight must hold numbers; got dtype {given.dtype}")
        given = xp.astype(given, y.dtype)
        if given.ndim == 2 and given.shape[1] == 1 and y.ndim == 2:
            given = xp.reshape(given, (given.shape[0],))
        if tuple(given.shape) != tuple(y.shape[:given.ndim]) or given.ndim > y.ndim - 1 or given.ndim == 0:
            raise ShapeError(f"sample_weight has shape {tuple(given.shape)}; give one weight per sample, shape "
                             f"({y.shape[0]},)" + (f", or one per position, shape {tuple(y.shape[:-1])}" if y.ndim > 2 else ""))
        _check_weights("sample_weight", given, xp)
        weights = weights * xp.reshape(given, (*given.shape, *(1,) * (y.ndim - 1 - given.ndim)))
    if class_weight is not None:
        n_classes = max(y.shape[-1], 2)  # one sigmoid output: classes 0 and 1
        if not isinstance(class_weight, dict):
            raise InputError(f"class_weight must be a dict {{class label: weight}}; got {type(class_weight).__name__}")
        table = [1.0] * n_classes
        for label, weight in class_weight.items():
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < n_classes:
                raise InputError(f"class_weight has the key {label!r}, which is not a class label of this model "
                                 f"(integers 0 to {n_classes - 1})")
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise InputError(f"class_weight[{label}] = {weight!r}; weights must be finite numbers ≥ 0")
            table[label] = float(weight)
        per_class = backend.asarray(table, dtype=y.dtype)
        labels = _class_labels(y, xp)
        weights = weights * xp.reshape(xp.take(per_class, xp.reshape(labels, (-1,)), axis=0), labels.shape)
    return loss.weight_targets(y, weights, xp)


def _class_labels(y: Array, xp: Any) -> Array:
    """The class of each target: its argmax, or for one yes/no output whether it is ≥ 0.5."""
    return xp.argmax(y, axis=-1) if y.shape[-1] > 1 else xp.astype(y[..., 0] >= 0.5, xp.int64)


def _check_weights(what: str, weights: Array, xp: Any) -> None:
    if not bool(xp.all(xp.isfinite(weights))) or bool(xp.any(weights < 0)):
        raise InputError(f"{what} must hold finite numbers ≥ 0")


def _warn_if_unseen_classes(model: Trainer, y_train: Array, y_held_out: Array, fraction: float) -> None:
    """validation_split takes the last rows: on data sorted by class they hold classes that training never
    sees, and the validation accuracy is meaningless. Say so (classification losses only)."""
    if getattr(model.loss, "name", "") not in CLASSIFICATION_LOSSES or y_train.ndim < 2:
        return
    xp, width = model.backend.xp, model.output_shape[-1]

    def classes(y: Array) -> set[int]:
        return {int(c) for c in model.backend.to_host(_class_labels(y[..., :width], xp)).ravel()}  # no weights

    unseen = sorted(classes(y_held_out) - classes(y_train))
    if unseen:
        warnings.warn(
            f"validation_split={fraction} holds out the last rows, and they contain classes {unseen} that no training "
            "row has (is the data sorted by class?); the validation scores will be misleading. Shuffle the arrays "
            "once before fit (e.g. rows = np.random.default_rng(0).permutation(len(x)); x, y = x[rows], y[rows]), "
            "or pass validation_data", UserWarning, stacklevel=4)


CLASSIFICATION_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")


class HeldOut(tuple):
    """``(x, y)`` rows that ``validation_split`` held out: device arrays already checked, with prepared
    (one-hot, weighted) targets, which ``feeder_for`` takes as they are."""


def _split(x: Array, y: Array, fraction: float) -> tuple[Array, Array, HeldOut]:
    """(x, y) without their last ``fraction`` of rows, and those rows (Keras' validation_split)."""
    n_val = int(round(x.shape[0] * fraction))
    if n_val < 1 or n_val >= x.shape[0]:
        raise InputError(f"validation_split={fraction} leaves {n_val} of {x.shape[0]} samples for validation")
    return x[:-n_val, ...], y[:-n_val, ...], HeldOut((x[-n_val:, ...], y[-n_val:, ...]))


def _check_last_batch(model: Trainer, rows: int, batch_size: int, drop_remainder: bool) -> None:
    """Refuse, before any step, a last batch of one row where a layer needs batch statistics."""
    if drop_remainder or rows % batch_size != 1 or rows == 1:
        return
    needs_batch = [layer.describe() for layer in model.synchronized_layers] if model.built else []
    if needs_batch:
        raise InputError(
            f"{rows} rows in batches of {batch_size} leave a last batch (number {rows // batch_size + 1}) of one row, "
            f"and {needs_batch[0]} cannot compute batch statistics from one row; pass drop_remainder=True to "
            f"fit, or choose another batch_size (e.g. {batch_size + 1})")
