"""What a network is: a stack of layers, the state it owns (flat parameter and gradient buffers,
the layers' state), how data enters it, and its inference pass (run by ``toolkit.engine``).

How a network trains (loss, optimizer, the training step, ``fit``) is ``toolkit.trainer``, which
depends on this module and never the reverse; ``toolkit.model.Sequential`` joins the two.

All parameters live in one flat array and all gradients in another (``toolkit.parameters``); the
network hands each layer its slices at every pass. State changes only by replacing a buffer through
``Backend.assign`` (a copy into the existing buffer on mutable backends, the new array on JAX).
"""

from __future__ import annotations

import math
import secrets
import textwrap
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .backend import Backend
from .config import get_backend, load_backend
from .context import INFERENCE, TRAINING, PassContext
from .engine import Plan, forward_pass, make_plan
from .errors import InputError, ShapeError
from .layers import Layer
from .layers.base import every_layer, layer_record
from .layers.embedding import check_token_inputs
from .losses import Loss
from .ops.random import step_key
from .parameters import ParameterTable
from .validation import check_int, check_seed

Array = Any


SUMMARY_WIDTH = 80  # columns of ``summary()``'s table


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




def _claim(layers: Sequence[Layer], model: object) -> None:
    """Make ``model`` the owner of its layers (nested ones too). A layer computes with the backend,
    shapes and parameter slots of one model, so a layer object that is in another live model, or
    twice in this one, is refused here rather than failing later inside the array library."""
    every = every_layer(layers)
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




