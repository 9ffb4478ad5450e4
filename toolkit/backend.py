"""The backend interface: one object that owns the array namespace ``xp``, the device,
host transfers, random numbers and the named hot ops.

Every hot op defaults to its pure Array-API reference (``toolkit.ops.reference``, and the update
rules of ``toolkit.ops.optim``). A concrete backend may override an op with a fused kernel, and may
register optimizer kernels in ``update_kernels`` (same signature as the rule's reference, writing
in place). Which implementation runs is decided once, when the backend is built: with
``fused=False`` every override is replaced by the reference, so tests can compare the two.

Writes: the generic code never writes into an array; it replaces state through ``assign``, which
copies into the existing buffer on mutable backends (keeping their buffers, views and
allocation-free steps) and simply returns the new array on immutable ones (JAX). An ``out``
argument is a hint: a buffer an op may write its result into and return; callers always use the
returned array.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import MethodType
from typing import Any, Protocol

from .ops import attention, conv, optim, random, recurrent, reference
from .ops.activations import ActivationFunction

Array = Any

FLOAT_DTYPES = ("float32", "float64")


class RandomSource(Protocol):
    """Random numbers drawn on the host (float64) and moved to the backend, so that one
    seed gives the same numbers on every backend."""

    def normal(self, shape: tuple[int, ...], std: float, dtype: Any) -> Array: ...

    def uniform(self, shape: tuple[int, ...], low: float, high: float, dtype: Any) -> Array: ...

    def constant(self, shape: tuple[int, ...], value: float, dtype: Any) -> Array: ...

    def permutation(self, n: int) -> Array: ...


class Backend:
    """Base class of every backend. Subclasses set ``name`` and implement the transfer methods."""

    name = "abstract"
    mutable = True  # arrays can be written in place (False: JAX)
    reuses_buffers = False  # training steps write into scratch buffers kept by the model
    # Reading a value back (float(loss)) costs nothing more than the computation: the arrays live in
    # host memory and the ops have finished. False on a GPU, where a read waits for every queued
    # kernel: fit then reads its NaN guard once per block of steps (``toolkit.training``).
    reads_are_cheap = True
    # The low-precision float dtypes of the array library, for mixed-precision policies ("mixed_bfloat16").
    low_precision: tuple[str, ...] = ()
    HOT_OPS = ("matmul", "bias_activation", "activation_backward", "output_delta", "sum_rows", "im2col", "col2im",
               "max_pool", "max_pool_backward", "dropout_mask", "scatter_add_rows", "attention_weights",
               "attention_weights_backward", "layer_norm", "layer_norm_backward", "lstm_sequence",
               "lstm_sequence_backward", "gru_cell", "gru_cell_backward", "scan", "compile_pass", "compile_step",
               "compile_forward", "clip_gradients")

    def __init__(self, xp: Any, device: Any = None, fused: bool = True) -> None:
        self.xp = xp
        self.device = device
        self.fused = fused
        self.update_kernels: dict[str, Callable[..., None]] = {}
        if fused:
            self.register_kernels()
        else:  # decided here, once: every op is its reference from now on
            for op in self.HOT_OPS:
                setattr(self, op, MethodType(getattr(Backend, op), self))
            self.reuses_buffers = False

    def register_kernels(self) -> None:
        """Fill ``update_kernels`` (rule name -> in-place kernel); called once when fused."""

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r}, fused={self.fused})"

    # -- arrays and transfers -------------------------------------------------------------
    def dtype(self, name: str) -> Any:
        """The namespace's dtype object for ``"float32"`` or ``"float64"`` (or a ``low_precision`` one)."""
        if name not in FLOAT_DTYPES and name not in self.low_precision:
            raise ValueError(f"unsupported dtype {name!r}; use one of {FLOAT_DTYPES}")
        return self.low_precision_dtype(name) if name in self.low_precision else getattr(self.xp, name)

    def low_precision_dtype(self, name: str) -> Any:
        """The library's own ``bfloat16``/``float16`` (outside the Array API standard)."""
        raise NotImplementedError

    def is_native(self, x: Any) -> bool:
        """True when ``x`` is already an array of this backend on its device."""
        raise NotImplementedError

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """Any array or nested sequence as an array of this backend, on its device."""
        raise NotImplementedError

    def to_host(self, x: Array) -> Any:
        """A host (NumPy) copy of ``x``, for saving, printing and comparing."""
        raise NotImplementedError

    def take_rows(self, arrays: tuple[Array, ...], rows: Any) -> tuple[Array, ...]:
        """The rows ``rows`` of each array, in that order (a batch's x and y in the epoch's order);
        ``rows`` are row numbers held on the host (a slice of ``to_host``'s result)."""
        index = self.asarray(rows)
        return tuple(self.xp.take(array, index, axis=0) for array in arrays)

    def random(self, seed: int | None) -> RandomSource:
        raise NotImplementedError

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any) -> Array:
        return self.xp.zeros(shape, dtype=dtype, device=self.device)

    def empty(self, shape: tuple[int, ...] | int, dtype: Any) -> Array:
        """An uninitialised buffer (scratch); only asked for when ``reuses_buffers``."""
        return self.xp.empty(shape, dtype=dtype, device=self.device)

    def assign(self, target: Array, value: Array) -> Array:
        """The one way generic code changes state: ``state = backend.assign(state, new)``.

        Mutable backends copy ``value`` into ``target`` and return ``target`` (its identity, and
        every view of it, survive); immutable ones return ``value`` as the new state."""
        if target is value:
            return target
        target[...] = value
        return target

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU backends)."""

    def transfer_stream(self) -> AbstractContextManager[Any]:
        """Where the prefetch thread copies batches to the device: a context that, on a GPU, runs
        the copies on their own stream (overlapping the step's kernels) and waits for them on
        exit, so a batch is complete when it is handed over. Nothing on CPU backends."""
        return nullcontext()

    def thread_tuner(self) -> Any:
        """An object that ``fit`` tells when each epoch and each step begins and ends
        (``epoch_begin``, ``step_begin``, ``step_end``, ``close``; ``probing`` says whether a step needs
        the calls), through which a CPU backend chooses how many threads its libraries use; None
        (the default) where the backend has nothing to choose."""
        return None

    def quiet(self) -> AbstractContextManager[Any]:
        """A context in which the library's floating-point warnings (overflow, invalid value) are
        not printed: a training step whose loss diverges raises ``TrainingDiverged``, which says
        more. Warnings raised by the user's own code outside a step are untouched. Entered only
        around what the library computes (the engine's reference pass, reference updates), not
        around compiled kernels, which warn about nothing (it cost 1.7 µs a step)."""
        return nullcontext()

    # -- named hot ops ----------------------------------------------------------------------
    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        return a @ b

    def bias_activation(self, z: Array, b: Array, activation: ActivationFunction,
                        out: Array | None = None) -> tuple[Array, Array]:
        """(Z, A) = (z + b, σ(z + b)); ``z`` is the fresh product, which a kernel may overwrite."""
        return reference.bias_activation(z, b, activation, self.xp)

    def activation_backward(self, da: Array, z: Array, a: Array, activation: ActivationFunction,
                            out: Array | None = None, db_out: Array | None = None) -> tuple[Array, Array]:
        """(δ, db) = (dA ∘ σ'(Z), Σ_rows δ)."""
        return reference.activation_backward(da, z, a, activation, self.xp)

    def output_delta(self, pair: str, z: Array, a: Array, y: Array, out: Array | None = None) -> tuple[Array, Array]:
        """(loss, δ_out) of a pair in ``toolkit.ops.reference.OUTPUT_PAIRS``."""
        return reference.output_delta(pair, z, a, y, self.xp)

    def sum_rows(self, x: Array, out: Array | None = None) -> Array:
        return reference.sum_rows(x, self.xp)

    def im2col(self, x: Array, window: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int],
               out: Array | None = None) -> Array:
        """(N, Hp, Wp, C) → (N, Ho, Wo, kh·kw, C): every window of a (padded) image batch."""
        return conv.im2col(x, window, strides, out_hw, self.xp)

    def col2im(self, cols: Array, padded_hw: tuple[int, int], window: tuple[int, int], strides: tuple[int, int],
               out: Array | None = None) -> Array:
        """The adjoint of ``im2col``: each window's values added back into an (N, Hp, Wp, C) batch."""
        return conv.col2im(cols, padded_hw, window, strides, self.xp)

    def max_pool(self, x: Array, window: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int],
                 out: Array | None = None, winners_out: Array | None = None) -> tuple[Array, Array]:
        """(max, arg-max offset) of every window of an (N, H, W, C) batch."""
        return conv.max_pool(x, window, strides, out_hw, self.xp)

    def max_pool_backward(self, grad: Array, winners: Array, input_hw: tuple[int, int], window: tuple[int, int],
                          strides: tuple[int, int], out: Array | None = None) -> Array:
        """Each window's gradient routed to its arg-max."""
        return conv.max_pool_backward(grad, winners, input_hw, window, strides, self.xp)

    def dropout_mask(self, key: Any, stream: int, shape: tuple[int, ...], first_row: int, rate: float,
                     dtype: Any) -> Array:
        """The inverted-dropout mask (0 or 1/(1 − rate)) of ``toolkit.ops.random.dropout_mask``."""
        return random.dropout_mask(key, stream, shape, first_row, rate, dtype, self.xp, self.device)

    def layer_norm(self, x: Array, gamma: Array, beta: Array, eps: float) -> tuple[Array, Array, Array]:
        """(y, x̂, 1/√(σ² + ε)) of a layer normalisation over the last axis (``reference.layer_norm``)."""
        return reference.layer_norm(x, gamma, beta, eps, self.xp)

    def layer_norm_backward(self, dy: Array, x_hat: Array, inv_std: Array, gamma: Array) -> tuple[Array, Array, Array]:
        """(∂J/∂x, dγ, dβ) of ``layer_norm`` (``reference.layer_norm_backward``)."""
        return reference.layer_norm_backward(dy, x_hat, inv_std, gamma, self.xp)

    def scan(self, step: Callable[[Any, tuple[Array, ...]], tuple[Any, tuple[Array, ...]]], carry: Any,
             inputs: tuple[Array, ...], reverse: bool = False) -> tuple[Any, tuple[Array, ...]]:
        """A loop over the leading (time) axis: ``carry, out_t = step(carry, inputs_t)`` for each t (last
        first when ``reverse``); returns the last carry and each output stacked along a new axis 0.

        This reference is a Python loop (an exported graph unrolls it); JAX runs ``lax.scan``, which
        compiles the step once instead of once per time step."""
        length = inputs[0].shape[0]
        outputs: list[tuple[Array, ...]] = [()] * length
        for t in (range(length - 1, -1, -1) if reverse else range(length)):
            carry, outputs[t] = step(carry, tuple(array[t, ...] for array in inputs))
        return carry, tuple(self.xp.stack([out[k] for out in outputs]) for k in range(len(outputs[0])))

    def lstm_sequence(self, inputs: Array, u: Array, units: int) -> tuple[Array, Array, Array, Any]:
        """The LSTM recurrence from h₀ = c₀ = 0 over ``inputs`` X = x W + b (T, N, 4H), time first: per
        step a_t = X_t + h_{t−1} U and one cell (``toolkit.ops.recurrent.lstm_cell``). Returns the stacks
        (T, N, ·) of h_t, h_{t−1}, c_{t−1} and the saved gates, which ``lstm_sequence_backward`` and the
        weight gradients read."""
        xp = self.xp

        def step(carry: Any, current: tuple[Array, ...]) -> tuple[Any, tuple[Array, ...]]:
            h, c = carry
            h_new, c_new, gates = recurrent.lstm_cell(current[0] + h @ u, c, units, xp)  # a_t = X_t + h_{t−1} U
            return (h_new, c_new), (h_new, h, c, gates)

        zeros = xp.zeros_like(inputs[0, :, :units])
        _, stacks = self.scan(step, (zeros, zeros), (inputs,))
        return stacks

    def lstm_sequence_backward(self, from_output: Array, cells: Array, gates: Any, u: Array) -> Array:
        """δ_t = ∂J/∂a_t (T, N, 4H) of every step, the last first: ∂J/∂h_t is what arrives from the
        layer's output (``from_output``, T, N, H) plus δ_{t+1} Uᵀ, and ∂J/∂c_t flows back through the cell."""
        xp = self.xp
        u_t = xp.matrix_transpose(u)

        def step(carry: Any, current: tuple[Array, ...]) -> tuple[Any, tuple[Array, ...]]:
            dh_next, dc_next = carry
            output_part, c_prev, saved = current
            delta, dc_prev = recurrent.lstm_cell_backward(dh_next + output_part, dc_next, c_prev, saved, xp)
            return (delta @ u_t, dc_prev), (delta,)  # ∂J/∂h_{t−1} = δ_t Uᵀ

        zeros = xp.zeros_like(from_output[0, ...])
        _, (deltas,) = self.scan(step, (zeros, zeros), (from_output, cells, gates), reverse=True)
        return deltas

    def gru_cell(self, x_part: Array, u: Array, b_hn: Array, h: Array, units: int) -> tuple[Array, Any]:
        """(h', saved) of one GRU step from x W + b, h U and b_hn (``toolkit.ops.recurrent``)."""
        return recurrent.gru_cell(x_part, u, b_hn, h, units, self.xp)

    def gru_cell_backward(self, dh: Array, h: Array, saved: Any) -> tuple[Array, Array, Array]:
        """(∂J/∂(x W + b), ∂J/∂(h U) with its n part ∘ r, ∂J/∂h through z) of one GRU step."""
        return recurrent.gru_cell_backward(dh, h, saved, self.xp)

    def attention_weights(self, scores: Array, causal: bool, length: int) -> Array:
        """P = softmax of each row of ``scores`` (…, T, T), T = ``length`` (given: an exported graph's
        shapes are symbolic), over j ≤ i only when ``causal`` (``toolkit.ops.attention.masked_softmax``)."""
        allowed = attention.causal_mask(length, self.xp, self.device) if causal else None
        return attention.masked_softmax(scores, allowed, self.xp)

    def attention_weights_backward(self, dp: Array, p: Array) -> Array:
        """dS = P ∘ (dP − Σ_j dP ∘ P) row by row (``toolkit.ops.attention.softmax_backward``)."""
        return attention.softmax_backward(dp, p, self.xp)

    def scatter_add_rows(self, ids: Array, values: Array, n_rows: int) -> Array:
        """Rows of ``values`` (P, width) added into an (n_rows, width) zero matrix at ``ids`` (P,), int64:
        an embedding table's gradient (``toolkit.ops.reference.scatter_add_rows``)."""
        return reference.scatter_add_rows(ids, values, n_rows, self.xp, self.device)

    def compile_pass(self, plan: Any) -> Callable[..., Any] | None:
        """A compiled gradient pass for ``plan`` (``toolkit.engine.Plan``), or None.

        None (the default) makes the model run the engine's layer-by-layer pass, which is the
        reference such a runner is tested against. A runner is called as ``runner(params, grads,
        x, y)`` on a prepared batch (flat parameter and gradient buffers) and returns ``(loss,
        output, grads)`` with the gradients written into ``grads`` (mutable backends) or in a new
        flat array, or None to decline that batch.
        """
        return None

    def compile_step(self, plan: Any) -> Callable[..., Any] | None:
        """A compiled whole training step for ``plan`` (gradient pass and optimizer update in one
        call), or None (the default: the model runs the pass, then ``update``).

        The step keeps parameters and optimizer state in a layout of its own (JAX: one array per
        tensor): ``step.split(flat)`` turns a flat buffer into it and ``step.join(layout)`` back.
        Called as ``step(params, optimizer_state, layer_state, x, y, random_key, rule, scalars, clipping,
        frozen, with_output)`` with ``params`` and each optimizer state in that layout (``clipping``: None,
        or (kind, limit, parameter segments) for ``toolkit.ops.optim.clip_gradients``; ``frozen``: None or
        the flat mask); returns ``(loss, output, new_params, new_optimizer_state, new_layer_state)``, the
        new values in that layout too (``output`` None unless ``with_output``, ``new_layer_state`` None for
        a model without state), without changing its arguments, so the model can refuse a step whose loss
        is not finite. The gradients are not returned: ``step.gradients_of(params, layer_state, x, y,
        random_key)`` computes them again from a step's inputs, for whoever reads ``flat_grads``. The model
        takes the results back at the next step, and joins them into its flat buffers only when those are
        read (``toolkit.deferred``).

        A step may also have ``step.many(params, optimizer_state, layer_state, xs, ys, random_keys, rule,
        scalars_per_step, clipping, frozen, with_output)``: K steps in one call on batches stacked as
        (K, rows, …), for ``compile(steps_per_execution=K)``; it returns ``(losses, outputs, new_params,
        new_optimizer_state, new_layer_state, last_params, last_layer_state)``, the last two the inputs of
        the K-th step, for ``gradients_of``."""
        return None

    def compile_forward(self, layers: Any, table: Any, state_table: Any) -> Callable[..., Any] | None:
        """A compiled inference pass ``forward(flat_params, flat_state, x) -> ŷ`` of these layers, or
        None (the default: the engine's loop runs op by op)."""
        return None

    def clip_gradients(self, grads: Array, clipping: tuple[str, float],
                       segments: tuple[tuple[int, int], ...]) -> tuple[Array, Any]:
        """The flat gradients clipped and the factor the update still applies (``grad_scale``), as
        ``toolkit.ops.optim.clip_gradients`` returns them; a backend may return a buffer it reuses (valid
        until its next call) or ``grads`` itself when nothing clips, and a Python float for the factor."""
        return optim.clip_gradients(grads, clipping, segments, self.xp)

    def update(self, rule: str, param: Array, grad: Array, state: tuple[Array, ...],
               scalars: tuple[Any, ...]) -> tuple[Array, tuple[Array, ...]]:
        """One optimizer step of ``toolkit.ops.optim.RULES[rule]``: (new param, new state)."""
        kernel = self.update_kernels.get(rule)
        if kernel is not None:
            kernel(param, grad, *state, *scalars)
            return param, state
        with self.quiet():
            new_param, *new_state = optim.RULES[rule].reference(param, grad, *state, *scalars, self.xp)
        if not self.mutable:
            return new_param, tuple(new_state)
        return self.assign(param, new_param), tuple(self.assign(s, n) for s, n in zip(state, new_state, strict=True))
