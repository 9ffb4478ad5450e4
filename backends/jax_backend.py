"""JAX backend: immutable arrays, and whole training steps compiled by ``jax.jit``.

JAX arrays cannot be written in place, so this backend sets ``mutable = False``: the model replaces
its flat buffers after each step instead of writing into them (``Backend.assign`` returns the new
array), and every op returns new arrays (the references of ``toolkit.ops``). For speed, the
toolkit's own pass — the engine's forward loop, the δ terms, the layers' explicit backward, and the
optimizer's update rule, not ``jax.grad`` — is traced once per model and batch shape and compiled
into one XLA program (``compile_step``); ``compile_pass`` compiles the gradient pass alone, for
``compute_gradients``, data-parallel and hand-written loops.

``jax`` (CPU, the default) or ``jax:gpu`` / ``jax:gpu:1`` / ``jax:cuda``. Loading it turns on
``jax_enable_x64`` for the process, so float64 models are float64 (JAX's default is 32-bit only).
"""

from __future__ import annotations

import ctypes
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from toolkit.backend import Backend
from toolkit.context import INFERENCE, PassContext
from toolkit.engine import Plan, forward_pass, gradient_pass
from toolkit.errors import BackendError
from toolkit.layers import Layer
from toolkit.ops.activations import ActivationFunction
from toolkit.ops.optim import RULES, SETTINGS, ZERO, clip_gradients, unfrozen

from . import allocator
from .host import HostRandom, host_array

# Compiled functions by the computation they trace (layer and loss settings, output pair, dtype,
# device) and by the shapes of the batch: two models of one architecture share them, so each
# compiles once per batch shape (hyper-parameter searches and test suites build many). Each entry
# is a jax.jit of its own, so dropping the least recently used one frees its program: memory stays
# bounded however many batch sizes a process sees. Inference pads its batches to a few sizes
# (rows are independent there, so this is exact); training and evaluate compile per batch shape
# (padding would change their means and batch statistics).
_COMPILED: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_COMPILED_ENTRIES = 64
# The model's bookkeeping on a layer, not what it computes: the backend (the key names the device),
# the layer's path in the model, its owning model.
_NOT_TRACED = frozenset({"backend", "path", "_owner", "layers"})


def _frozen(value: Any) -> Any:
    """``value`` as a key equal to another's only when a trace cannot tell them apart: numbers with
    their type, containers element by element, arrays by dtype, shape and bytes, activations by
    name, nested layers by their settings; any other object by identity (never shared; the
    compiled function keeps it alive, so its id cannot be reused while the entry exists)."""
    if value is None or isinstance(value, (bool, int, float, complex, str)):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_frozen(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((repr(key), _frozen(item)) for key, item in value.items())))
    if isinstance(value, ActivationFunction):
        return ("activation", value.name)
    if isinstance(value, Layer):
        return ("layer", _settings(value))
    if hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__"):
        host = np.asarray(value)
        return ("array", str(host.dtype), host.shape, hashlib.sha256(np.ascontiguousarray(host).tobytes()).hexdigest())
    return ("object", id(value))


def _settings(owner: Any) -> tuple[Any, ...]:
    """Everything a layer's (or a loss's) trace can depend on: its type, its attributes, and the
    layers nested in it."""
    found = [(name, _frozen(value)) for name, value in sorted(vars(owner).items()) if name not in _NOT_TRACED]
    if isinstance(owner, Layer):
        found.append(("sublayers", tuple(_settings(layer) for layer in owner.sublayers())))
    return (type(owner).__module__, type(owner).__qualname__, tuple(found))


def _structure(layers: Any, device: Any, *extra: Any) -> tuple[Any, ...]:
    return (tuple(_settings(layer) for layer in layers), str(device), *extra)


def _joined(table: Any, tensors: tuple[Any, ...], dtype: Any) -> Any:
    """``table.tensors`` undone: one flat array, each tensor written into its place.

    XLA's CPU code for a concatenation of reshaped 2-D pieces tests, element by element, which
    piece an element comes from, and does not vectorise: 2.9 ms for the 1 MB of config a's
    gradients, more than the pass's products. Updates of a slice copy each piece as a block (0.2 ms)."""
    flat = jnp.zeros(table.size, dtype=dtype)
    for slot, tensor in zip(table.slots, tensors, strict=True):
        flat = jax.lax.dynamic_update_slice(flat, jnp.reshape(tensor, (-1,)).astype(dtype), (slot.offset,))
    return flat


