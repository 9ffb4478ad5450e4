"""One compiled call for a whole gradient pass of a Dense stack (numba backend's ``compile_pass``).

For a plan of ``Dense`` layers that ends in an output/loss pair, the engine's layer-by-layer pass
costs about a dozen Python-level calls per step, each 1–3 µs; on a small network (64-32-1,
batch 64) those calls cost more than the arithmetic. This runner does the same forward pass,
output delta and backward pass in one call, from the same kernels the per-layer ops use:

    Z[l] = A[l-1] W[l] + b[l],   A[l] = σ(Z[l])
    δ[L] = (ŷ − y) / N  (see toolkit.ops.reference.OUTPUT_PAIRS)
    dW[l] = A[l-1]ᵀ δ[l],   db[l] = Σ_rows δ[l],   δ[l-1] = (δ[l] W[l]ᵀ) ∘ σ'(Z[l-1])

What it covers, the parameter offsets and the pair all come from the engine's ``Plan``; the
scratch layout is computed once per batch size, here (``_scratch_layout``), and handed to the
kernel as offsets. Matrix products go to BLAS (``np.dot`` into preallocated outputs).
"""

from __future__ import annotations

import numpy as np

from toolkit.engine import Plan
from toolkit.layers import Dense
from toolkit.ops.activations import CODES, LEAKY_RELU_SLOPE
from toolkit.ops.reference import OUTPUT_PAIRS

from .numba_kernels import (
    activation_backward_by_code,
    bias_activation_by_code,
    jit,
    mse_delta,
    sigmoid_bce_delta,
    softmax_ce_delta,
    sum_rows,
)

SOFTMAX_CE, SIGMOID_BCE, IDENTITY_MSE = (OUTPUT_PAIRS[name].code for name in ("softmax_ce", "sigmoid_bce", "identity_mse"))


@jit
def _matrix(buffer, offset, rows, cols):
    return buffer[offset : offset + rows * cols].reshape((rows, cols))


@jit
def _output_delta(z, a, y, delta, pair):
    if pair == SOFTMAX_CE:
        return softmax_ce_delta(z, a, y, delta)
    if pair == SIGMOID_BCE:
        return sigmoid_bce_delta(z, a, y, delta)
    return mse_delta(a, y, delta)


@jit
def dense_pass(x, y, params, grads, layout, codes, slope, pair, scratch, places, input_grad):
    """Forward, loss, δ_out and backward of the whole stack; fills ``grads``, returns the loss.
    ``input_grad``: where ∂J/∂x = δ[0] W[0]ᵀ goes, or an empty array when nobody needs it.

    ``layout[l] = (fan_in, fan_out, W offset, b offset)`` into the flat ``params``/``grads``;
    ``codes[l]`` is layer l's activation (the last one's pairs with the loss as ``pair``);
    ``places[l] = (Z offset, A offset)`` in ``scratch``, whose last row holds (δ, ∂J/∂A) offsets.
    """
    n = x.shape[0]
    depth = layout.shape[0]
    delta_at, spare_at = places[depth, 0], places[depth, 1]
    previous = x
    for layer in range(depth):
        fan_in, fan_out, w_at, b_at = layout[layer, 0], layout[layer, 1], layout[layer, 2], layout[layer, 3]
        z = _matrix(scratch, places[layer, 0], n, fan_out)
        a = _matrix(scratch, places[layer, 1], n, fan_out)
        np.dot(previous, _matrix(params, w_at, fan_in, fan_out), z)  # a W
        bias_activation_by_code(z, params[b_at : b_at + fan_out], a, codes[layer], slope)  # Z = aW + b, A = σ(Z)
        previous = a
    fan_out = layout[depth - 1, 1]
    loss = _output_delta(z, a, y, _matrix(scratch, delta_at, n, fan_out), pair)  # δ_out = ŷ − y

    for layer in range(depth - 1, -1, -1):
        fan_in, fan_out, w_at, b_at = layout[layer, 0], layout[layer, 1], layout[layer, 2], layout[layer, 3]
        d = _matrix(scratch, delta_at, n, fan_out)
        if layer == depth - 1:
            sum_rows(d, grads[b_at : b_at + fan_out])  # db = Σ_rows δ (the layers below fuse it)
        a_below = x if layer == 0 else _matrix(scratch, places[layer - 1, 1], n, fan_in)
        np.dot(a_below.T, d, _matrix(grads, w_at, fan_in, fan_out))  # dW = aᵀ δ
        if layer == 0 and input_grad.shape[0] == 0:
            break  # nobody needs ∂J/∂x
        da_below = input_grad if layer == 0 else _matrix(scratch, spare_at, n, fan_in)
        np.dot(d, _matrix(params, w_at, fan_in, fan_out).T, da_below)  # ∂J/∂A[l-1] = δ Wᵀ (∂J/∂x below layer 0)
        if layer == 0:
            break
        below_b = layout[layer - 1, 3]
        z_below = _matrix(scratch, places[layer - 1, 0], n, fan_in)
        # δ[l-1] = ∂J/∂A[l-1] ∘ σ'(Z[l-1]) with db[l-1] = Σ_rows δ[l-1], into δ's buffer (free now):
        # written in place instead, the aliased loop stopped vectorising (4× slower).
        activation_backward_by_code(da_below, z_below, a_below, _matrix(scratch, delta_at, n, fan_in),
                                    grads[below_b : below_b + fan_in], codes[layer - 1], slope)
    return loss


