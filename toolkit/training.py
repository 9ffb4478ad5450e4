"""``fit``, ``evaluate`` and ``predict``: mini-batch gradient descent over epochs.

Arrays are moved to the model's device once; each epoch draws one seeded permutation (on the
host, so every backend sees the same batches) and slices batches from it. A ``toolkit.data.Dataset``
(memory-mapped arrays) is read batch by batch with the same permutation, and any iterable of
batches is converted as it comes; both are read ahead on a background thread
(``toolkit.feeders``, ``toolkit.data``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import data, feeders
from .callbacks import Callback, LearningRateScheduler, TerminateOnNaN
from .errors import InputError, TrainingDiverged
from .metrics import Metric
from .progress import Progress
from .validation import check_int, check_real, check_seed

if TYPE_CHECKING:
    from .distributed import DataParallel
    from .model import Sequential

Array = Any


@dataclass
class History:
    """Per-epoch logs, as Keras' ``History``: ``history["loss"]``, ``history["val_accuracy"]``…"""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]


def _fresh_metrics(model: Sequential) -> list[Metric]:
    """This call's own copies of the compiled metrics (zero totals), told whether the model outputs
    logits (threshold 0, not 0.5). The model's metric objects are templates and never change."""
    from_logits = getattr(model.loss, "from_logits", False)
    return [metric.fresh(from_logits) for metric in model.metrics]


