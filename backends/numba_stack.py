"""One compiled call for a whole gradient pass of a Dense stack (numba backend).

For a ``Sequential`` of ``Dense`` layers that ends in a fused output/loss pair, the layer-by-layer
pass costs about a dozen Python-level calls per step, each 1–3 µs; on a small network
(64-32-1, batch 64) those calls cost more than the arithmetic. This kernel runs the same
forward pass, output delta and backward pass in one call:

    Z[l] = A[l-1] W[l] + b[l],   A[l] = σ(Z[l])
    δ[L] = (ŷ − y) / N  (or 2 (ŷ − y) / (N·k) for linear + MSE)
    dW[l] = A[l-1]ᵀ δ[l],   db[l] = Σ_rows δ[l],   δ[l-1] = (δ[l] W[l]ᵀ) ∘ σ'(Z[l-1])

Matrix products go to BLAS (``np.dot`` into preallocated outputs); all other work is fused
loops. The plain reference is the model's own layer-by-layer pass; the tests compare the two.
"""

from __future__ import annotations

import numpy as np

from .activation_codes import CODES
from .numba_kernels import activation_backward, bias_activation, jit, mse_delta, sigmoid_bce_delta, softmax_ce_delta, sum_rows

SOFTMAX_CE, SIGMOID_BCE, IDENTITY_MSE = range(3)
PAIR_CODES = {"softmax_ce": SOFTMAX_CE, "sigmoid_bce": SIGMOID_BCE, "identity_mse": IDENTITY_MSE}


@jit
def workspace_size(n, layout):
    """Elements of scratch a batch of ``n`` rows needs: Z and A per layer, then δ and ∂J/∂A."""
    widest = 0
    total = 0
    for layer in range(layout.shape[0]):
        width = layout[layer, 1]
        total += 2 * n * width
        widest = max(widest, width)
    return total + 2 * n * widest


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
def dense_stack_gradients(x, y, params, grads, layout, codes, slope, pair, work):
    """Forward, loss, δ_out and backward of the whole stack; fills ``grads``, returns the loss.

    ``layout[l] = (fan_in, fan_out, W offset, b offset)`` into the flat ``params``/``grads``;
    ``codes[l]`` is layer l's activation (the last one's pairs with the loss as ``pair``).
    ``work`` holds ``workspace_size(n, layout)`` elements; Z[l] and A[l] stay there.
    """
    n = x.shape[0]
    depth = layout.shape[0]
    end = workspace_size(n, layout)
    widest = np.max(layout[:, 1])
    delta = work[end - 2 * n * widest : end - n * widest]  # the last two blocks of the workspace
    spare = work[end - n * widest : end]

    previous = x
    offset = 0
    for layer in range(depth):
        fan_in, fan_out, w_at, b_at = layout[layer, 0], layout[layer, 1], layout[layer, 2], layout[layer, 3]
        z = _matrix(work, offset, n, fan_out)
        a = _matrix(work, offset + n * fan_out, n, fan_out)
        np.dot(previous, _matrix(params, w_at, fan_in, fan_out), z)  # a W
        bias_activation(z, params[b_at : b_at + fan_out], a, codes[layer], slope)  # Z = aW + b, A = σ(Z)
        previous = a
        offset += 2 * n * fan_out
    fan_out = layout[depth - 1, 1]
    loss = _output_delta(z, a, y, _matrix(delta, 0, n, fan_out), pair)  # δ_out = (ŷ − y) / N

    for layer in range(depth - 1, -1, -1):
        fan_in, fan_out, w_at, b_at = layout[layer, 0], layout[layer, 1], layout[layer, 2], layout[layer, 3]
        d = _matrix(delta, 0, n, fan_out)
        if layer == depth - 1:
            sum_rows(d, grads[b_at : b_at + fan_out])  # db = Σ_rows δ (the layers below fuse it)
        offset -= 2 * n * fan_out
        a_below = x if layer == 0 else _matrix(work, offset - n * fan_in, n, fan_in)
        np.dot(a_below.T, d, _matrix(grads, w_at, fan_in, fan_out))  # dW = aᵀ δ
        if layer == 0:
            break
        da_below = _matrix(spare, 0, n, fan_in)
        np.dot(d, _matrix(params, w_at, fan_in, fan_out).T, da_below)  # ∂J/∂A[l-1] = δ Wᵀ
        below_b = layout[layer - 1, 3]
        z_below = _matrix(work, offset - 2 * n * fan_in, n, fan_in)
        # δ[l-1] = ∂J/∂A[l-1] ∘ σ'(Z[l-1]) with db[l-1] = Σ_rows δ[l-1], into δ's buffer (free now):
        # written in place instead, the aliased loop stopped vectorising (4× slower).
        activation_backward(da_below, z_below, a_below, _matrix(delta, 0, n, fan_in),
                            grads[below_b : below_b + fan_in], codes[layer - 1], slope)
    return loss


