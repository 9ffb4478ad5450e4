"""How a network trains: ``compile`` (loss, optimizer, metrics), the step lock, the gradient
pass and the optimizer step, ``train_step``, and ``fit``/``evaluate``/``predict``
(the loops are ``toolkit.training``).

``Trainer`` is mixed into a network container (``toolkit.model.Sequential`` is
``Trainer`` + ``toolkit.network.Network``). It reads the network only through the attributes and
methods listed on the class: the flat buffers, their per-layer views, the network's
``plan(loss)`` of a gradient pass and its inference ``forward``; so another container (a graph of
layers) reuses it unchanged. Nothing here imports a container module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .backend import Backend
from .context import PassContext
from .deferred import defer, is_deferred, stored
from .engine import Engine, Plan, backward_pass, evaluation_pass, forward_pass, gradient_pass, next_state
from .errors import InputError, ToolkitError
from .layers import Layer
from .layers import base as layers_base
from .losses import Loss, get_loss
from .metrics import Metric, get_metric
from .ops.optim import RULES
from .optimizers import Optimizer, get_optimizer
from .parameters import ParameterTable
from .validation import check_int

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




def _check_binary_metrics(metrics: Sequence[Metric], output_shape: tuple[int, ...]) -> None:
    """Refuse yes/no metrics (precision, recall, f1) on a model that does not have one output per
    sample, when the model's shape is known (compile, or the build in the first fit)."""
    binary = [metric.name for metric in metrics if metric.binary_only]
    if binary and tuple(output_shape) != (1,):
        raise InputError(
            f"{', '.join(binary)} "
            f"{'counts yes/no predictions, so it needs' if len(binary) == 1 else 'count yes/no predictions, so they need'} "
            "a model with one output per sample "
            f"(Dense(1, activation='sigmoid')); this model's outputs have shape {tuple(output_shape)}. For several "
            "classes use metrics=['accuracy'], or compute per-class scores from predict() (e.g. scikit-learn's "
            "classification_report)")


class _StepGuard:
    """``with _StepGuard(lock, what):`` holds ``lock`` for the block (``_take`` on entry)."""

    __slots__ = ("lock", "what")

    def __init__(self, lock: Any, what: str) -> None:
        self.lock, self.what = lock, what

    def __enter__(self) -> None:
        _take(self.lock, self.what)

    def __exit__(self, *exc_info: Any) -> None:
        self.lock.release()




