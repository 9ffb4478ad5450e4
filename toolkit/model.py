"""The ``Sequential`` container: a stack of layers, the state it owns (flat parameter and gradient
buffers, scratch), and the forward and backward passes through it (run by ``toolkit.engine``).

All parameters live in one flat array and all gradients in another (``toolkit.parameters``); the
model hands each layer its slices at every pass. State changes only by replacing a buffer through
``Backend.assign`` (a copy into the existing buffer on mutable backends, the new array on JAX).
"""

from __future__ import annotations

import math
import secrets
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .backend import Backend
from .config import get_backend, load_backend
from .context import INFERENCE, TRAINING, PassContext
from .engine import Engine, backward_pass, evaluation_pass, forward_pass, make_plan, next_state
from .errors import InputError, ShapeError, ToolkitError
from .layers import Dropout, Layer
from .losses import Loss, get_loss
from .metrics import Metric, get_metric
from .ops.optim import RULES
from .ops.random import step_key
from .optimizers import Optimizer, get_optimizer
from .parameters import ParameterTable
from .validation import check_int, check_seed

if TYPE_CHECKING:
    from .callbacks import Callback
    from .distributed import DataParallel
    from .training import History

Array = Any


def _take(lock: Any, what: str) -> None:
    """Take ``lock`` without waiting, or raise the ToolkitError that names the problem."""
    if not lock.acquire(False):
        raise ToolkitError(
            f"{what}: this model is running a training step in another thread; train one model "
            "from one thread at a time (predict and evaluate are safe from any thread)"
        )


def _warn_if_channels_first(batch_shape: tuple[int, ...]) -> None:
    """Images are channels-last here; a batch that looks channels-first (N, C, H, W) with C of 1,
    3 or 4 would build and train on the wrong axes, so say so (once: the model builds once)."""
    if len(batch_shape) == 4 and batch_shape[1] in (1, 3, 4) and batch_shape[-1] not in (1, 3, 4):
        n, c, h, w = batch_shape
        warnings.warn(
            f"inputs of shape {batch_shape} look channels-first (N, C, H, W); the toolkit's images are channels-last "
            f"(N, H, W, C), so the model is built for H={c}, W={h}, C={w}. If the channels are on axis 1, pass "
            f"x.transpose(0, 2, 3, 1) (shape {(n, h, w, c)}), or give input_shape to silence this",
            UserWarning, stacklevel=4)


class _StepGuard:
    """``with _StepGuard(lock, what):`` holds ``lock`` for the block (``_take`` on entry)."""

    __slots__ = ("lock", "what")

    def __init__(self, lock: Any, what: str) -> None:
        self.lock, self.what = lock, what

    def __enter__(self) -> None:
        _take(self.lock, self.what)

    def __exit__(self, *exc_info: Any) -> None:
        self.lock.release()


def _every_layer(layers: Iterable[Layer]) -> list[Layer]:
    """The layers and, depth first, the layers nested in them (residual blocks)."""
    found: list[Layer] = []
    for layer in layers:
        found += [layer, *_every_layer(layer.sublayers())]
    return found


def _claim(layers: Sequence[Layer], model: object) -> None:
    """Make ``model`` the owner of its layers (nested ones too). A layer computes with the backend,
    shapes and parameter slots of one model, so a layer object that is in another live model, or
    twice in this one, is refused here rather than failing later inside the array library."""
    every = _every_layer(layers)
    seen: set[int] = set()
    for layer in every:
        if id(layer) in seen:
            raise InputError(f"{layer.describe()} appears twice in this model; each position needs its own "
                             f"layer object (e.g. {type(layer).__name__}.from_config(layer.get_config()))")
        seen.add(id(layer))
        owner = layer.__dict__.get("_owner")
        if owner is not None and owner() is not None and owner() is not model:
            raise InputError(f"{layer.describe()} already belongs to another model; a layer object serves one model "
                             f"(build a new one, e.g. {type(layer).__name__}.from_config(layer.get_config()), or "
                             "copy weights between models with get_weights/set_weights)")
    for layer in every:
        layer._owner = weakref.ref(model)  # type: ignore[attr-defined]