def _shape_bucket(rows: int) -> int:
    """The padded row count of an inference batch: 4, 5, 6 or 7 times a power of two (at most 25 %
    more rows), so any batch size compiles one of a few programs per octave."""
    if rows <= 8:
        return rows
    scale = 1 << (rows.bit_length() - 3)
    return -(-rows // scale) * scale


def _return_freed_memory() -> None:
    """Hand memory freed by the allocator back to the system (glibc keeps it otherwise, so the
    process would not shrink after the caches are cleared); nothing on other C libraries."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


_dropped = 0  # programs dropped from _COMPILED since JAX's own caches were last cleared


def _cached(key: tuple[Any, ...], function: Callable[..., Any], shaped: tuple[int, ...] | None = None) -> Callable[..., Any]:
    """``function`` compiled by ``jax.jit`` once per (``key``, shapes and dtypes of its array
    arguments), through the bounded, least-recently-used table ``_COMPILED``. ``shaped`` names the
    positions of the only arguments whose shapes can change between calls (a step's batch: the
    parameters' shapes are fixed by ``key``), so a call looks at two shapes, not every argument's.

    Dropping an entry is not enough to free its program: JAX's own tracing and compilation caches
    keep every program compiled in the process (measured: +2.5 GB over 160 batch sizes of a small
    MLP). So each time the table has dropped as many programs as it holds, ``jax.clear_caches()``
    empties those too; the programs still in use compile again on their next call (at most one
    recompilation per ``_COMPILED_ENTRIES`` new programs), and memory stays bounded."""
    def call(*args: Any) -> Any:
        global _dropped
        # Shapes are tuples and dtypes hashable: no str() of a dtype per argument (it was ~15 % of a tiny step)
        chosen = args if shaped is None else [args[i] for i in shaped]
        entry = (key, tuple([(a.shape, a.dtype) for a in chosen if hasattr(a, "shape")]))
        compiled = _COMPILED.get(entry)
        if compiled is None:
            compiled = _COMPILED[entry] = jax.jit(function)
            while len(_COMPILED) > _COMPILED_ENTRIES:
                _COMPILED.popitem(last=False)
                _dropped += 1
            if _dropped >= _COMPILED_ENTRIES:
                _dropped = 0
                jax.clear_caches()
                _return_freed_memory()
        else:
            _COMPILED.move_to_end(entry)
        return compiled(*args)

    return call


class JaxBackend(Backend):
    name = "jax"
    mutable = False

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        jax.config.update("jax_enable_x64", True)
        platform, _, index = (device or "cpu").partition(":")
        platform = {"cuda": "gpu"}.get(platform, platform)
        try:
            devices = jax.devices(platform)
        except RuntimeError as error:
            raise BackendError(
                f"backend 'jax' cannot reach a {platform!r} device ({error}); use 'jax' for the CPU, or "
                "install a CUDA build of jax (pip install 'jax[cuda12]') on a machine with an NVIDIA GPU"
            ) from error
        number = int(index) if index else 0
        if not 0 <= number < len(devices):
            raise BackendError(f"backend 'jax' has {len(devices)} {platform} device(s); device {number} does not exist")
        self.reads_are_cheap = platform == "cpu"  # on a GPU a read waits for the device
        if platform == "cpu":  # XLA's CPU buffers come from malloc too: keep freed ones in the heap
            allocator.keep_freed_memory()
        super().__init__(jnp, devices[number], fused)

    low_precision = ("bfloat16", "float16")

    def low_precision_dtype(self, name: str) -> Any:
        return getattr(jnp, name)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, jax.Array) and self.device in x.devices()

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        if not isinstance(x, jax.Array):
            x = jnp.asarray(host_array(x, self.name))
        x = jax.device_put(x, self.device)
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def take_rows(self, arrays: tuple[Any, ...], rows: Any) -> tuple[Any, ...]:
        # One compiled program gathers every array's rows. Eager, each jnp.take checked and normalised its
        # indices as operations of their own: a batch's x and y (64 rows, fit on config c) cost 145–200 µs with
        # a device index array and 52–65 µs with host row numbers; pinned to one core, 29–41 µs eager against
        # 17–20 µs as one program. A module-level jax.jit, not _cached: a gather program is small, one per
        # dataset shape, and jax.clear_caches (which _cached calls as it drops programs) drops these too.
        return _TAKE_ROWS(*arrays, rows)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any) -> Any:
        return jnp.zeros(shape, dtype=dtype, device=self.device)

    def assign(self, target: Any, value: Any) -> Any:
        return value  # immutable: the new array is the new state

    def synchronize(self) -> None:
        jax.block_until_ready(jnp.zeros((), device=self.device))

    # -- compiled passes -------------------------------------------------------------------
    def _gradient_function(self, plan: Plan) -> Callable[..., Any]:
        """The engine's pass as a pure function of (parameters per tensor, flat state, x, y, dropout
        key), ready to trace; it returns (loss, ŷ, gradients per tensor, new flat state)."""
        none = [None] * len(plan.layers)
        no_slots: list[dict[str, Any]] = [{} for _ in plan.layers]
        has_state = bool(plan.state_table.size)
        slots = plan.table.slots

        def gradients(tensors: tuple[Any, ...], state: Any, x: Any, y: Any, key: Any,
                      first_row: Any = 0) -> tuple[Any, Any, tuple[Any, ...], Any]:
            context = PassContext(training=True, random_key=key, first_row=first_row)
            views = plan.table.tensor_views_with(plan.state_table, tensors, state, jnp)
            loss, output, grads, new_state = gradient_pass(plan, self, views, x, y, context, none, no_slots,
                                                           state if has_state else None)
            per_tensor = tuple(jnp.reshape(grads[slot.layer][slot.name], slot.shape).astype(tensor.dtype)
                               for slot, tensor in zip(slots, tensors, strict=True))
            return loss, output, per_tensor, state if new_state is None else new_state

        return gradients

    def compile_forward(self, layers: Any, table: Any, state_table: Any) -> Callable[..., Any] | None:
        none = [None] * len(layers)

        def forward(flat: Any, state: Any, x: Any) -> Any:
            return forward_pass(layers, table.views_with(state_table, flat, state, jnp), x, INFERENCE, none)[0]

        compiled = _cached(_structure(layers, self.device, "forward"), forward)

        def padded(flat: Any, state: Any, x: Any) -> Any:
            rows = x.shape[0]
            bucket = _shape_bucket(rows)
            if bucket == rows:
                return compiled(flat, state, x)
            x = jnp.concatenate([x, jnp.zeros((bucket - rows, *x.shape[1:]), dtype=x.dtype, device=self.device)])
            return compiled(flat, state, x)[:rows]

        return padded

    def scan(self, step: Callable[..., Any], carry: Any, inputs: tuple[Any, ...], reverse: bool = False) -> Any:
        # One traced step, whatever T: unrolling a 256-step LSTM took minutes to compile.
        return jax.lax.scan(step, carry, inputs, reverse=reverse)

    def scatter_add_rows(self, ids: Any, values: Any, n_rows: int) -> Any:
        return jnp.zeros((n_rows, values.shape[1]), dtype=values.dtype).at[ids].add(values)

    def _plan_key(self, plan: Plan, kind: str) -> tuple[Any, ...]:
        return _structure(plan.layers, self.device, kind, plan.pair, _settings(plan.loss), str(plan.dtype))

    def compile_pass(self, plan: Plan) -> Callable[..., Any] | None:
        gradients, table = self._gradient_function(plan), plan.table

        def flat_pass(flat: Any, state: Any, x: Any, y: Any, key: Any, first_row: Any) -> tuple[Any, Any, Any, Any]:
            loss, output, grads, new_state = gradients(table.tensors(flat, jnp), state, x, y, key, first_row)
            return loss, output, _joined(table, grads, flat.dtype), new_state

        compiled = _cached(self._plan_key(plan, "pass"), flat_pass)
        # The dropout key and the first row (a micro-batch's place in its step) are traced: no recompiling.
        return lambda params, grads, state, x, y, context: compiled(params, state, x, y, np.int64(context.random_key),
                                                                    np.int64(context.first_row))

    def compile_step(self, plan: Plan) -> Callable[..., Any] | None:
        return _CompiledStep(self, plan)


class _CompiledStep:
    """The whole training step (pass, clipping, update) as one XLA program per variant, on the
    parameters and optimizer state kept per tensor (``split``/``join`` convert from and to the flat
    buffers), which is how a hand-written JAX step keeps them: a flat buffer would be sliced into
    tensors and its gradients joined back every step (config a, Adam: 2.6 ms with, 2.0 ms without)."""

    def __init__(self, backend: JaxBackend, plan: Plan) -> None:
        self.gradients = backend._gradient_function(plan)
        self.table, self.key = plan.table, backend._plan_key(plan, "step")
        self.compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
        # Per rule: the positions of its settings (built in) and of its per-step scalars (traced).
        self.layouts: dict[str, tuple[list[int], list[int]]] = {}
        table, dtype = plan.table, plan.dtype
        self._split = _cached((*self.key, "split"), lambda flat: table.tensors(flat, jnp))
        self._join = _cached((*self.key, "join"), lambda tensors: _joined(table, tensors, dtype))
        self._empty = backend.zeros(0, dtype)
        self.has_state = bool(plan.state_table.size)
        gradients = self.gradients
        # The step returns no gradients (nobody reads them in most steps: 4–6 fewer buffers per call);
        # ``gradients_of`` makes them again, on first read, from the step's own inputs.
        self._gradients_only = _cached((*self.key, "gradients"),
                                       lambda params, layer_state, x, y, operands:
                                       gradients(params, layer_state, x, y, _unpacked(operands)[1])[2], shaped=(2, 3))
        self._operands: tuple[bytes, Any] = (b"", None)  # the last per-step scalars, as bytes and on the device

    def split(self, flat: Any) -> tuple[Any, ...]:
        """A flat buffer (parameters, or an optimizer state like them) as one array per tensor."""
        return self._split(flat) if self.table.slots else ()

    def join(self, tensors: tuple[Any, ...]) -> Any:
        """``split`` undone: a new flat buffer."""
        return self._join(tensors) if self.table.slots else self._empty

    def gradients_of(self, params: tuple[Any, ...], layer_state: Any, x: Any, y: Any, key: int) -> tuple[Any, ...]:
        """The gradients (per tensor) a step with these inputs computed, computed again."""
        return self._gradients_only(params, layer_state if self.has_state else None, x, y, _packed([], key))

    def _variant(self, rule: str, constants: tuple[Any, ...], clipping: tuple[Any, ...] | None,
                 variant: tuple[Any, ...]) -> Callable[..., Any]:
        gradients, table, has_state = self.gradients, self.table, self.has_state
        with_output, many = variant[-2:]

        def whole_step(params, state, layer_state, x, y, operands, mask):
            floats, key = _unpacked(operands)
            merged = tuple(next(floats) if value is None else value for value in constants)
            loss, output, grads, new_layer_state = gradients(params, layer_state, x, y, key)
            used, masks = grads, None if mask is None else table.tensors(mask, jnp)
            if masks is not None:
                used = tuple(unfrozen(g, m, jnp) for g, m in zip(used, masks, strict=True))
            if clipping is not None:  # the first scalar is grad_scale: a global norm's factor joins it
                clipped, factor = clip_gradients(_joined(table, used, used[0].dtype), clipping[:2], clipping[2], jnp)
                used, merged = table.tensors(clipped, jnp), (merged[0] * factor, *merged[1:])
            # The rule is element-wise: tensor by tensor it is the flat buffer's arithmetic, bit for bit.
            updated = [RULES[rule].reference(p, g, *s, *merged, jnp) for p, g, *s in zip(params, used, *state, strict=True)]
            new_params = tuple(values[0] for values in updated)
            new_state = tuple(tuple(values[1 + i] for values in updated) for i in range(len(state)))
            if masks is not None:  # frozen: as before, bitwise, and no moments
                new_params = tuple(jnp.where(m, p, n) for m, p, n in zip(masks, params, new_params, strict=True))
                new_state = tuple(tuple(unfrozen(s, m, jnp) for s, m in zip(part, masks, strict=True)) for part in new_state)
            return loss, output if with_output else None, new_params, new_state, new_layer_state if has_state else None

        def many_steps(params, state, layer_state, xs, ys, operands, mask):
            """``whole_step`` on the batches xs[0], xs[1], … in turn (a ``lax.scan``), the last one
            outside the scan so that its inputs, for ``gradients_of``, come back too."""
            def one(carry, i):  # xs[i]: the scan reads each batch in place (a scanned xs[:-1] was a copy)
                loss, output, *carry = whole_step(*carry, xs[i], ys[i], operands[i], mask)
                return tuple(carry), (loss, output)

            before_last, (losses, outputs) = jax.lax.scan(one, (params, state, layer_state), jnp.arange(xs.shape[0] - 1))
            loss, output, *last = whole_step(*before_last, xs[-1], ys[-1], operands[-1], mask)
            losses = jnp.concatenate([losses, loss[None]])
            if with_output:
                outputs = jnp.concatenate([outputs, output[None]])
            return (losses, outputs, *last, before_last[0], before_last[2])

        # Only the batch (x, y: arguments 3 and 4) changes shape from call to call.
        return _cached((*self.key, *variant), many_steps if many else whole_step, shaped=(3, 4))

    def _function(self, rule: str, scalars: tuple[Any, ...], clipping: tuple[Any, ...] | None, frozen: Any,
                  with_output: bool, many: bool) -> tuple[Callable[..., Any], list[int]]:
        """The program of this variant, and the positions of the rule's traced scalars."""
        # The optimizer's settings (β, ε, weight decay, Nesterov: ``optim.SETTINGS``) are built into the
        # program, a zero one as ``ZERO`` so its term is never computed; the per-step scalars (learning
        # rate, bias corrections) are traced, so a schedule never recompiles. Clipping (kind, limit,
        # parameter segments) is compiled in, and frozen parameters (a mask, traced) one more variant:
        # with or without a mask.
        layout = self.layouts.get(rule)
        if layout is None:
            names = RULES[rule].scalars
            layout = self.layouts[rule] = ([i for i, name in enumerate(names) if name in SETTINGS],
                                           [i for i, name in enumerate(names) if name not in SETTINGS])
        settings, traced = layout
        variant = (rule, clipping, frozen is None, *[scalars[i] for i in settings], with_output, many)
        function = self.compiled.get(variant)
        if function is None:
            constants: list[Any] = [None] * len(scalars)
            for i in settings:
                value = scalars[i]
                constants[i] = ZERO if value == 0 and value.__class__ is not bool else value
            function = self.compiled[variant] = self._variant(rule, tuple(constants), clipping, variant)
        return function, traced

    def many(self, params: tuple[Any, ...], state: tuple[tuple[Any, ...], ...], layer_state: Any, xs: Any, ys: Any,
             keys: list[int], rule: str, scalars: list[tuple[Any, ...]], clipping: tuple[Any, ...] | None = None,
             frozen: Any = None, with_output: bool = True) -> tuple[Any, ...]:
        """K steps in one program (``compile(steps_per_execution=K)``): the batches stacked as
        ``xs``, ``ys`` (K, rows, …), one dropout key and one tuple of scalars per step (the settings
        the same in each). Returns (losses (K,), ŷ (K, rows, …) or None, new params, new optimizer
        state, new layer state, and the last step's params and layer state, for ``gradients_of``)."""
        function, traced = self._function(rule, scalars[0], clipping, frozen, with_output, True)
        operands = np.empty((len(keys), len(traced) + 1))  # one row of _packed's layout per step
        operands[:, :-1] = [[step[i] for i in traced] for step in scalars]
        operands[:, -1] = keys
        return function(params, state, layer_state if self.has_state else None, xs, ys, operands, frozen)

    def __call__(self, params: tuple[Any, ...], state: tuple[tuple[Any, ...], ...], layer_state: Any, x: Any, y: Any,
                 key: int, rule: str, scalars: tuple[Any, ...], clipping: tuple[Any, ...] | None = None,
                 frozen: Any = None, with_output: bool = True) -> tuple[Any, ...]:
        function, traced = self._function(rule, scalars, clipping, frozen, with_output, False)
        operands = _packed([scalars[i] for i in traced], key)
        raw, (last_raw, last) = operands.tobytes(), self._operands
        if raw == last_raw:  # a constant learning rate without dropout: the same scalars, kept on the device
            if isinstance(last, np.ndarray):  # (a device_put of its own costs more than passing a host array)
                last = jax.device_put(last)
                self._operands = (raw, last)
            operands = last
        else:
            self._operands = (raw, operands)
        return function(params, state, layer_state if self.has_state else None, x, y, operands, frozen)


@jax.jit
def _TAKE_ROWS(*arrays_then_rows: Any) -> tuple[Any, ...]:  # noqa: N802 - a compiled function, named as a constant
    *arrays, rows = arrays_then_rows
    return tuple(jnp.take(array, rows, axis=0) for array in arrays)  # rows are in range: no mode needed


def _packed(floats: list[Any], key: int) -> np.ndarray:
    """The step's traced scalars and its dropout key as one float64 host array: one argument to
    transfer, not one per number (eight Python floats cost 18 µs of dispatch per step, one array
    7 µs). The key is below 2³² (``toolkit.ops.random``), so float64 holds it exactly."""
    operands = np.empty(len(floats) + 1)
    operands[:-1] = floats
    operands[-1] = key
    return operands


def _unpacked(operands: Any) -> tuple[Any, Any]:
    """(an iterator over the scalars, the int64 key) of ``_packed``'s array, inside a trace.

    Each scalar is made weakly typed, as a Python float argument is: ``β₂·v`` with v float32
    then stays float32 (a float64 array scalar would promote the whole update to float64)."""
    from jax._src.lax.lax import _convert_element_type  # the one way to mark a traced value weak

    floats = (_convert_element_type(operands[i], operands.dtype, weak_type=True) for i in range(operands.shape[0] - 1))
    return floats, operands[-1].astype(jnp.int64)