class Trainer:
    """Training for a network container: compile, then ``fit``/``evaluate``/``predict``,
    ``train_step``, or a hand-written loop of ``compute_gradients`` and ``apply_gradients``.

    Thread safety: ``predict``, ``evaluate`` and ``forward(training=False)`` keep nothing on the
    model (each call counts its metrics into its own copies) and may run in any thread, also while
    another thread trains (they then see the weights of some step). Training steps (``fit``,
    ``train_step``, ``compute_gradients``, ``backward``) on one model from two threads at once are
    refused with a ``ToolkitError``.
    """

    # What the training side reads of the network it is mixed into (``toolkit.network.Network``).
    # Annotations only: the network's own attributes and methods are the ones found.
    backend: Backend
    dtype: Any
    built: bool
    layers: list[Layer]
    table: ParameterTable
    state_table: ParameterTable
    output_shape: tuple[int, ...]
    # After a compiled step (JAX) these two are deferred: made from its per-tensor results when read (``_StepCarry``).
    flat_params: Array
    flat_grads: Array
    flat_state: Array
    reduction_buffer: Array | None
    synchronized_layers: list[Layer]
    random_seed: int
    random_step: int
    plan: Callable[[Loss], Plan]
    compute_dtype: Any
    policy: str
    frozen_segments: Callable[[], tuple[tuple[int, int], ...]]
    as_input: Callable[..., Array]
    training_context: Callable[..., PassContext]
    _views: Callable[[], tuple[list[dict[str, Array]], list[dict[str, Array]]]]
    _advance: Callable[..., None]
    step_keys: Callable[[int], list[int]]
    assign_state: Callable[[Array], None]
    assign_params: Callable[[Array], None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loss: Loss | None = None
        self.gradient_accumulation_steps = 1
        self.steps_per_execution = 1
        self.optimizer: Optimizer | None = None
        self.metrics: list[Metric] = []  # templates: every call counts into its own copies
        self.stop_training = False
        self.is_main = True  # False on the other ranks of a data-parallel run
        self.epochs_completed = 0  # whole epochs fit has run: each epoch's shuffle order depends on it
        self.history: History | None = None  # the last fit's, as Keras keeps it
        self._engine: Engine | None = None
        self._carry: _StepCarry | None = None  # a compiled step's own layout of the newest values
        self._step_lock = threading.Lock()
        self._frozen_for: tuple[int, Any, Any] = (-1, None, None)  # (layers' trainable version, table, mask)
        self._good_steps = 0  # float16 steps since the loss scale last changed
        self._thread = threading.local()  # the tape of a hand-written forward(training=True), per thread
        super().__init__(*args, **kwargs)  # the network (it may build at once)
        self.loss_scale = self.LOSS_SCALE_START if self.policy == "mixed_float16" else 1.0

    def build(self, input_shape: int | tuple[int, ...]) -> None:
        """Build the network (``toolkit.network.Network.build``), then bind a compiled optimizer to
        its new parameters."""
        super().build(input_shape)  # type: ignore[misc]
        _check_binary_metrics(self.metrics, self.output_shape)
        self._engine = None
        if self.optimizer is not None:
            self.optimizer.bind(self.flat_params, self.backend, owner=self)

    def add(self, layer: Layer) -> None:
        """Append a layer (``toolkit.network.Network.add``); refused once training has started, when
        the optimizer's moments would no longer match the parameters."""
        if self.optimizer is not None and self.optimizer.iterations:
            raise InputError("this model has trained already; add layers before the first training step "
                             "(or build a new Sequential and copy weights with get_weights/set_weights)")
        super().add(layer)  # type: ignore[misc]

    def compile(self, loss: str | Loss, optimizer: str | Optimizer = "sgd", metrics: Sequence[Any] | str = (),
                gradient_accumulation_steps: int = 1, steps_per_execution: int = 1) -> None:
        """Choose the loss, the optimizer and the metrics reported by ``fit``/``evaluate``.

        ``gradient_accumulation_steps=k`` (Keras' name): ``fit`` averages the gradients of k batches
        and updates once, equal to one batch k times as large (dropout masks are drawn by the row's
        place in the whole step; BatchNorm's statistics are each batch's own, as in Keras and PyTorch).

        ``steps_per_execution=k`` (Keras' name): where the backend compiles whole steps (JAX), ``fit``
        runs each k consecutive steps of equal batches as one program, so a small model does not pay
        one dispatch from Python per step. The run is the same as with k = 1: the same steps, losses,
        metrics and dropout masks (to rounding), and a non-finite loss still stops training with the
        weights from before that step. ``fit`` takes its steps one by one while a callback watches
        batches (``on_train_batch_begin``/``_end``), or with gradient accumulation, data-parallel
        training or mixed precision; other backends always do.

        An optimizer instance belongs to one model; passing one that trains another live model
        is an ``InputError``."""
        accumulation = check_int("gradient_accumulation_steps", gradient_accumulation_steps, 1)
        grouped = check_int("steps_per_execution", steps_per_execution, 1)
        new_loss = get_loss(loss)
        new_optimizer = get_optimizer(optimizer)
        if isinstance(metrics, (str, Metric)):  # Keras accepts metrics="accuracy"
            metrics = [metrics]
        new_metrics = [get_metric(m) for m in metrics]
        if self.built:
            _check_binary_metrics(new_metrics, self.output_shape)
            new_optimizer.bind(self.flat_params, self.backend, owner=self)
        self.loss, self.optimizer, self.metrics = new_loss, new_optimizer, new_metrics
        self.gradient_accumulation_steps = accumulation
        self.steps_per_execution = grouped
        self._engine = None
        self._frozen_for = (-1, None, None)  # the new optimizer learns which parameters are frozen

    def _compiled_loss(self) -> Loss:
        """The loss given to ``compile``; training and evaluating need it."""
        if self.loss is None:
            raise RuntimeError("call compile(loss=..., optimizer=...) before training or evaluating")
        return self.loss

    def _engine_for_training(self) -> Engine:
        """The engine of this model's plan, made on first use after each build/compile."""
        if self._engine is None:
            self._engine = Engine(self.plan(self._compiled_loss()), self.backend)
        return self._engine


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
        if not training:
            return super().forward(x)  # type: ignore[misc]
        if not self.built:
            raise RuntimeError("the model is not built yet: give input_dim, or pass data through as_input first")
        with self._exclusive("forward(training=True)"):
            params, _ = self._views()
            output, tape = forward_pass(self.layers, params, x, self.training_context(), [None] * len(self.layers))
            self._thread.last_pass = (params, tape, output)
            self._advance(next_state(self.layers, self.state_table, params, tape, self.flat_state, self.backend.xp))
        return output

    def evaluation_pass(self, x: Array, y: Array) -> tuple[Array, Array]:
        """(loss, ŷ) of a prepared batch in inference mode, the loss computed as the training step
        computes it (``toolkit.engine.evaluation_pass``)."""
        return evaluation_pass(self._engine_for_training().plan, self._views()[0], x, y, self.backend.xp)


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
        context = self.training_context() if context is None else context
        lock = self._step_lock  # taken inline, not through _exclusive: this runs every step
        _take(lock, "compute_gradients")
        try:
            if self.compute_dtype is not None:
                return self._mixed_precision_gradients(engine, x, y, context)
            params, slots = self._views()
            loss, output, self.flat_grads, new_state = engine.gradients(
                self.flat_params, self.flat_grads, self.flat_state, params, slots, x, y, context)
        finally:
            lock.release()
        return loss, output, new_state

    def _mixed_precision_gradients(self, engine: Engine, x: Array, y: Array,
                                   context: PassContext) -> tuple[Array, Array, Array | None]:
        """A mixed policy's pass: forward and backward in the compute dtype on cast copies of the
        float32 weights (and of the inputs, targets and state), the gradients cast back to float32 and
        divided by the loss scale (float16: the loss is scaled so that small gradients do not underflow)."""
        xp, backend, low = self.backend.xp, self.backend, self.compute_dtype
        params_low, state_low = xp.astype(self.flat_params, low), xp.astype(self.flat_state, low)
        views = self.table.views_with(self.state_table, params_low, state_low, xp)
        inputs = xp.astype(x, low) if xp.isdtype(x.dtype, "real floating") else x  # token ids stay integers
        with backend.quiet():
            loss, output, grads, new_state = gradient_pass(
                engine.plan, backend, views, inputs, xp.astype(y, low), context, [None] * len(self.layers),
                [{} for _ in self.layers], state_low if self.state_table.size else None, self.loss_scale)
        flat = xp.astype(self.table.gather(grads, params_low, xp), self.dtype)
        self.flat_grads = backend.assign(self.flat_grads, flat / self.loss_scale if self.loss_scale != 1.0 else flat)
        new_state = None if new_state is None else xp.astype(new_state, self.dtype)
        return xp.astype(loss, self.dtype), xp.astype(output, self.dtype), new_state

    def compute_gradients(self, x: Array, y: Array) -> Array:
        """Forward and backward on a prepared batch, in training mode; returns the loss; no update
        of the parameters (the state advances as in ``forward(training=True)``)."""
        loss, _, new_state = self._gradients(x, y)
        self._advance(new_state)
        return loss

    def _frozen_mask(self) -> Array | None:
        """A boolean mask over the flat parameters, True where the layer is frozen, or None when none
        is; recomputed (and handed to the optimizer) only when some layer's ``trainable`` changed, or
        the model was rebuilt (one integer and one identity compared per step)."""
        version = layers_base.TRAINABLE_VERSION
        if self._frozen_for[0] != version or self._frozen_for[1] is not getattr(self, "table", None):
            segments = self.frozen_segments()
            mask = None
            if segments:
                if sum(size for _, size in segments) == self.table.size:
                    raise InputError("every layer is frozen (trainable=False), so fit would change nothing; set "
                                     "trainable = True on the layers to train")
                host = [False] * self.table.size
                for offset, size in segments:
                    host[offset : offset + size] = [True] * size
                mask = self.backend.asarray(host)
            self._frozen_for = (version, self.table, mask)
            if self.optimizer is not None:
                self.optimizer.frozen = mask
        return self._frozen_for[2]

    def apply_gradients(self) -> None:
        """One optimizer step with the gradients in ``flat_grads``."""
        if self.optimizer is None:
            raise RuntimeError("call compile(loss=..., optimizer=...) before training")
        lock = self._step_lock
        _take(lock, "apply_gradients")
        try:
            frozen = self._frozen_for
            if frozen[0] != layers_base.TRAINABLE_VERSION or frozen[1] is not self.table:
                self._frozen_mask()  # gives the optimizer the new mask
            self.flat_params = self.optimizer.step(self.flat_params, self.flat_grads)
        finally:
            lock.release()

    def _train_batch(self, x: Array, y: Array, with_output: bool = True) -> tuple[Array, Array, Callable[[], None]]:
        """(loss, ŷ, commit): the step is computed and ``commit`` applies it; ``fit`` commits only
        when the loss is finite, so a diverging step leaves the weights as they were.

        Where the backend compiles whole steps (JAX), forward, backward and update are one call
        and commit only keeps its results; elsewhere commit is the optimizer step. ``with_output``
        False: the caller does not use ŷ, and a compiled step may return None for it."""
        engine = self._engine_for_training()
        step = engine.step
        if self.compute_dtype is not None:
            return self._mixed_precision_step(x, y)
        if step is None:
            loss, output, new_state = self._gradients(x, y)
            return loss, output, lambda: self._commit(new_state)
        optimizer = self.optimizer
        assert optimizer is not None  # an engine exists only for a compiled model
        frozen = self._frozen_mask()
        rule, scalars = optimizer.prepare(optimizer.iterations + 1)
        names = RULES[rule].state
        with self._exclusive("train_step"):
            params, state = self._step_inputs(step, optimizer, names)
            layer_state, key = self.flat_state, self.training_context().random_key
            loss, output, new_params, new_state, new_layer_state = step(
                params, state, layer_state, x, y, key, rule, scalars,
                optimizer.compiled_clipping, frozen, with_output)

        def commit() -> None:
            optimizer.iterations += 1
            self._carry = _StepCarry(self, optimizer, step, names, new_params, new_state,
                                     lambda: step.gradients_of(params, layer_state, x, y, key))
            self._advance(new_layer_state)

        return loss, output, commit

    def _steps_per_program(self) -> int:
        """How many steps ``_train_steps`` runs as one program: ``steps_per_execution`` where the
        backend's compiled step can run several (``step.many``) and no mixed precision wraps it, else 1."""
        step = self._engine_for_training().step
        if self.compute_dtype is not None or not hasattr(step, "many"):
            return 1
        return self.steps_per_execution

    def _train_steps(self, xs: Array, ys: Array, with_output: bool) -> tuple[Array, Array | None, Callable[[], None]]:
        """(losses, ŷ stacked or None, commit) of consecutive steps on the batches xs[0], xs[1], …
        (stacked: (steps, rows, …)) run as one program, where ``_steps_per_program()`` > 1. Nothing
        changes before ``commit``: ``fit`` reads the losses first, and on a non-finite one takes the
        steps again one by one, so that training stops exactly where it would have."""
        step = self._engine_for_training().step
        optimizer = self.optimizer
        assert optimizer is not None  # an engine exists only for a compiled model
        count, lr = xs.shape[0], optimizer.lr
        frozen = self._frozen_mask()
        try:  # each step's scalars; a schedule sets lr as it goes, as count single steps would leave it
            prepared = [optimizer.prepare(optimizer.iterations + 1 + i) for i in range(count)]
            rule, names, keys = prepared[0][0], RULES[prepared[0][0]].state, self.step_keys(count)
            with self._exclusive("train_step"):
                params, state = self._step_inputs(step, optimizer, names)
                losses, outputs, new_params, new_state, new_layer_state, last_params, last_layer_state = step.many(
                    params, state, self.flat_state, xs, ys, keys, rule, [s for _, s in prepared],
                    optimizer.compiled_clipping, frozen, with_output)
        except Exception:  # a failed call leaves the model as it was
            optimizer.lr = lr
            raise

        def commit() -> None:
            optimizer.iterations += count
            self._carry = _StepCarry(self, optimizer, step, names, new_params, new_state,
                                     lambda: step.gradients_of(last_params, last_layer_state, xs[-1], ys[-1], keys[-1]))
            self._advance(new_layer_state, count)

        return losses, outputs, commit

    def _step_inputs(self, step: Any, optimizer: Optimizer, names: tuple[str, ...]) -> tuple[Any, tuple[Any, ...]]:
        """The parameters and optimizer state in the compiled step's layout: the last step's own
        results while nothing has replaced them, else split from the flat buffers (the first
        step, and after ``set_weights``, a checkpoint load, a hand-written update…)."""
        carry = self._carry
        if carry is not None and carry.step is step and carry.names == names:
            params = carry.params if carry.params_current(self) else step.split(self.flat_params)
            if carry.state_current(optimizer):
                return params, carry.state
        else:
            params = step.split(self.flat_params)
        return params, tuple(step.split(optimizer.state[name]) for name in names)

    # float16 loss scaling, PyTorch's GradScaler defaults: start at 2¹⁶, halve on a step whose gradients
    # overflow (that step is skipped), double after 2000 steps in a row without overflow.
    LOSS_SCALE_START, LOSS_SCALE_GROWTH_INTERVAL = 2.0**16, 2000

    def _mixed_precision_step(self, x: Array, y: Array) -> tuple[Array, Array, Callable[[], None]]:
        loss, output, new_state = self._gradients(x, y)
        if self.loss_scale == 1.0:  # bfloat16: float32's range, no scaling
            return loss, output, lambda: self._commit(new_state)
        xp = self.backend.xp
        finite = bool(xp.all(xp.isfinite(self.flat_grads)))  # one read per step: float16 needs it

        def commit() -> None:
            if not finite:  # skipped, as GradScaler skips it; the next step draws new masks
                self.loss_scale /= 2.0
                self._good_steps = 0
                self._advance(new_state)
                return
            self._commit(new_state)
            self._good_steps += 1
            if self._good_steps == self.LOSS_SCALE_GROWTH_INTERVAL:
                self.loss_scale *= 2.0
                self._good_steps = 0

        return loss, output, commit

    def _commit(self, new_state: Array | None) -> None:
        """Keep a computed step: the optimizer update with ``flat_grads``, then the new state."""
        self.apply_gradients()
        self._advance(new_state)

    def train_step(self, x: Any, y: Any) -> Array:
        """One step of gradient descent on one batch (inputs and targets checked); returns the loss."""
        x = self.as_input(x)
        y = self.prepare_targets(y, x.shape[0])
        loss, _, commit = self._train_batch(x, y, with_output=False)
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
            prefetch: int = 2, drop_remainder: bool = False, initial_epoch: int = 0,
            class_weight: dict[int, float] | None = None, sample_weight: Any = None) -> History:
        """Train on arrays ``(x, y)``, a ``toolkit.data.Dataset`` or a stream of ``(x, y)`` batches;
        see ``toolkit.training.fit`` for the arguments. Returns a ``History``."""
        from .training import fit

        return fit(self, x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                   validation_data=validation_data, validation_split=validation_split, callbacks=callbacks,
                   verbose=verbose, check_finite=check_finite, seed=seed, distributed=distributed,
                   steps_per_epoch=steps_per_epoch, prefetch=prefetch, drop_remainder=drop_remainder,
                   initial_epoch=initial_epoch, class_weight=class_weight, sample_weight=sample_weight)

    def evaluate(self, x: Any, y: Any = None, batch_size: int | None = 256,
                 return_dict: bool = True) -> dict[str, float] | float | list[float]:
        """Loss and metrics on ``(x, y)``; see ``toolkit.training.evaluate``. A dict
        ``{"loss": …, "accuracy": …}`` by default; ``return_dict=False`` gives Keras' default form:
        ``[loss, *metrics]`` in ``compile``'s order, or the loss alone when there are no metrics."""
        from .training import evaluate

        results = evaluate(self, x, y, batch_size=batch_size)
        if return_dict:
            return results
        values = list(results.values())  # "loss" first, then the metrics in compile's order
        return values[0] if len(values) == 1 else values