def fit(
    model: Sequential,
    x: Any,
    y: Any = None,
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: Any = None,
    validation_split: float = 0.0,
    callbacks: Sequence[Callback] = (),
    verbose: int = 1,
    check_finite: bool = True,
    seed: int | None = None,
    distributed: DataParallel | None = None,
    steps_per_epoch: int | None = None,
    prefetch: int = 2,
    drop_remainder: bool = False,
) -> History:
    """Train ``model`` with mini-batch gradient descent.

    Args:
        x, y: inputs (N, …) and targets, host (NumPy) or backend arrays; or ``x`` alone as a
            ``toolkit.data.Dataset`` (e.g. memory-mapped arrays, read batch by batch) or any
            iterable of ``(x, y)`` batches (a generator, a PyTorch ``DataLoader``).
        epochs: passes over the data (0 trains nothing).
        batch_size: samples per gradient step (the global batch when distributed); a stream
            brings its own batches.
        shuffle: draw a new seeded order of the samples every epoch (arrays and Datasets); the
            order of an epoch depends on the seed and on how many epochs the model has trained
            (kept in checkpoints), so a resumed run shuffles as the uninterrupted one.
        validation_data: ``(x_val, y_val)``, a Dataset or a stream, evaluated after each epoch.
        validation_split: fraction of the data, taken from the end before shuffling, held out (arrays).
        callbacks: ``EarlyStopping``, ``ModelCheckpoint``, ``LearningRateScheduler``…
        verbose: 0 silent, 1 progress bar (one line per epoch off a terminal), 2 one line per epoch.
        check_finite: refuse NaN/inf in the data, and stop on a NaN/inf loss keeping the weights
            from before that step (raises ``TrainingDiverged`` unless ``TerminateOnNaN`` is given).
        seed: seed of the shuffling; defaults to the model's seed.
        distributed: a ``toolkit.distributed.DataParallel`` to train on several processes.
        steps_per_epoch: batches per epoch taken from a stream (Keras' meaning): for endless
            generators, or to cut epochs shorter than one pass.
        prefetch: batches of a Dataset or stream read and copied ahead on a background thread
            while the current step runs (0: read each when it is needed).
        drop_remainder: leave out each epoch's last, shorter batch (arrays and Datasets); a
            last batch of one row is refused up front where BatchNorm needs batch statistics.

    Returns:
        A ``History`` with per-epoch ``loss``, metrics, and ``val_*`` entries.
    """
    if model.loss is None or model.optimizer is None:
        raise RuntimeError("call model.compile(loss=..., optimizer=...) before fit()")
    epochs = check_int("epochs", epochs, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    try:
        validation_split = check_real("validation_split", validation_split, 0.0, 1.0, high_open=True)
    except InputError:
        raise InputError(f"validation_split must lie in [0, 1); got {validation_split!r}") from None
    seed = check_seed(seed)
    steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch, 1)
    prefetch = check_int("prefetch", prefetch, 0)
    backend, xp = model.backend, model.backend.xp
    streamed = isinstance(x, data.Dataset) or data.is_stream(x)
    if streamed and y is not None:
        raise InputError(f"a {type(x).__name__} brings its own targets: call fit(data), not fit(data, y)")
    if streamed and validation_split:
        raise InputError("validation_split needs arrays in memory; give validation_data for a Dataset or a stream")
    if steps_per_epoch is not None and not data.is_stream(x):
        raise InputError("steps_per_epoch applies to streams of batches; arrays and Datasets take every row each epoch")
    if distributed is not None:
        distributed.prepare(model)
    order = feeders.EpochOrder(model, seed, shuffle)

    feeder: Any
    if isinstance(x, data.Dataset):
        feeder = feeders.DatasetFeeder(model, x, batch_size, order, distributed, check_finite, prefetch, drop_remainder)
    elif streamed:
        feeder = feeders.StreamFeeder(model, x, steps_per_epoch, distributed, check_finite, prefetch)
    else:
        x = model.as_input(x)
        if check_finite:
            feeders.check_finite(x, "inputs", xp)
        y = model.prepare_targets(y, x.shape[0])
        if validation_split:
            n_val = int(round(x.shape[0] * validation_split))
            if n_val < 1 or n_val >= x.shape[0]:
                raise InputError(f"validation_split={validation_split} leaves {n_val} of {x.shape[0]} samples for "
                                 "validation")
            validation_data = (x[-n_val:, ...], y[-n_val:, ...])
            x, y = x[:-n_val, ...], y[:-n_val, ...]
        feeder = feeders.ArrayFeeder(model, x, y, batch_size, order, distributed, drop_remainder)
    if not data.is_stream(x):
        rows = len(x) if isinstance(x, data.Dataset) else x.shape[0]
        _check_last_batch(model, rows, batch_size, drop_remainder)
        if distributed is not None:
            distributed.check_batch_size(batch_size)
            distributed.check_batches(model, rows, batch_size)
    validation = _validation_set(model, validation_data, epochs)

    callbacks = list(callbacks)
    quiet_nan = any(isinstance(c, TerminateOnNaN) for c in callbacks)
    main = distributed is None or distributed.is_main
    progress = Progress(verbose if main else 0, epochs, feeder.steps)
    history = History()
    model.history = history
    log_keys = ["loss", *(m.name for m in model.metrics)]
    if validation is not None:
        log_keys += [f"val_{key}" for key in log_keys]
    if any(isinstance(callback, LearningRateScheduler) for callback in callbacks):
        log_keys.append("lr")
    for callback in callbacks:
        callback.set_model(model)
        callback.set_params({"epochs": epochs, "steps": feeder.steps, "log_keys": log_keys})
    for callback in callbacks:
        callback.on_train_begin()
    model.stop_training = False
    logs: dict[str, float] = {}
    try:
        for epoch in range(epochs):
            started = time.perf_counter()
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            metrics = _fresh_metrics(model)
            loss_sum = xp.zeros((), dtype=model.dtype, device=backend.device)
            seen = 0
            progress.epoch_begin(epoch)
            for batch, (rows, xb, yb) in enumerate(feeder.epoch(epoch)):
                if distributed is None:
                    loss, prediction, commit = model._train_batch(xb, yb)
                else:  # this rank's share of the global batch, then one all-reduce of gradients and loss
                    loss, prediction, commit = distributed.train_batch(model, xb, yb, rows)
                if check_finite and not math.isfinite(float(loss)):
                    message = (
                        f"loss became {float(loss)} at epoch {epoch + 1}, batch {batch + 1}; training stopped and "
                        "the weights from before this step are kept (lower the learning rate or check the data)"
                    )
                    if not quiet_nan:
                        raise TrainingDiverged(message)
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                    model.stop_training = True
                    break
                commit()
                loss_sum = loss_sum + loss * rows
                seen += rows
                if metrics and xb.shape[0]:
                    for metric in metrics:
                        metric.update(prediction, yb, xp)
                progress.batch_end(lambda total=loss_sum, count=seen: float(total) / count)
            if seen == 0:  # diverged at once, or a stream that ran out
                break
            if not model.stop_training:  # a whole epoch: the next one draws the next permutation
                model.epochs_completed += 1
            logs = {"loss": float(loss_sum) / seen}
            if distributed is not None:
                distributed.reduce_metrics(metrics)
            for metric in metrics:
                logs[metric.name] = metric.result()
            if validation is not None:
                logs.update({f"val_{k}": v for k, v in _validate(model, validation, batch_size, epoch, history).items()})
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            history.append(epoch, logs)
            progress.epoch_end(epoch, logs, time.perf_counter() - started)
            if model.stop_training or getattr(feeder, "exhausted", False):
                break
    finally:
        feeder.close()
        progress.close()
    for callback in callbacks:
        callback.on_train_end(logs)
    return history


def _check_last_batch(model: Sequential, rows: int, batch_size: int, drop_remainder: bool) -> None:
    """Refuse, before any step, a last batch of one row where a layer needs batch statistics."""
    if drop_remainder or rows % batch_size != 1 or rows == 1:
        return
    needs_batch = [layer.describe() for layer in model.synchronized_layers] if model.built else []
    if needs_batch:
        raise InputError(
            f"{rows} rows in batches of {batch_size} leave a last batch (number {rows // batch_size + 1}) of one row, "
            f"and {needs_batch[0]} cannot compute batch statistics from one row; pass drop_remainder=True to "
            f"fit, or choose another batch_size (e.g. {batch_size + 1})")