def covers(plan: Plan, first: int = 0) -> bool:
    """Plain Dense stacks (the plan's layers from ``first`` on) whose output pairs with the loss,
    with no softmax before the last layer."""
    layers = plan.layers[first:]
    return (plan.pair is not None and len(layers) > 0 and all(type(layer) is Dense for layer in layers)
            and all(layer.activation.name != "softmax" for layer in layers[:-1]))


class DensePassRunner:
    """``dense_pass`` bound to one model's plan: its layout, activation codes and scratch.

    Scratch is kept per batch size (a training run sees two: the batch and the last, shorter
    one), so steady-state steps allocate nothing; it belongs to the model's engine.

    It declines (returns None) batches whose matrix products are large enough for OpenBLAS to
    thread them. ``np.dot`` in numba calls SciPy's OpenBLAS, a second thread pool beside
    NumPy's, and on 2 cores their spinning threads fought: config a (784-256-256-10, batch
    128) went from 0.88 to 1.6 ms a step when interleaved with NumPy products. Below the
    threshold a product runs on the calling thread; above it the products dominate the step
    and the engine's pass (NumPy's matmul) loses nothing to call overhead anyway. Both paths use
    the same element-wise kernels, so they differ only in the products' summation order.
    """

    MAX_BATCH_SIZES = 4
    # m·n·k of the largest product OpenBLAS keeps on the calling thread. Measured through np.dot
    # in numba: process CPU time = wall time up to 4·65536 multiply-adds, twice the wall time at 8·65536.
    SINGLE_THREAD_PRODUCT = 4 * 65536

    def __init__(self, plan: Plan, first: int = 0) -> None:
        """The Dense layers of ``plan`` from position ``first`` on (a convolution pass runs the ones
        before them)."""
        table, layers = plan.table, plan.layers[first:]
        self.widths = [layers[0].input_dim, *(layer.units for layer in layers)]
        self.layout = np.array([(n_in, n_out, table.by_key[f"{first + i}.W"].offset, table.by_key[f"{first + i}.b"].offset)
                                for i, (n_in, n_out) in enumerate(zip(self.widths[:-1], self.widths[1:], strict=True))],
                               dtype=np.int64)
        self.codes = np.array([CODES[layer.activation.name] for layer in layers], dtype=np.int64)
        self.pair = OUTPUT_PAIRS[plan.pair].code
        self.dtype = np.dtype(plan.dtype)
        self.slope = self.dtype.type(LEAKY_RELU_SLOPE)
        self._scratch: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._no_input_grad = np.empty((0, self.widths[0]), dtype=self.dtype)
        self.max_rows = self.SINGLE_THREAD_PRODUCT // int(np.max(self.layout[:, 0] * self.layout[:, 1]))

    def _scratch_layout(self, n: int) -> tuple[np.ndarray, int]:
        """Offsets of Z and A per layer, then of δ and ∂J/∂A (each as wide as the widest layer)."""
        places, offset = [], 0
        for width in self.widths[1:]:
            places.append((offset, offset + n * width))
            offset += 2 * n * width
        widest = max(self.widths[1:])
        places.append((offset, offset + n * widest))
        return np.array(places, dtype=np.int64), offset + 2 * n * widest

    def _scratch_for(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scratch, offsets, the output A of the last layer as an (n, width) view into scratch)."""
        found = self._scratch.get(n)
        if found is None:
            places, size = self._scratch_layout(n)
            scratch = np.empty(size, dtype=self.dtype)
            at = int(places[-2, 1])
            found = (scratch, places, scratch[at : at + n * self.widths[-1]].reshape(n, -1))
            if len(self._scratch) >= self.MAX_BATCH_SIZES:
                self._scratch.pop(next(iter(self._scratch)))
            self._scratch[n] = found
        return found

    def __call__(self, params: np.ndarray, grads: np.ndarray, state: np.ndarray, x: np.ndarray, y: np.ndarray,
                 context: object):
        n = x.shape[0]
        if n > self.max_rows or y.shape[-1] != self.widths[-1]:  # too large, or targets that carry weights
            return None
        loss, output = self.run(np.ascontiguousarray(x), np.ascontiguousarray(y), params, grads)
        return np.asarray(loss, dtype=self.dtype), output, grads, None  # a Dense stack has no state

    def run(self, x: np.ndarray, y: np.ndarray, params: np.ndarray, grads: np.ndarray,
            input_grad: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """(loss, ŷ) of contiguous ``x`` and ``y``, the gradients written into ``grads``, and ∂J/∂x
        into ``input_grad`` when one is given."""
        scratch, places, output = self._scratch_for(x.shape[0])
        if input_grad is None:
            input_grad = self._no_input_grad
        loss = dense_pass(x, y, params, grads, self.layout, self.codes, self.slope, self.pair, scratch, places,
                          input_grad)
        return loss, output