class Sequential:
    """A feed-forward network ``ŷ = f_L(… f_2(f_1(x)))``.

    Args:
        layers: the layers, first to last.
        input_dim: number of input features (or give ``input_dim`` to the first ``Dense``).
        input_shape: the shape of one sample, batch axis excluded: ``(28, 28, 1)`` for channels-last
            images (or give ``input_shape`` to the first ``Conv2D``); ``(n,)`` is ``input_dim=n``.
        dtype: ``"float32"`` (default) or ``"float64"``.
        seed: seed of the initial weights; the same seed gives the same weights on every backend.
        backend: a backend name or object; defaults to the active one (``TOOLKIT_BACKEND``).

    Thread safety: ``predict``, ``evaluate`` and ``forward(training=False)`` keep nothing on the
    model and may run in any thread, also while another thread trains (they then see the weights
    of some step). Training steps (``fit``, ``train_step``, ``compute_gradients``, ``backward``)
    on one model from two threads at once are refused with a ``ToolkitError``.

    Example:
        >>> from toolkit import Dense, Sequential
        >>> model = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3, activation="softmax")])
        >>> model.compile(loss="categorical_crossentropy", optimizer="adam")
        >>> float(model.train_step([[1.0, 2.0, 3.0, 4.0]], [2])) > 0
        True
    """

    def __init__(
        self,
        layers: Iterable[Layer],
        input_dim: int | None = None,
        dtype: str = "float32",
        seed: int = 0,
        backend: str | Backend | None = None,
        input_shape: tuple[int, ...] | int | None = None,
    ) -> None:
        self.layers: list[Layer] = list(layers)
        if not self.layers:
            raise InputError("Sequential needs at least one layer")
        if any(not isinstance(layer, Layer) for layer in self.layers):
            raise InputError(f"Sequential takes layers; got {[type(layer).__name__ for layer in self.layers]}")
        _claim(self.layers, self)
        self.backend: Backend = get_backend() if backend is None else load_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.dtype_name = dtype
        self.seed = check_seed(seed)
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.metrics: list[Metric] = []
        self.stop_training = False
        self.is_main = True  # False on the other ranks of a data-parallel run
        self.built = False
        self._engine: Engine | None = None
        self._views_for: Any = None
        self._state_views_for: Any = None
        # The dropout masks are keyed by (random_seed, random_step): the model's seed (or a fresh one
        # when it has none) and the number of training passes so far. Checkpoints keep both.
        self.random_seed = self.seed if self.seed is not None else secrets.randbits(32)
        self.random_step = 0
        self.epochs_completed = 0  # whole epochs fit has run: each epoch's shuffle order depends on it
        self.history: History | None = None  # the last fit's, as Keras keeps it
        self._step_lock = threading.Lock()
        self._thread = threading.local()  # the tape of a hand-written forward(training=True), per thread
        if input_dim is not None and input_shape is not None:
            raise InputError("give input_dim or input_shape, not both")
        declared = (input_shape if input_shape is not None else input_dim if input_dim is not None
                    else getattr(self.layers[0], "declared_input_shape", None)
                    or getattr(self.layers[0], "declared_input_dim", None))
        if declared is not None:
            self.build(declared)

    # -- construction ---------------------------------------------------------------------
    def build(self, input_shape: int | tuple[int, ...]) -> None:
        """Fix the layer shapes, lay out the flat buffers and draw the initial weights.

        ``input_shape`` is one sample's shape without the batch axis; an int n means ``(n,)``."""
        if isinstance(input_shape, (tuple, list)):
            shape: tuple[int, ...] = tuple(check_int("input_shape", size, 1) for size in input_shape)
            if not shape:
                raise InputError("input_shape must name at least one axis")
        else:
            shape = (check_int("input_dim", input_shape, 1),)
        self.input_shape = shape
        for layer in self.layers:
            shape = layer.configure(shape)
        table = ParameterTable([layer.param_shapes() for layer in self.layers])
        state_table = ParameterTable([layer.state_shapes() for layer in self.layers])
        rng = self.backend.random(self.seed)
        initial: dict[str, Array] = {}
        initial_state: dict[str, Array] = {}
        for index, layer in enumerate(self.layers):
            layer.bind(self.backend, str(index))
            layer.needs_input_grad = index > 0
            initial.update({f"{index}.{name}": value for name, value in layer.initial_params(rng, self.dtype).items()})
            initial_state.update({f"{index}.{name}": value
                                  for name, value in layer.initial_state(rng, self.dtype).items()})
        backend = self.backend
        self.table, self.state_table = table, state_table
        self.flat_params = table.flatten(initial, backend.xp) if table.size else backend.zeros(0, self.dtype)
        # Non-trainable state (BatchNorm's running statistics): no optimizer sees it.
        self.flat_state = (state_table.flatten(initial_state, backend.xp) if state_table.size
                           else backend.zeros(0, self.dtype))
        every = _every_layer(self.layers)
        self._uses_random = any(isinstance(layer, Dropout) and layer.rate > 0 for layer in every)
        self.synchronized_layers = [layer for layer in every if layer.synchronizes_batch]
        if backend.mutable:
            # One slot past the gradients carries the batch loss, so a data-parallel step reduces
            # gradients and loss together in a single all-reduce.
            self.reduction_buffer = backend.zeros(table.size + 1, self.dtype)
            self.flat_grads = self.reduction_buffer[: table.size]
        else:
            self.reduction_buffer = None
            self.flat_grads = backend.zeros(table.size, self.dtype)
        self.input_dim = self.input_shape[-1] if len(self.input_shape) == 1 else None
        self.output_shape = shape
        self.output_dim = shape[-1]
        self.built = True
        self._engine = None
        self._inference: tuple[Any] | None = None  # (compiled inference pass or None,), made on first use
        self._views_for = None
        if self.optimizer is not None:
            self.optimizer.bind(self.flat_params, self.backend, owner=self)

    def compile(self, loss: str | Loss, optimizer: str | Optimizer = "sgd", metrics: Sequence[Any] = ()) -> None:
        """Choose the loss, the optimizer and the metrics reported by ``fit``/``evaluate``.

        An optimizer instance belongs to one model; passing one that trains another live model
        is an ``InputError``."""
        new_loss = get_loss(loss)
        new_optimizer = get_optimizer(optimizer)
        new_metrics = [get_metric(m) for m in metrics]
        if self.built:
            new_optimizer.bind(self.flat_params, self.backend, owner=self)
        self.loss, self.optimizer, self.metrics = new_loss, new_optimizer, new_metrics
        self._engine = None

    def _compiled_loss(self) -> Loss:
        """The loss given to ``compile``; training and evaluating need it."""
        if self.loss is None:
            raise RuntimeError("call compile(loss=..., optimizer=...) before training or evaluating")
        return self.loss

    def _engine_for_training(self) -> Engine:
        """The engine of this model's plan, made on first use after each build/compile."""
        if self._engine is None:
            self._engine = Engine(make_plan(self.layers, self.table, self.state_table, self._compiled_loss(), self.dtype),
                                  self.backend)
        return self._engine

    # -- parameters -----------------------------------------------------------------------
    def _views(self) -> tuple[list[dict[str, Array]], list[dict[str, Array]]]:
        """Per layer, its parameters and state, and its gradient slots (empty on immutable backends),
        cut once per flat buffer: mutable backends keep theirs, so the cut is reused step after step."""
        if self._views_for is not self.flat_params or self._state_views_for is not self.flat_state:
            xp = self.backend.xp
            self._param_views = self.table.views_with(self.state_table, self.flat_params, self.flat_state, xp)
            self._grad_slots = (self.table.views(self.flat_grads, xp) if self.backend.mutable
                                else [{} for _ in self.layers])
            self._views_for, self._state_views_for = self.flat_params, self.flat_state
        return self._param_views, self._grad_slots

    def training_context(self, **distributed: Any) -> PassContext:
        """The context of this model's next training pass (its dropout key)."""
        if not self._uses_random and not distributed:
            return TRAINING  # nothing to key: one shared context, not a new one per step
        key = step_key(self.random_seed, self.random_step) if self._uses_random else 0
        return PassContext(training=True, random_key=key, **distributed)

    def _named(self, table: ParameterTable, flat: Array) -> list[tuple[str, Array]]:
        views = table.views(flat, self.backend.xp)
        return [(slot.key, views[slot.layer][slot.name]) for slot in table.slots]

    def named_state(self) -> list[tuple[str, Array]]:
        """``("1.running_mean", array), …``: the non-trainable state, in model order."""
        return self._named(self.state_table, self.flat_state)

    def get_state(self) -> dict[str, Any]:
        """Host (NumPy) copies of the non-trainable state (running statistics), by name."""
        return {name: self.backend.to_host(s).copy() for name, s in self.named_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Load the non-trainable state by name; every name and shape is checked first."""
        self.assign_state(self._flatten_checked(self.state_table, state, "state"))

    def named_parameters(self) -> list[tuple[str, Array]]:
        """``("0.W", array), ("0.b", array), …`` in model order (views on mutable backends)."""
        return self._named(self.table, self.flat_params)

    def named_gradients(self) -> list[tuple[str, Array]]:
        """``("0.W", gradient), …`` of the last gradient pass, in model order."""
        return self._named(self.table, self.flat_grads)

    def get_weights(self) -> dict[str, Any]:
        """Host (NumPy) copies of every parameter, by name."""
        return {name: self.backend.to_host(p).copy() for name, p in self.named_parameters()}

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load parameters by name; every name and shape is checked before anything is written."""
        self.assign_params(self._flatten_checked(self.table, weights, "weight"))

    def _flatten_checked(self, table: ParameterTable, values: dict[str, Any], what: str) -> Array:
        slots = table.by_key
        if set(values) != set(slots):
            raise ShapeError(f"{what}s name {sorted(values)}, the model has {sorted(slots)}")
        converted = {}
        for name, value in values.items():
            array = self.backend.asarray(value, dtype=self.dtype)
            if tuple(array.shape) != slots[name].shape:
                raise ShapeError(f"{what} {name}: shape {tuple(array.shape)}, model needs {slots[name].shape}")
            converted[name] = array
        return table.flatten(converted, self.backend.xp) if table.size else self.backend.zeros(0, self.dtype)

    def assign_params(self, flat: Array) -> None:
        """Replace every parameter at once with a flat array laid out as ``flat_params``."""
        if tuple(flat.shape) != tuple(self.flat_params.shape):
            raise ShapeError(f"flat parameters of shape {tuple(flat.shape)}; the model has {tuple(self.flat_params.shape)}")
        self.flat_params = self.backend.assign(self.flat_params, flat)

    def assign_state(self, flat: Array) -> None:
        """Replace the non-trainable state at once with a flat array laid out as ``flat_state``."""
        if tuple(flat.shape) != tuple(self.flat_state.shape):
            raise ShapeError(f"flat state of shape {tuple(flat.shape)}; the model has {tuple(self.flat_state.shape)}")
        self.flat_state = self.backend.assign(self.flat_state, flat)

    # -- inputs ---------------------------------------------------------------------------
    def as_input(self, x: Any, allow_empty: bool = False) -> Array:
        """``x`` as a (N, n_features) array of the model's backend, device and dtype.

        Host arrays (NumPy, lists) and arrays of another backend are copied onto the model's
        device here, explicitly; integer, boolean and float16 inputs are refused, and so are
        values that overflow the model's dtype (1e39 in a float32 model).
        """
        x = self.backend.asarray(x)
        xp = self.backend.xp
        dtype_name = str(x.dtype).rsplit(".", 1)[-1]  # "int64" from any namespace's dtype
        if not xp.isdtype(x.dtype, "real floating"):
            hint = f" (images of 0–255: x.astype('{self.dtype_name}') / 255)" if dtype_name == "uint8" else ""
            raise InputError(
                f"inputs have dtype {dtype_name}; the model takes floating-point inputs: convert with "
                f"x.astype('{self.dtype_name}'){hint}"
            )
        if x.dtype not in (xp.float32, xp.float64):
            raise InputError(f"inputs have dtype {dtype_name}, which is not supported; use float32 or float64")
        if not self.built and x.ndim >= 2:
            _warn_if_channels_first(tuple(int(size) for size in x.shape))
            self.build(tuple(int(size) for size in x.shape[1:]))
        rank = 1 + (len(self.input_shape) if self.built else 1)
        if x.ndim != rank:
            if rank == 2:
                raise ShapeError(f"inputs must be a 2-D batch (N, n_features); got shape {tuple(x.shape)}")
            raise ShapeError(f"inputs must be a batch of shape (N, {', '.join(map(str, self.input_shape))}); "
                             f"got shape {tuple(x.shape)}")
        if x.shape[0] == 0 and not allow_empty:
            raise InputError("empty batch: inputs have 0 rows")
        if tuple(x.shape[1:]) != self.input_shape:
            if rank == 2:
                raise ShapeError(
                    f"inputs have {x.shape[1]} features but the first layer, {self.layers[0].describe()}, "
                    f"expects {self.input_dim}"
                )
            raise ShapeError(f"inputs have samples of shape {tuple(x.shape[1:])} but the first layer, "
                             f"{self.layers[0].describe()}, expects {self.input_shape}")
        if x.dtype == self.dtype:
            return x
        largest = xp.finfo(self.dtype).max
        overflowed = int(xp.sum(xp.astype(xp.isfinite(x) & (xp.abs(x) > largest), xp.int32)))
        if overflowed:
            raise InputError(
                f"inputs hold {overflowed} finite value(s) too large for the model's {self.dtype_name} "
                f"(they would become inf); rescale the data or build the model with dtype='float64'"
            )
        return xp.astype(x, self.dtype)

    def prepare_targets(self, y: Any, n_rows: int, validate: bool = True) -> Array:
        """Targets checked against the model's output shape, converted once (labels → one-hot)."""
        loss = self._compiled_loss()
        targets = loss.prepare((n_rows, *self.output_shape), y, self.backend, self.dtype)
        if validate:
            loss.validate(targets, self.backend)
        return targets

    # -- passes ---------------------------------------------------------------------------
    def _exclusive(self, what: str) -> _StepGuard:
        """One training step at a time per model: a second thread gets a clear error, not a
        step that shares the first one's gradient and scratch buffers."""
        return _StepGuard(self._step_lock, what)

    def forward(self, x: Array, training: bool = False) -> Array:
        """ŷ for a prepared batch, in inference mode (dropout off, BatchNorm's running statistics)
        unless ``training=True``. A training pass is kept (for this thread) for a following
        ``backward``, and, as in PyTorch, it advances the model's state: BatchNorm's running
        statistics take in this batch and the next pass draws new dropout masks. The returned
        array is new and stays valid."""
        if not self.built:
            raise RuntimeError("the model is not built yet: give input_dim, or pass data through as_input first")
        if not training:
            if self._inference is None:
                self._inference = (self.backend.compile_forward(self.layers, self.table, self.state_table),)
            if self._inference[0] is not None:  # a compiled inference pass (JAX)
                return self._inference[0](self.flat_params, self.flat_state, x)
            return forward_pass(self.layers, self._views()[0], x, INFERENCE, [None] * len(self.layers))[0]
        with self._exclusive("forward(training=True)"):
            params, _ = self._views()
            output, tape = forward_pass(self.layers, params, x, self.training_context(), [None] * len(self.layers))
            self._thread.last_pass = (params, tape, output)
            self._advance(next_state(self.layers, self.state_table, params, tape, self.flat_state, self.backend.xp))
        return output

    def evaluation_pass(self, x: Array, y: Array) -> tuple[Array, Array]:
        """(loss, ŷ) of a prepared batch in inference mode, the loss computed as the training step
        computes it (``toolkit.engine.evaluation_pass``)."""
        engine = self._engine_for_training()
        if engine.evaluation is not None:  # compiled (JAX)
            return engine.evaluation(self.flat_params, self.flat_state, x, y)
        return evaluation_pass(engine.plan, self._views()[0], x, y, self.backend.xp)

    def _advance(self, new_state: Array | None) -> None:
        """After a committed training pass: keep the layers' new state, count the pass."""
        if new_state is not None:
            self.assign_state(new_state)
        self.random_step += 1

    def backward(self, y: Array) -> Array:
        """Backpropagate the loss of this thread's last training forward pass against prepared
        targets ``y``. Fills every parameter gradient (``flat_grads``) and returns the loss (0-d)."""
        last_pass = getattr(self._thread, "last_pass", None)
        if last_pass is None:
            raise RuntimeError("backward needs a forward pass with training=True first (in this thread)")
        params, tape, output = last_pass
        with self._exclusive("backward"):
            engine = self._engine_for_training()
            _, slots = self._views()
            no_scratch = [None] * len(self.layers)
            loss, grads = backward_pass(engine.plan, self.backend, params, tape, output, y, no_scratch, slots)
            self.flat_grads = engine.gather(self.flat_grads, grads, slots)
        return loss

    def _gradients(self, x: Array, y: Array, context: PassContext | None = None) -> tuple[Array, Array, Array | None]:
        """(loss, ŷ, the layers' new state or None) of one prepared batch, gradients in
        ``flat_grads``; the state is not kept (``_advance`` keeps it). ŷ may be a scratch
        buffer that the next step overwrites: internal callers use it at once (metrics)."""
        engine = self._engine_for_training()
        params, slots = self._views()
        context = self.training_context() if context is None else context
        lock = self._step_lock  # taken inline, not through _exclusive: this runs every step
        _take(lock, "compute_gradients")
        try:
            loss, output, self.flat_grads, new_state = engine.gradients(
                self.flat_params, self.flat_grads, self.flat_state, params, slots, x, y, context)
        finally:
            lock.release()
        return loss, output, new_state

    def compute_gradients(self, x: Array, y: Array) -> Array:
        """Forward and backward on a prepared batch, in training mode; returns the loss; no update
        of the parameters (the state advances as in ``forward(training=True)``)."""
        loss, _, new_state = self._gradients(x, y)
        self._advance(new_state)
        return loss

    def apply_gradients(self) -> None:
        """One optimizer step with the gradients in ``flat_grads``."""
        if self.optimizer is None:
            raise RuntimeError("call compile(loss=..., optimizer=...) before training")
        lock = self._step_lock
        _take(lock, "apply_gradients")
        try:
            self.flat_params = self.optimizer.step(self.flat_params, self.flat_grads)
        finally:
            lock.release()

    def _train_batch(self, x: Array, y: Array) -> tuple[Array, Array, Callable[[], None]]:
        """(loss, ŷ, commit): the step is computed and ``commit`` applies it; ``fit`` commits only
        when the loss is finite, so a diverging step leaves the weights as they were.

        Where the backend compiles whole steps (JAX), forward, backward and update are one call
        and commit only keeps its results; elsewhere commit is the optimizer step."""
        engine = self._engine_for_training()
        step = engine.step
        if step is None:
            loss, output, new_state = self._gradients(x, y)
            return loss, output, lambda: self._commit(new_state)
        optimizer = self.optimizer
        assert optimizer is not None  # an engine exists only for a compiled model
        rule, scalars = optimizer.rule(optimizer.iterations + 1)
        names = RULES[rule].state
        with self._exclusive("train_step"):
            loss, output, grads, params, state, layer_state = step(
                self.flat_params, tuple(optimizer.state[n] for n in names), self.flat_state, x, y,
                self.training_context().random_key, rule, scalars)

        def commit() -> None:
            optimizer.iterations += 1
            optimizer.state.update(zip(names, state, strict=True))
            self.flat_grads, self.flat_params = grads, params
            self._advance(layer_state if self.state_table.size else None)

        return loss, output, commit

    def _commit(self, new_state: Array | None) -> None:
        """Keep a computed step: the optimizer update with ``flat_grads``, then the new state."""
        self.apply_gradients()
        self._advance(new_state)

    def train_step(self, x: Any, y: Any) -> Array:
        """One step of gradient descent on one batch (inputs and targets checked); returns the loss."""
        x = self.as_input(x)
        y = self.prepare_targets(y, x.shape[0])
        loss, _, commit = self._train_batch(x, y)
        commit()
        return loss

    def predict(self, x: Any, batch_size: int | None = None) -> Array:
        """ŷ for inputs ``x`` (probabilities after sigmoid/softmax outputs), on the model's backend."""
        from .training import predict

        return predict(self, x, batch_size)

    def __call__(self, x: Any) -> Array:
        return self.forward(self.as_input(x))

    def fit(self, x: Any, y: Any = None, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            validation_data: Any = None, validation_split: float = 0.0,
            callbacks: Sequence[Callback] = (), verbose: int = 1, check_finite: bool = True,
            seed: int | None = None, distributed: DataParallel | None = None, steps_per_epoch: int | None = None,
            prefetch: int = 2, drop_remainder: bool = False) -> History:
        """Train on arrays ``(x, y)``, a ``toolkit.data.Dataset`` or a stream of ``(x, y)`` batches;
        see ``toolkit.training.fit`` for the arguments. Returns a ``History``."""
        from .training import fit

        return fit(self, x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                   validation_data=validation_data, validation_split=validation_split, callbacks=callbacks,
                   verbose=verbose, check_finite=check_finite, seed=seed, distributed=distributed,
                   steps_per_epoch=steps_per_epoch, prefetch=prefetch, drop_remainder=drop_remainder)

    def evaluate(self, x: Any, y: Any = None, batch_size: int | None = 256) -> dict[str, float]:
        """Loss and metrics on ``(x, y)``; see ``toolkit.training.evaluate``."""
        from .training import evaluate

        return evaluate(self, x, y, batch_size=batch_size)

    def export_onnx(self, path: str) -> Any:
        """Export as ONNX by running this model's own forward pass on ndonnx; see ``toolkit.export_onnx``."""
        from .interop import export_onnx

        return export_onnx(self, path)

    def get_config(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim if self.built else None,
            "input_shape": list(self.input_shape) if self.built else None,
            "dtype": self.dtype_name,
            "seed": self.seed,
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
        }

    def __repr__(self) -> str:
        lines = [f"Sequential(backend={self.backend.name!r}, dtype={self.dtype_name!r}) ["]
        lines += [f"  ({i}) {layer.describe()}" for i, layer in enumerate(self.layers)]
        return "\n".join([*lines, "]"])

    def summary(self, print_fn: Callable[[str], Any] | None = print) -> str:
        """Print a table of the layers (output shape, parameter count), the totals, the backend and
        the dtype, as Keras does; ``print_fn`` receives the text (None: only return it).

        Example:
            >>> from toolkit import Dense, Sequential
            >>> text = Sequential([Dense(4, activation="relu", input_dim=3), Dense(2)]).summary(print_fn=None)
            >>> text.splitlines()[-1]
            'Total params: 26 (trainable: 26, non-trainable: 0)'
        """
        rows = [("Layer", "Output shape", "Params")]

        def add(layers: Sequence[Layer], prefix: str, indent: str) -> None:
            for index, layer in enumerate(layers):
                count = sum(math.prod(shape) for shape in layer.param_shapes().values()) if self.built else 0
                shape = f"(None, {', '.join(map(str, layer.output_shape))})" if self.built else "?"
                name = type(layer).__name__ if layer.sublayers() else layer.describe()  # a block: its layers follow
                rows.append((f"{indent}{prefix}{index}: {name}", shape, f"{count:,}"))
                add(layer.sublayers(), f"{prefix}{index}.", indent + "  ")

        add(self.layers, "", "")
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        rule = "─" * (sum(widths) + 4)

        def line(row: tuple[str, str, str]) -> str:
            return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"

        trainable = self.table.size if self.built else 0
        fixed = self.state_table.size if self.built else 0  # running statistics, as Keras counts them
        text = "\n".join([f'Sequential on backend "{self.backend.name}", dtype {self.dtype_name}', rule, line(rows[0]),
                          rule, *(line(row) for row in rows[1:]), rule,
                          f"Total params: {trainable + fixed:,} (trainable: {trainable:,}, non-trainable: {fixed:,})",
                          "" if self.built else "(not built yet: give input_dim or input_shape)", ""]).rstrip() + "\n"
        if print_fn is not None:
            print_fn(text.rstrip("\n"))
        return text
