"""``fit``, ``evaluate`` and ``predict``: mini-batch gradient descent over epochs.

Arrays are moved to the model's device once; each epoch draws one seeded permutation (on the
host, so every backend sees the same batches) and slices batches from it. A ``toolkit.data.Dataset``
(memory-mapped arrays) is read batch by batch with the same permutation, and any iterable of
batches is converted as it comes; both are read ahead on a background thread
(``toolkit.feeders``, ``toolkit.data``).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import feeders
from .callbacks import Callback, LearningRateScheduler, TerminateOnNaN, batch_hooks
from .errors import InputError, TrainingDiverged
from .metrics import Metric
from .progress import Progress
from .validation import check_int, check_real, check_seed

if TYPE_CHECKING:
    from .distributed import DataParallel
    from .trainer import Trainer

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


def _fresh_metrics(model: Trainer) -> list[Metric]:
    """This call's own copies of the compiled metrics (zero totals), told whether the model outputs
    logits (threshold 0, not 0.5). The model's metric objects are templates and never change."""
    from_logits = getattr(model.loss, "from_logits", False)
    return [metric.fresh(from_logits) for metric in model.metrics]


def fit(
    model: Trainer,
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
    initial_epoch: int = 0,
    class_weight: dict[int, float] | None = None,
    sample_weight: Any = None,
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
        initial_epoch: the epoch to start from when resuming (Keras' meaning: ``epochs`` is the
            last epoch's number, so ``initial_epoch=3, epochs=5`` runs epochs 4 and 5).
        class_weight: ``{class label: weight}`` (1 for classes left out): each sample's loss is
            multiplied by its class's weight, for classes of unequal size (arrays; cross-entropy losses).
        sample_weight: one weight ≥ 0 per sample (or per position of a sequence), multiplying that
            sample's loss: J = (1/N) Σᵢ wᵢ lᵢ, as Keras. A held-out ``validation_split`` keeps its
            weights. Metrics count every sample once, except samples of weight 0, which they skip.

    Returns:
        A ``History`` with per-epoch ``loss``, metrics, and ``val_*`` entries.
    """
    if model.loss is None or model.optimizer is None:
        raise RuntimeError("call model.compile(loss=..., optimizer=...) before fit()")
    epochs = check_int("epochs", epochs, 0)
    initial_epoch = check_int("initial_epoch", initial_epoch, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    try:
        validation_split = check_real("validation_split", validation_split, 0.0, 1.0, high_open=True)
    except InputError:
        raise InputError(f"validation_split must lie in [0, 1); got {validation_split!r}") from None
    seed = check_seed(seed)
    steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch, 1)
    prefetch = check_int("prefetch", prefetch, 0)
    backend, xp = model.backend, model.backend.xp
    feeder = feeders.feeder_for(model, x, y, purpose="fit", batch_size=batch_size, shuffle=shuffle, seed=seed,
                                steps_per_epoch=steps_per_epoch, prefetch=prefetch, check_finite=check_finite,
                                drop_remainder=drop_remainder, distributed=distributed,
                                validation_split=validation_split, sample_weight=sample_weight,
                                class_weight=class_weight)
    held_out = getattr(feeder, "held_out", None)
    validation = None
    if validation_data is not None or held_out is not None:
        validation = feeders.feeder_for(model, held_out if validation_data is None else validation_data,
                                        purpose="validation_data", batch_size=batch_size, epochs=epochs)

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
    model._frozen_mask()  # every layer frozen: refused here, before any step
    accumulator = None
    if model.gradient_accumulation_steps > 1:
        if distributed is not None:
            raise InputError("gradient_accumulation_steps > 1 with distributed training is not supported yet: "
                             "compile with gradient_accumulation_steps=1, or give each rank a larger batch")
        accumulator = GradientAccumulator(model, model.gradient_accumulation_steps)
    per_batch = batch_hooks(callbacks)
    guard = DivergenceGuard(model, check_finite)
    # Steps run in groups only where nothing must see each one (no batch callbacks, no accumulation, one
    # process) and the backend has a program for it.
    alone = not per_batch and accumulator is None and distributed is None
    group_size = model._steps_per_program() if alone else 1
    # The backend may choose its thread count by timing the first steps of each epoch (the NumPy and numba
    # backends' BLAS threads: one on a busy machine, all on a quiet one). Ranks of a data-parallel run
    # wait for each other, so their steps time the slowest rank: they keep the threads they have.
    tuner = backend.thread_tuner() if distributed is None else None
    logs: dict[str, float] = {}
    try:
        for epoch in range(initial_epoch, epochs):
            started = time.perf_counter()
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            metrics = _fresh_metrics(model)
            loss_sum: Any = 0.0  # a float while the guard reads each loss, else an array on the device
            seen = 0
            message = None
            progress.epoch_begin(epoch)
            if tuner is not None:
                tuner.epoch_begin()
            stopped, next_batch = False, 0
            for count, rows, xb, yb in feeder.groups(epoch, group_size):
                first, next_batch = next_batch, next_batch + count
                if count > 1:  # one program for the group's steps (steps_per_execution)
                    grouped = _train_group(model, first, xb, yb, guard, epoch, metrics)
                    if grouped is not None:
                        total, message = grouped
                        if message is not None:
                            _diverged(model, message, quiet_nan)
                            break
                        loss_sum = loss_sum + guard.as_read(total) * rows
                        seen += rows * count
                        for _ in range(count):
                            progress.batch_end(lambda total=loss_sum, count=seen: float(total) / count)
                        continue
                    # else its steps one at a time (after a non-finite loss: training stops at that step)
                group = [(first + i, xb[i], yb[i]) for i in range(count)] if count > 1 else [(first, xb, yb)]
                for batch, xb, yb in group:
                    for callback in per_batch:
                        callback.on_train_batch_begin(batch)
                    timed = tuner is not None and tuner.probing
                    if timed:
                        tuner.step_begin()  # type: ignore[union-attr]
                    if accumulator is not None:
                        loss, prediction, commit = accumulator.train_batch(xb, yb)
                    elif distributed is None:
                        loss, prediction, commit = model._train_batch(xb, yb, with_output=bool(metrics))
                    else:  # this rank's share of the global batch, then one all-reduce of gradients and loss
                        loss, prediction, commit = distributed.train_batch(model, xb, yb, rows)
                    message = guard.before_commit(loss, epoch, batch)
                    if message is None:
                        commit()
                        message = guard.after_commit(epoch, batch)
                    if timed:
                        tuner.step_end()  # type: ignore[union-attr]
                    if message is not None:
                        _diverged(model, message, quiet_nan)
                        stopped = True
                        break
                    loss_sum = loss_sum + guard.as_read(loss) * rows
                    seen += rows
                    if metrics and xb.shape[0]:
                        for metric in metrics:
                            metric.update(prediction, yb, xp)
                    progress.batch_end(lambda total=loss_sum, count=seen: float(total) / count)
                    if per_batch:
                        for callback in per_batch:
                            callback.on_train_batch_end(batch, {"loss": loss, "rows": rows})
                        if model.stop_training:
                            stopped = True
                            break
                if stopped:
                    break
            if accumulator is not None:
                if message is None:
                    accumulator.flush()  # a shorter last group is one more update
                else:
                    accumulator = GradientAccumulator(model, model.gradient_accumulation_steps)  # drop it
            message = None if model.stop_training else guard.flush(epoch)
            if message is not None:
                _diverged(model, message, quiet_nan)
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
                logs.update({f"val_{k}": v for k, v in _validate(model, validation, epoch, history).items()})
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            history.append(epoch, logs)
            progress.epoch_end(epoch, logs, time.perf_counter() - started)
            if model.stop_training or getattr(feeder, "exhausted", False):
                break
    finally:
        feeder.close()
        progress.close()
        if tuner is not None:
            tuner.close()
    for callback in callbacks:
        callback.on_train_end(logs)
    return history


def _diverged(model: Trainer, message: str, quiet: bool) -> None:
    """A non-finite loss: ``TrainingDiverged``, or with ``TerminateOnNaN`` a warning and the end of training."""
    if not quiet:
        raise TrainingDiverged(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)
    model.stop_training = True


CHECK_EVERY = 32  # steps between two reads of the NaN guard where reads wait for a device


def _read(value: Array) -> float:
    """A device value as a Python float: the only place the guard waits for the device."""
    return float(value)


class DivergenceGuard:
    """``fit``'s NaN/inf guard (``check_finite``): training stops on a non-finite loss with the
    weights from before it.

    Where reads are cheap (``Backend.reads_are_cheap``: the CPU backends) each step's loss is read
    before the step is kept, so a bad step is never committed. On a GPU a read waits for every
    queued kernel, so the losses are summed on the device and the sum is read once every
    ``CHECK_EVERY`` steps and at the end of each epoch; the model's state (weights, layer state,
    optimizer state, step counters) is copied on the device at the start of each such block and put
    back when the block's sum is not finite, so training stops with the weights from before the block.
    """

    def __init__(self, model: Trainer, enabled: bool) -> None:
        self.model, self.enabled = model, enabled
        self.deferred = enabled and not model.backend.reads_are_cheap
        self.value: float | None = None  # the loss last read (``as_read``)
        self.pending: Array | None = None
        self.first = 0
        self.snapshot: tuple[Any, ...] | None = None

    def before_commit(self, loss: Array, epoch: int, batch: int) -> str | None:
        """Why this step must not be kept (read here on cheap-read backends), or None."""
        if not self.enabled:
            return None
        if not self.deferred:
            value = self.value = _read(loss)
            if math.isfinite(value):
                return None
            return (f"loss became {value} at epoch {epoch + 1}, batch {batch + 1}; training stopped and the weights "
                    "from before this step are kept (lower the learning rate or check the data)")
        if self.pending is None:
            self.first, self.snapshot = batch, _snapshot(self.model)
        self.pending = loss if self.pending is None else self.pending + loss  # non-finite if any loss is
        return None

    def as_read(self, loss: Array) -> Any:
        """``loss`` as ``before_commit`` just read it, a float, for fit's running sum (on JAX two dispatches
        fewer per step); ``loss`` itself where this guard reads none (disabled, or deferred: the sum stays
        on the device)."""
        return loss if self.value is None else self.value

    def after_commit(self, epoch: int, batch: int) -> str | None:
        """Every ``CHECK_EVERY`` steps of a deferred guard: why training must stop, or None."""
        if self.pending is None or batch + 1 - self.first < CHECK_EVERY:
            return None
        return self.flush(epoch, batch)

    def flush(self, epoch: int, batch: int | None = None) -> str | None:
        """Read the block's sum (at the end of an epoch, or of a block); on a non-finite one, put the
        block's starting state back and say so."""
        if self.pending is None:
            return None
        value, first, snapshot = _read(self.pending), self.first, self.snapshot
        self.pending = self.snapshot = None
        if math.isfinite(value):
            return None
        assert snapshot is not None
        _restore(self.model, snapshot)
        last = "the epoch's end" if batch is None else f"batch {batch + 1}"
        return (f"loss became non-finite at epoch {epoch + 1}, between batch {first + 1} and {last} (on "
                f"{self.model.backend.name} the loss is read once per {CHECK_EVERY} steps, not to wait for the device "
                f"each step); training stopped and the weights from before batch {first + 1} are kept (lower the "
                "learning rate or check the data)")