class Network:
    """A feed-forward stack of layers ``ŷ = f_L(… f_2(f_1(x)))``: its structure and state.

    Args: as ``toolkit.Sequential``, which adds training (``toolkit.trainer.Trainer``) to it.
    """

    def __init__(
        self,
        layers: Iterable[Layer] = (),
        input_dim: int | None = None,
        dtype: str = "float32",
        seed: int = 0,
        backend: str | Backend | None = None,
        input_shape: tuple[int, ...] | int | None = None,
    ) -> None:
        self.layers: list[Layer] = list(layers)
        kind = type(self).__name__
        if any(not isinstance(layer, Layer) for layer in self.layers):
            raise InputError(f"{kind} takes layers; got {[type(layer).__name__ for layer in self.layers]}")
        _claim(self.layers, self)
        self.backend: Backend = get_backend() if backend is None else load_backend(backend)
        self.policy = dtype
        self.compute_dtype: Any = None  # the low-precision dtype of a mixed policy, else None
        if isinstance(dtype, str) and dtype.startswith("mixed_"):
            low = dtype[len("mixed_"):]
            if low not in self.backend.low_precision:
                having = [name for name in ("torch", "jax", "cupy") if name != self.backend.name]
                raise InputError(
                    f"dtype={dtype!r} needs {low} arithmetic, which backend {self.backend.name!r} does not have "
                    f"({'NumPy has no bfloat16' if low == 'bfloat16' else 'it has no ' + low + ' kernels'}); "
                    f"mixed precision runs on {', '.join(having)} (mixed_float16 on cupy), or use dtype='float32'")
            self.compute_dtype = self.backend.dtype(low)
            dtype = "float32"  # the master weights and the optimizer's state
        self.dtype = self.backend.dtype(dtype)
        self.dtype_name = dtype
        self.seed = check_seed(seed)
        self.built = False
        self._views_for: Any = None
        self._state_views_for: Any = None
        # The dropout masks are keyed by (random_seed, random_step): the network's seed (or a fresh
        # one when it has none) and the number of training passes so far. Checkpoints keep both.
        self.random_seed = self.seed if self.seed is not None else secrets.randbits(32)
        self.random_step = 0
        if input_dim is not None and input_shape is not None:
            raise InputError("give input_dim or input_shape, not both")
        declared = input_shape if input_shape is not None else input_dim
        if declared is None and self.layers:
            declared = self._declared_by_first_layer()
        if declared is not None:
            self.build(declared)

    def _declared_by_first_layer(self) -> Any:
        first = self.layers[0]
        return getattr(first, "declared_input_shape", None) or getattr(first, "declared_input_dim", None)

    def add(self, layer: Layer) -> None:
        """Append ``layer`` (Keras' ``Sequential().add``). A model that is already built is built
        again for the new last layer: the earlier layers keep their weights and state, the new one
        draws its initial weights.

        Example:
            >>> from toolkit import Dense, Sequential
            >>> model = Sequential()
            >>> model.add(Dense(8, activation="relu", input_shape=(4,)))
            >>> model.add(Dense(3, activation="softmax"))
            >>> model.output_shape
            (3,)
        """
        if not isinstance(layer, Layer):
            raise InputError(f"add takes a layer; got {type(layer).__name__}")
        _claim([*self.layers, layer], self)
        self.layers.append(layer)
        if self.built:
            weights, state = self.get_weights(), self.get_state()
            try:
                self.build(self.input_shape)
            except Exception:
                self.layers.pop()  # a layer that does not fit leaves the model as it was
                layer.__dict__.pop("_owner", None)
                self.build(self.input_shape)
                self.set_weights(weights)
                self.set_state(state)
                raise
            self.set_weights({**self.get_weights(), **weights})  # the earlier layers' names are unchanged
            self.set_state({**self.get_state(), **state})
        elif len(self.layers) == 1 and (declared := self._declared_by_first_layer()) is not None:
            self.build(declared)

    def build(self, input_shape: int | tuple[int, ...]) -> None:
        """Fix the layer shapes, lay out the flat buffers and draw the initial weights.

        ``input_shape`` is one sample's shape without the batch axis; an int n means ``(n,)``."""
        if isinstance(input_shape, (tuple, list)):
            shape: tuple[int, ...] = tuple(check_int("input_shape", size, 1) for size in input_shape)
            if not shape:
                raise InputError("input_shape must name at least one axis")
        else:
            shape = (check_int("input_dim", input_shape, 1),)
        if not self.layers:
            raise InputError(f"{type(self).__name__} has no layers yet: add some (model.add(Dense(...))) first")
        self.input_shape = shape
        check_token_inputs(self.layers)
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
        if table.size and backend.mutable:  # the buffers a model keeps come from ``backend.zeros`` (huge pages on CPUs)
            self.flat_params = backend.assign(backend.zeros(table.size, self.dtype), self.flat_params)
        # Non-trainable state (BatchNorm's running statistics): no optimizer sees it.
        self.flat_state = (state_table.flatten(initial_state, backend.xp) if state_table.size
                           else backend.zeros(0, self.dtype))
        every = every_layer(self.layers)
        self._uses_random = any(layer.draws_random for layer in every)
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
        self._inference: tuple[Any] | None = None  # (compiled inference pass or None,), made on first use
        self._views_for = None

    def use_reduction_buffer(self, buffer: Array) -> None:
        """Keep the gradients, and the loss slot after them, in ``buffer`` from now on: the buffer a
        data-parallel engine reduces fastest (``DataParallel.prepare``). It must match
        ``reduction_buffer``'s size and dtype; the current contents are the caller's to copy."""
        if buffer is self.reduction_buffer:
            return
        if self.reduction_buffer is None or buffer.shape != self.reduction_buffer.shape \
                or buffer.dtype != self.reduction_buffer.dtype:
            raise InputError(f"a reduction buffer must match the model's ({self.table.size + 1} values of {self.dtype})")
        self.reduction_buffer = buffer
        self.flat_grads = buffer[: self.table.size]
        self._views_for = None  # the gradient slots are cut from the new buffer at the next pass

    def plan(self, loss: Loss) -> Plan:
        """The gradient pass of this network under ``loss`` (``toolkit.engine.Plan``)."""
        return make_plan(self.layers, self.table, self.state_table, loss, self.dtype)

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

    def step_keys(self, count: int) -> list[int]:
        """The dropout keys of this model's next ``count`` training passes (0 when nothing draws)."""
        if not self._uses_random:
            return [0] * count
        return [step_key(self.random_seed, self.random_step + i) for i in range(count)]

    def training_context(self, **distributed: Any) -> PassContext:
        """The context of this model's next training pass (its dropout key)."""
        if not self._uses_random and not distributed:
            return TRAINING  # nothing to key: one shared context, not a new one per step
        return PassContext(training=True, random_key=self.step_keys(1)[0], **distributed)

    def _owner_of(self, slot: Any) -> Layer:
        """The (possibly nested) layer a parameter slot belongs to: slot "3.1.W" is layer 1 of block 3."""
        layer, parts = self.layers[slot.layer], slot.name.split(".")
        while len(parts) > 1:
            layer, parts = layer.sublayers()[int(parts[0])], parts[1:]
        return layer

    def frozen_segments(self) -> tuple[tuple[int, int], ...]:
        """(offset, size) in the flat parameters of every parameter of a frozen layer (``trainable = False``)."""
        if not self.built:
            return ()
        return tuple((slot.offset, slot.size) for slot in self.table.slots if not self._owner_of(slot).trainable)

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
        if self.takes_token_ids:
            return self._as_token_ids(x, dtype_name, allow_empty)
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


    @property
    def takes_token_ids(self) -> bool:
        """True when the first layer (an ``Embedding``) reads integer token ids."""
        return bool(getattr(self.layers[0], "takes_token_ids", False))

    def _as_token_ids(self, x: Array, dtype_name: str, allow_empty: bool) -> Array:
        """Token ids (N, T) as an int64 array of the model's backend, every id checked."""
        xp, first = self.backend.xp, self.layers[0]
        if not xp.isdtype(x.dtype, "integral"):
            raise InputError(f"the first layer, {first.describe()}, takes integer token ids; got inputs of dtype "
                             f"{dtype_name} (convert with x.astype('int64') if they are whole numbers)")
        if x.ndim != 2:
            raise ShapeError(f"{first.describe()} takes token ids of shape (N, T); got shape {tuple(x.shape)}"
                             + (" (add a batch axis: x[None, :])" if x.ndim == 1 else ""))
        if not self.built:
            self.build((int(x.shape[1]),))
        if x.shape[0] == 0 and not allow_empty:
            raise InputError("empty batch: inputs have 0 rows")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(f"inputs are sequences of length {x.shape[1]} but the model, starting with "
                             f"{first.describe()}, was built for length {self.input_shape[0]}: cut or pad them to "
                             f"{self.input_shape[0]} tokens")
        if x.shape[0]:
            first.check_ids(x, xp)  # type: ignore[attr-defined]
        return x if x.dtype == xp.int64 else xp.astype(x, xp.int64)

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        """ŷ for a prepared batch in inference mode (dropout off, BatchNorm's running statistics);
        the returned array is new and stays valid. Keeps nothing on the network, so it may run in
        any thread."""
        if not self.built:
            raise RuntimeError("the model is not built yet: give input_dim, or pass data through as_input first")
        if self._inference is None:
            self._inference = (self.backend.compile_forward(self.layers, self.table, self.state_table),)
        if self._inference[0] is not None:  # a compiled inference pass (JAX)
            return self._inference[0](self.flat_params, self.flat_state, x)
        return forward_pass(self.layers, self._views()[0], x, INFERENCE, [None] * len(self.layers))[0]

    def _advance(self, new_state: Array | None, passes: int = 1) -> None:
        """After committed training passes: keep the layers' new state, count the passes."""
        if new_state is not None:
            self.assign_state(new_state)
        self.random_step += passes

    def get_config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "input_dim": self.input_dim if self.built else None,
            "input_shape": list(self.input_shape) if self.built else None,
            "dtype": self.policy,
            "seed": self.seed,
            "layers": [layer_record(layer) for layer in self.layers],
        }

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}(backend={self.backend.name!r}, dtype={self.dtype_name!r}) ["]
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
        # 80 columns at most: a long layer description wraps between its arguments.
        widths[0] = max(min(widths[0], SUMMARY_WIDTH - 4 - widths[1] - widths[2]), len(rows[0][0]))
        rule = "─" * (sum(widths) + 4)

        def line(row: tuple[str, str, str]) -> str:
            indent = " " * (len(row[0]) - len(row[0].lstrip()) + 4)
            names = textwrap.wrap(row[0], widths[0], subsequent_indent=indent, break_on_hyphens=False) or [""]
            first = f"{names[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"
            return "\n".join([first.rstrip(), *names[1:]])

        frozen = sum(size for _, size in self.frozen_segments())  # frozen weights, as Keras counts them
        trainable = self.table.size - frozen if self.built else 0
        fixed = self.state_table.size + frozen if self.built else 0  # and running statistics
        text = "\n".join([f'{type(self).__name__} on backend "{self.backend.name}", dtype {self.dtype_name}', rule,
                          line(rows[0]),
                          rule, *(line(row) for row in rows[1:]), rule,
                          f"Total params: {trainable + fixed:,} (trainable: {trainable:,}, non-trainable: {fixed:,})",
                          "" if self.built else "(not built yet: give input_dim or input_shape)", ""]).rstrip() + "\n"
        if print_fn is not None:
            print_fn(text.rstrip("\n"))
        return text