class _StepCarry:
    """What a compiled step returned, in its own layout (``Backend.compile_step``), held by the model
    until the next step takes it back, and deferred into the model's flat buffers (``flat_params``,
    ``flat_grads``, the optimizer's ``state``), which are made from it only when read.

    The next step may take the parameters back while ``flat_params`` is still deferred or is the
    array made from them (a read leaves the values as they are; JAX arrays are immutable); it may take
    the optimizer state back only while ``state`` has not been read, since whoever reads that dict
    may write into it."""

    def __init__(self, model: Trainer, optimizer: Optimizer, step: Any, names: tuple[str, ...], params: Any,
                 state: tuple[Any, ...], gradients: Callable[[], Any]) -> None:
        self.step, self.names, self.params, self.state = step, names, params, state
        self.made_params: Any = None
        join = step.join

        def make_params() -> Any:
            self.made_params = join(params)
            return self.made_params

        defer(model, "flat_params", make_params)
        defer(model, "flat_grads", lambda: join(gradients()))  # computed again from the step's inputs
        current = stored(optimizer, "state", {})  # its other entries, without making them
        defer(optimizer, "state", lambda: {**current, **{n: join(s) for n, s in zip(names, state, strict=True)}})

    def params_current(self, model: Trainer) -> bool:
        return is_deferred(model, "flat_params") or (self.made_params is not None
                                                     and stored(model, "flat_params") is self.made_params)

    def state_current(self, optimizer: Optimizer) -> bool:
        return is_deferred(optimizer, "state")