def _train_group(model: Trainer, first: int, xs: Array, ys: Array, guard: DivergenceGuard, epoch: int,
                 metrics: list[Any]) -> tuple[Array, str | None] | None:
    """The steps on the batches xs[0], xs[1], … (stacked: (steps, rows, …)), batch ``first`` the
    first, as one program: (the sum of their losses, why training must stop or None); None where they
    must be taken one by one instead: a non-finite loss that a guard reading each loss must place exactly."""
    xp = model.backend.xp
    losses, predictions, commit = model._train_steps(xs, ys, with_output=bool(metrics))
    total = xp.sum(losses)
    if guard.before_commit(total, epoch, first) is not None:  # a deferred guard adds the sum to its block
        return None  # a non-finite loss: nothing was kept
    commit()
    if metrics and ys.shape[1]:  # running sums: one update with the group's rows
        assert predictions is not None
        for metric in metrics:
            metric.update(*(xp.reshape(a, (-1, *a.shape[2:])) for a in (predictions, ys)), xp)
    return total, guard.after_commit(epoch, first + ys.shape[0] - 1)


class GradientAccumulator:
    """``compile(gradient_accumulation_steps=k)``: the gradients of k consecutive batches, each weighted
    by its rows, summed, then one update with their average over all the rows, which is the gradient
    of the mean loss over the k batches as one batch. All k batches share the step's dropout key and
    each starts at its row's place in the step (``PassContext.first_row``), so their masks are the
    rows of the one big batch's mask. The update is applied when the k-th batch commits, or at the
    end of an epoch for a shorter last group (``flush``)."""

    def __init__(self, model: Trainer, steps: int) -> None:
        self.model, self.steps = model, steps
        self.total: Array | None = None
        self.rows = self.count = 0

    def train_batch(self, x: Array, y: Array) -> tuple[Array, Array, Callable[[], None]]:
        model = self.model
        context = dataclasses.replace(model.training_context(), first_row=self.rows)
        loss, output, new_state = model._gradients(x, y, context)
        weighted = model.flat_grads * x.shape[0]
        self.total = weighted if self.total is None else self.total + weighted
        if new_state is not None:  # BatchNorm's running statistics take in each batch, as in PyTorch
            model.assign_state(new_state)
        self.rows += x.shape[0]
        self.count += 1
        return loss, output, lambda: self.flush() if self.count == self.steps else None

    def flush(self) -> None:
        """Apply the pending group's update, if any."""
        if self.total is None:
            return
        model = self.model
        model.flat_grads = model.backend.assign(model.flat_grads, self.total / self.rows)
        self.total, self.rows, self.count = None, 0, 0
        model._commit(None)  # the update, and the next step's dropout key


