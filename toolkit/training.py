"""``fit``, ``evaluate`` and ``predict``: mini-batch gradient descent over epochs.

The whole data set is moved to the model's device once; each epoch draws one seeded
permutation (on the host, so every backend sees the same batches) and slices batches from it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .callbacks import Callback, TerminateOnNaN
from .errors import InputError, TrainingDiverged
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


def _check_finite(x: Array, what: str, xp: Any) -> None:
    finite = xp.isfinite(x)
    if not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(~finite, xp.int64)))
        raise InputError(f"{what} contain {bad} NaN or inf value(s); clean the data or pass check_finite=False")


def _reset_metrics(model: Sequential) -> None:
    """Zero every metric's totals and tell it whether the model outputs logits (threshold 0, not 0.5)."""
    for metric in model.metrics:
        metric.reset()
        metric.from_logits = getattr(model.loss, "from_logits", False)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def fit(
    model: Sequential,
    x: Any,
    y: Any,
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    callbacks: Sequence[Callback] = (),
    verbose: int = 1,
    check_finite: bool = True,
    seed: int | None = None,
    distributed: DataParallel | None = None,
) -> History:
    """Train ``model`` with mini-batch gradient descent.

    Args:
        x, y: inputs (N, n_features) and targets; host (NumPy) or backend arrays.
        epochs: passes over the data (0 trains nothing).
        batch_size: samples per gradient step (the global batch when distributed).
        shuffle: draw a new seeded order of the samples every epoch.
        validation_data: ``(x_val, y_val)`` evaluated after each epoch.
        validation_split: fraction of the data, taken from the end before shuffling, held out.
        callbacks: ``EarlyStopping``, ``ModelCheckpoint``, ``LearningRateScheduler``…
        verbose: 0 silent, 1 progress bar (one line per epoch off a terminal), 2 one line per epoch.
        check_finite: refuse NaN/inf in the data, and stop on a NaN/inf loss keeping the weights
            from before that step (raises ``TrainingDiverged`` unless ``TerminateOnNaN`` is given).
        seed: seed of the shuffling; defaults to the model's seed.
        distributed: a ``toolkit.distributed.DataParallel`` to train on several processes.

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
    backend, xp = model.backend, model.backend.xp

    x = model.as_input(x)
    if check_finite:
        _check_finite(x, "inputs", xp)
    y = model.prepare_targets(y, x.shape[0])
    if validation_split:
        n_val = int(round(x.shape[0] * validation_split))
        if n_val < 1 or n_val >= x.shape[0]:
            raise InputError(f"validation_split={validation_split} leaves {n_val} of {x.shape[0]} samples for validation")
        validation_data = (x[-n_val:, ...], y[-n_val:, ...])
        x, y = x[:-n_val, ...], y[:-n_val, ...]
    if validation_data is not None:
        x_val = model.as_input(validation_data[0])
        y_val = model.prepare_targets(validation_data[1], x_val.shape[0])

    n = x.shape[0]
    if distributed is not None:
        distributed.prepare(model)
        distributed.check_batch_size(batch_size)
        distributed.check_batches(model, n, batch_size)
    batches = _batches(n, batch_size)
    rng = backend.random(model.seed if seed is None else seed)
    callbacks = list(callbacks)
    quiet_nan = any(isinstance(c, TerminateOnNaN) for c in callbacks)
    main = distributed is None or distributed.is_main
    progress = Progress(verbose if main else 0, epochs, len(batches))
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    history = History()
    model.stop_training = False
    logs: dict[str, float] = {}
    for epoch in range(epochs):
        started = time.perf_counter()
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        order = rng.permutation(n) if shuffle else None
        _reset_metrics(model)
        loss_sum = xp.zeros((), dtype=model.dtype, device=backend.device)
        seen = 0
        progress.epoch_begin(epoch)
        for batch, (start, stop) in enumerate(batches):
            if order is None:
                xb, yb = x[start:stop, ...], y[start:stop, ...]
            else:
                rows = order[start:stop]
                xb, yb = xp.take(x, rows, axis=0), xp.take(y, rows, axis=0)
            if distributed is None:
                loss, prediction, commit = model._train_batch(xb, yb)
            else:  # this rank's share of the global batch, then one all-reduce of gradients and loss
                xb, yb = distributed.local_batch(xb, yb)
                loss, prediction, commit = distributed.train_batch(model, xb, yb)
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
            loss_sum = loss_sum + loss * (stop - start)
            seen += stop - start
            if model.metrics and xb.shape[0]:
                for metric in model.metrics:
                    metric.update(prediction, yb, xp)
            progress.batch_end(lambda total=loss_sum, count=seen: float(total) / count)
        if model.stop_training and seen == 0:
            break
        logs = {"loss": float(loss_sum) / max(seen, 1)}
        if distributed is not None:
            distributed.reduce_metrics(model.metrics)
        for metric in model.metrics:
            logs[metric.name] = metric.result()
        if validation_data is not None:
            logs.update({f"val_{k}": v for k, v in evaluate(model, x_val, y_val, batch_size, _prepared=True).items()})
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        history.append(epoch, logs)
        progress.epoch_end(epoch, logs, time.perf_counter() - started)
        if model.stop_training:
            break
    for callback in callbacks:
        callback.on_train_end(logs)
    return history


def _batched_forward(model: Sequential, x: Array, batch_size: int | None) -> list[Array]:
    n = x.shape[0]
    size = n if batch_size is None else check_int("batch_size", batch_size, 1)
    return [model.forward(x[start:stop, ...]) for start, stop in _batches(n, size)]


def predict(model: Sequential, x: Any, batch_size: int | None = None) -> Array:
    """ŷ for every row of ``x``, computed ``batch_size`` rows at a time (all at once by default)."""
    x = model.as_input(x)
    parts = _batched_forward(model, x, batch_size)
    return parts[0] if len(parts) == 1 else model.backend.xp.concat(parts, axis=0)


def evaluate(model: Sequential, x: Any, y: Any, batch_size: int | None = 256, _prepared: bool = False) -> dict[str, float]:
    """Mean loss and every compiled metric over ``(x, y)``."""
    xp = model.backend.xp
    if not _prepared:
        x = model.as_input(x)
        y = model.prepare_targets(y, x.shape[0])
    size = x.shape[0] if batch_size is None else check_int("batch_size", batch_size, 1)
    _reset_metrics(model)
    total = 0.0
    for start, stop in _batches(x.shape[0], size):
        prediction = model.forward(x[start:stop, ...])
        target = y[start:stop, ...]
        total += float(model.loss.value(prediction, target, xp)) * (stop - start)
        for metric in model.metrics:
            metric.update(prediction, target, xp)
    results = {"loss": total / x.shape[0]}
    results.update({metric.name: metric.result() for metric in model.metrics})
    return results