def _validation_set(model: Sequential, validation_data: Any, epochs: int) -> Any:
    """Validation data checked once, before the first epoch: prepared arrays, or a Dataset or a stream."""
    if validation_data is None:
        return None
    if isinstance(validation_data, data.Dataset) or data.is_stream(validation_data):
        if epochs > 1 and isinstance(validation_data, Iterator):
            raise InputError(
                f"validation_data is a {type(validation_data).__name__}, which can be read once, but fit runs "
                f"{epochs} epochs and validates after each; give a re-iterable source (a list of batches, a "
                "DataLoader, a toolkit.data.Dataset, or arrays (x_val, y_val))")
        return validation_data
    x_val, y_val = validation_data
    x_val = model.as_input(x_val)
    return x_val, model.prepare_targets(y_val, x_val.shape[0])


def _validate(model: Sequential, validation: Any, batch_size: int, epoch: int, history: History) -> dict[str, float]:
    """The validation loss and metrics after ``epoch``; a source that fails says it is the
    validation data, and the error carries the ``History`` of the epochs finished so far."""
    try:
        return _evaluate_batches(model, _validation_batches(model, validation, batch_size))
    except InputError as error:
        raised = InputError(f"validation_data after epoch {epoch + 1}: {error}; give a re-iterable source (a list "
                            "of batches, a DataLoader, a toolkit.data.Dataset, or arrays); the weights trained so "
                            "far are kept, and the finished epochs' logs are in model.history")
        raised.history = history  # type: ignore[attr-defined]
        raise raised from error


def _validation_batches(model: Sequential, validation: Any, batch_size: int) -> Iterator[tuple[Array, Array | None]]:
    """One epoch's validation batches: prepared arrays are sliced as they are (checked once, in
    ``_validation_set``); a Dataset or a stream is read and checked as it comes."""
    if isinstance(validation, tuple):
        x_val, y_val = validation
        return _array_batches(x_val, y_val, batch_size)
    return _inference_batches(model, validation, None, batch_size, with_targets=True)


def _array_batches(x: Array, y: Array | None, size: int) -> Iterator[tuple[Array, Array | None]]:
    for start, stop in feeders.batch_ranges(x.shape[0], size):
        yield x[start:stop, ...], (None if y is None else y[start:stop, ...])


def _inference_batches(model: Sequential, x: Any, y: Any, batch_size: int | None,
                       with_targets: bool) -> Iterator[tuple[Array, Array | None]]:
    """(x, y) batches of any kind of data, checked, in order (no shuffling)."""
    if isinstance(x, data.Dataset) or data.is_stream(x):
        if y is not None:
            raise InputError(f"a {type(x).__name__} brings its own targets: pass it alone")
        convert = feeders.Converter(model, False, with_targets)
        if isinstance(x, data.Dataset):
            size = len(x) if batch_size is None else check_int("batch_size", batch_size, 1)
            items: Any = (x.rows(slice(start, stop)) for start, stop in feeders.batch_ranges(len(x), size))
        else:
            items = (data.split_batch(item, with_targets, f"batch {index + 1}") for index, item in enumerate(x))
        for index, (xb, yb) in enumerate(items):
            yield convert(f"batch {index + 1}", xb, yb)
        return
    x = model.as_input(x, allow_empty=not with_targets)
    if with_targets:
        y = model.prepare_targets(y, x.shape[0])
    elif x.shape[0] == 0:  # as PyTorch: an empty batch in, an empty batch of predictions out
        yield x, None
        return
    size = x.shape[0] if batch_size is None else check_int("batch_size", batch_size, 1)
    yield from _array_batches(x, y if with_targets else None, size)


def predict(model: Sequential, x: Any, batch_size: int | None = None) -> Array:
    """ŷ for every row of ``x`` (arrays, a ``Dataset`` or a stream of batches), computed
    ``batch_size`` rows at a time (arrays: all at once by default)."""
    parts = [model.forward(xb) if xb.shape[0] else model.backend.zeros((0, *model.output_shape), model.dtype)
             for xb, _ in _inference_batches(model, x, None, batch_size, with_targets=False)]
    if not parts:
        raise InputError("predict got no batches: the stream is empty")
    return parts[0] if len(parts) == 1 else model.backend.xp.concat(parts, axis=0)


def evaluate(model: Sequential, x: Any, y: Any = None, batch_size: int | None = 256) -> dict[str, float]:
    """Mean loss and every compiled metric over ``(x, y)``, a ``Dataset`` or a stream of batches."""
    return _evaluate_batches(model, _inference_batches(model, x, y, batch_size, with_targets=True))


def _evaluate_batches(model: Sequential, batches: Iterator[tuple[Array, Array | None]]) -> dict[str, float]:
    """Mean loss and metrics over checked ``(x, y)`` batches."""
    model._compiled_loss()  # before the (lazy) batches are read
    xp = model.backend.xp
    metrics = _fresh_metrics(model)
    total, count = 0.0, 0
    for xb, yb in batches:
        loss, prediction = model.evaluation_pass(xb, yb)
        total += float(loss) * xb.shape[0]
        count += xb.shape[0]
        for metric in metrics:
            metric.update(prediction, yb, xp)
    if count == 0:
        raise InputError("evaluate got no batches: the stream is empty")
    results = {"loss": total / count}
    results.update({metric.name: metric.result() for metric in metrics})
    return results