def _snapshot(model: Trainer) -> tuple[Any, ...]:
    """Device copies of everything a step changes (no read back to the host)."""
    xp = model.backend.xp
    optimizer = model.optimizer
    assert optimizer is not None
    return (xp.asarray(model.flat_params, copy=True), xp.asarray(model.flat_state, copy=True),
            {name: xp.asarray(value, copy=True) for name, value in optimizer.state.items()},
            optimizer.iterations, model.random_step)


def _restore(model: Trainer, snapshot: tuple[Any, ...]) -> None:
    params, state, optimizer_state, iterations, random_step = snapshot
    optimizer = model.optimizer
    assert optimizer is not None
    model.assign_params(params)
    model.assign_state(state)
    for name, value in optimizer_state.items():
        optimizer.state[name] = model.backend.assign(optimizer.state[name], value)
    optimizer.iterations, model.random_step = iterations, random_step


def _validate(model: Trainer, validation: feeders.Feeder, epoch: int, history: History) -> dict[str, float]:
    """The validation loss and metrics after ``epoch``; a source that fails says it is the
    validation data, and the error carries the ``History`` of the epochs finished so far."""
    try:
        return _evaluate_batches(model, validation)
    except InputError as error:
        raised = InputError(f"validation_data after epoch {epoch + 1}: {error}; give a re-iterable source (a list "
                            "of batches, a DataLoader, a toolkit.data.Dataset, or arrays); the weights trained so "
                            "far are kept, and the finished epochs' logs are in model.history")
        raised.history = history  # type: ignore[attr-defined]
        raise raised from error