class DenseStackKernel:
    """``dense_stack_gradients`` bound to one model: its layout, activation codes and scratch.

    Scratch is kept per batch size (a training run sees two: the batch and the last, shorter
    one), so steady-state steps allocate nothing.

    It declines (returns None) batches whose matrix products are large enough for OpenBLAS to
    thread them. ``np.dot`` in numba calls SciPy's OpenBLAS, a second thread pool beside
    NumPy's, and on 2 cores their spinning threads fought: config a (784-256-256-10, batch
    128) went from 0.88 to 1.6 ms a step when interleaved with NumPy products. Below the
    threshold a product runs on the calling thread; above it the products dominate the step
    and the layer-by-layer pass (NumPy's matmul) loses nothing to call overhead anyway.
    """

    MAX_BATCH_SIZES = 4
    # m·n·k of the largest product OpenBLAS keeps on the calling thread. Measured through np.dot
    # in numba: process CPU time = wall time up to 4·65536 multiply-adds, twice the wall time at 8·65536.
    SINGLE_THREAD_PRODUCT = 4 * 65536

    def __init__(self, backend, stack) -> None:
        self.backend = backend
        self.params, self.grads = stack.params, stack.grads
        self.dtype = stack.params.dtype
        self.layout = np.array([(n_in, n_out, w_at, b_at) for n_in, n_out, (w_at, b_at)
                                in zip(stack.widths[:-1], stack.widths[1:], stack.offsets, strict=True)], dtype=np.int64)
        self.codes = np.array([CODES[name] for name in stack.activations], dtype=np.int64)
        self.pair = PAIR_CODES[stack.output_pair]
        self.slope = self.dtype.type(stack.leaky_relu_slope)
        self._scratch: dict[int, tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = {}
        self.max_rows = self.SINGLE_THREAD_PRODUCT // int(np.max(self.layout[:, 0] * self.layout[:, 1]))

    def _scratch_for(self, n: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        found = self._scratch.get(n)
        if found is not None and self.backend.reuse_buffers:
            return found
        work = np.empty(workspace_size(n, self.layout), dtype=self.dtype)
        outputs, offset = [], 0
        for width in self.layout[:, 1]:
            size = n * int(width)
            outputs.append((work[offset : offset + size].reshape(n, -1), work[offset + size : offset + 2 * size].reshape(n, -1)))
            offset += 2 * size
        if self.backend.reuse_buffers:
            if len(self._scratch) >= self.MAX_BATCH_SIZES:
                self._scratch.pop(next(iter(self._scratch)))
            self._scratch[n] = (work, outputs)
        return work, outputs

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]] | None:
        if x.shape[0] > self.max_rows:
            return None
        x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
        work, outputs = self._scratch_for(x.shape[0])
        loss = dense_stack_gradients(x, y, self.params, self.grads, self.layout, self.codes, self.slope, self.pair, work)
        return np.asarray(loss, dtype=self.dtype), outputs
