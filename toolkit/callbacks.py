"""Callbacks for ``fit``: early stopping, checkpoints, learning-rate schedules, NaN handling."""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import Any

from .errors import InputError
from .saving import save
from .validation import check_real


class Callback:
    """Hooks called by ``fit``. ``logs`` maps ``"loss"``, ``"val_loss"``, metric names… to floats."""

    model: Any = None
    params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        """What ``fit`` is about to run: ``epochs``, ``steps`` per epoch (None: unknown) and
        ``log_keys``, the names every epoch's logs will hold."""
        self.params = params

    def on_train_begin(self) -> None: ...

    def on_epoch_begin(self, epoch: int) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_batch_begin(self, batch: int) -> None:
        """Before training step ``batch`` of the epoch (from 0)."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        """After step ``batch`` was applied. ``logs["loss"]`` is the step's loss as a 0-d array of the
        model's backend, not a float: on a GPU, reading it (``float(logs["loss"])``) waits for the
        device, so a callback that does not read it costs no synchronisation. ``logs["rows"]``: the
        batch's rows. Setting ``self.model.stop_training = True`` ends training after this step."""

    def on_train_end(self, logs: dict[str, float]) -> None: ...


def batch_hooks(callbacks: list[Callback]) -> list[Callback]:
    """The callbacks that override a per-batch hook: ``fit`` calls only those, so callbacks that
    act per epoch add nothing to a step."""
    return [callback for callback in callbacks
            if type(callback).on_train_batch_begin is not Callback.on_train_batch_begin
            or type(callback).on_train_batch_end is not Callback.on_train_batch_end]


def _improved(mode: str, value: float, best: float, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode == "auto":
        return "max" if any(word in monitor for word in ("acc", "precision", "recall", "f1")) else "min"
    if mode not in ("min", "max"):
        raise InputError(f"mode must be 'auto', 'min' or 'max'; got {mode!r}")
    return mode


def _monitored(logs: dict[str, float], monitor: str, owner: str) -> float:
    if monitor not in logs:
        raise InputError(f"{owner}: monitored quantity {monitor!r} is not logged; available: {sorted(logs)}")
    return logs[monitor]


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    with ``restore_best_weights`` the model ends with the weights of its best epoch. With
    ``verbose=1`` (the default) it says when it stopped and which epoch's weights the model keeps.

    Example:
        >>> from toolkit.callbacks import EarlyStopping
        >>> EarlyStopping(monitor="val_loss", patience=3).patience
        3
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True, verbose: int = 1) -> None:
        if patience < 0:
            raise InputError(f"patience must be ≥ 0; got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = _resolve_mode(mode, monitor)
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose

    def on_train_begin(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._best_params: Any = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if _improved(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                xp = self.model.backend.xp
                # the running statistics belong to the weights they were gathered with
                self._best_params = (xp.asarray(self.model.flat_params, copy=True),
                                     xp.asarray(self.model.flat_state, copy=True))
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float]) -> None:
        restored = self.restore_best_weights and self._best_params is not None
        if restored:
            params, state = self._best_params
            self.model.assign_params(params)
            self.model.assign_state(state)
        if self.verbose and self.stopped_epoch is not None and getattr(self.model, "is_main", True):
            best = f"{self.monitor} = {self.best:.4g} at epoch {self.best_epoch + 1}"
            kept = (f"restored the weights of epoch {self.best_epoch + 1}" if restored else
                    f"kept the weights of epoch {self.stopped_epoch + 1} (restore_best_weights=False)")
            print(f"EarlyStopping: stopped after epoch {self.stopped_epoch + 1}: {self.monitor} did not improve for "
                  f"{self.wait} epochs (best {best}); {kept}", flush=True)


class ModelCheckpoint(Callback):
    """Save the model (and optimizer state) to ``path`` after each epoch, or only when
    ``monitor`` improves with ``save_best_only``. The path is a format string filled with
    ``epoch`` (from 1) and every logged value, as in Keras: ``"ck_{epoch:02d}_{val_loss:.3f}.safetensors"``;
    a name that the epoch's logs will not hold is an ``InputError`` before training starts."""

    def __init__(self, path: str, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto") -> None:
        self.path, self.monitor, self.save_best_only = str(path), monitor, save_best_only
        self.mode = _resolve_mode(mode, monitor)
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(self.path) if field is not None]
        except ValueError as error:
            raise InputError(f"ModelCheckpoint: {self.path!r} is not a valid format string ({error})") from None
        bad = [field for field in fields if not field.isidentifier()]
        if bad:
            raise InputError(f"ModelCheckpoint: {self.path!r} names {bad}; fields must be names, such as {{epoch}} "
                             "or {val_loss}")
        self.fields = [field for field in fields if field != "epoch"]

    def on_train_begin(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        available = self.params.get("log_keys")
        if available is not None:
            unknown = [field for field in self.fields if field not in available]
            if unknown:
                raise InputError(f"ModelCheckpoint: the path {self.path!r} names {unknown}, which this fit does not "
                                 f"log; available: {['epoch', *available]}")

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            if not _improved(self.mode, value, self.best, 0.0):
                return
            self.best = value
        if self.model.is_main:
            save(self.model, self.path.format(**{**logs, "epoch": epoch + 1}))


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch from ``schedule(epoch)``
    (epochs count from 0); ``schedule`` is a function or a ``toolkit.schedules`` object."""

    def __init__(self, schedule: Callable[[int], float]) -> None:
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int) -> None:
        value = self.schedule(epoch)
        try:
            lr = check_real("learning rate", value, low=0.0, low_open=True)
        except InputError:
            raise InputError(f"LearningRateScheduler: the schedule gave {value!r} at epoch {epoch}; "
                             "it must return a finite learning rate > 0") from None
        self.model.optimizer.lr = lr

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        logs["lr"] = self.model.optimizer.lr


class TerminateOnNaN(Callback):
    """Make a NaN/inf loss end training quietly (with a warning) instead of raising
    ``TrainingDiverged``; either way the weights from before the bad step are kept."""