def predict(model: Trainer, x: Any, batch_size: int | None = None) -> Array:
    """ŷ for every row of ``x`` (arrays, a ``Dataset`` or a stream of batches), computed
    ``batch_size`` rows at a time (arrays: all at once by default)."""
    feeder = feeders.feeder_for(model, x, purpose="predict", batch_size=batch_size)
    parts = [model.forward(xb) if xb.shape[0] else model.backend.zeros((0, *model.output_shape), model.dtype)
             for _, xb, _ in feeder.epoch(0)]
    if not parts:
        raise InputError("predict got no batches: the stream is empty")
    return parts[0] if len(parts) == 1 else model.backend.xp.concat(parts, axis=0)


def evaluate(model: Trainer, x: Any, y: Any = None, batch_size: int | None = 256) -> dict[str, float]:
    """Mean loss and every compiled metric over ``(x, y)``, a ``Dataset`` or a stream of batches."""
    model._compiled_loss()  # before any data is read
    return _evaluate_batches(model, feeders.feeder_for(model, x, y, purpose="evaluate", batch_size=batch_size))


def _evaluate_batches(model: Trainer, feeder: feeders.Feeder) -> dict[str, float]:
    """Mean loss and metrics over one pass of an evaluation feeder (checked ``(x, y)`` batches) of a
    compiled model."""
    xp = model.backend.xp
    metrics = _fresh_metrics(model)
    total, count = 0.0, 0
    for _, xb, yb in feeder.epoch(0):
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
