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

import math

import numpy as np
from numba import types
from numba.extending import overload

from .activation_codes import CODES, LEAKY_RELU, RELU, SIGMOID, TANH
from .numba_kernels import jit

SOFTMAX_CE, SIGMOID_BCE, IDENTITY_MSE = range(3)
PAIR_CODES = {"softmax_ce": SOFTMAX_CE, "sigmoid_bce": SIGMOID_BCE, "identity_mse": IDENTITY_MSE}

# Eigen's rational approximation of float32 tanh (generic_fast_tanh_float): pure arithmetic,
# so the loops around it vectorise. Measured over 8M points against float64 tanh: at most
# 6.6 ulp (NumPy's SIMD tanh: 1.4 ulp; a scalar libm call per element cost 8 ns, this 0.3 ns).
_TANH_CLAMP = 7.99881172180175781
_TANH_NUMERATOR = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
                   1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
_TANH_DENOMINATOR = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def tanh(v):  # noqa: D103 - typed by the overload below
    raise NotImplementedError("only callable from numba-compiled code")


@overload(tanh)
def _tanh_overload(v):
    if v != types.float32:
        return lambda v: math.tanh(v)  # float64 keeps libm's correctly rounded-ish tanh
    clamp = np.float32(_TANH_CLAMP)
    n6, n5, n4, n3, n2, n1, n0 = (np.float32(c) for c in _TANH_NUMERATOR)
    d3, d2, d1, d0 = (np.float32(c) for c in _TANH_DENOMINATOR)
    tiny = np.float32(0.0004)
    saturated = np.float32(9.02)  # beyond 13 ln 2, float32 tanh rounds to ±1
    one = np.float32(1)

    def rational_tanh(v):
        x = min(max(v, -clamp), clamp)
        x2 = x * x
        p = ((((((n6 * x2 + n5) * x2 + n4) * x2 + n3) * x2 + n2) * x2 + n1) * x2 + n0) * x
        q = ((d3 * x2 + d2) * x2 + d1) * x2 + d0
        if abs(v) < tiny:
            return v
        if abs(v) > saturated:
            return one if v > 0 else -one
        return p / q

    return rational_tanh


@jit
def _activate_rows(z, b, a, code, slope):
    """Z ← Z + b and A = σ(Z) for an element-wise activation."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = z[i, j] + b[j]
            z[i, j] = v
            if code == RELU:
                a[i, j] = v if v > 0 else v * 0
            elif code == TANH:
                a[i, j] = tanh(v)
            elif code == SIGMOID:
                e = math.exp(-abs(v))
                a[i, j] = 1 / (1 + e) if v >= 0 else e / (1 + e)
            elif code == LEAKY_RELU:
                a[i, j] = v if v > 0 else slope * v
            else:
                a[i, j] = v


@jit
def _output_delta(z, b, a, y, delta, pair):
    """Bias, output activation, loss and δ_out in one pass over the last layer; returns the loss."""
    n, m = z.shape
    loss = 0.0
    if pair == SOFTMAX_CE:
        for i in range(n):
            row_max = -np.inf
            for j in range(m):
                v = z[i, j] + b[j]
                z[i, j] = v
                row_max = max(row_max, v)
            total = 0.0
            for j in range(m):
                e = math.exp(z[i, j] - row_max)
                a[i, j] = e
                total += e
            log_total = math.log(total)
            for j in range(m):
                a[i, j] /= total
                loss -= y[i, j] * (z[i, j] - row_max - log_total)
                delta[i, j] = (a[i, j] - y[i, j]) / n
        return loss / n
    size = n * m
    if pair == SIGMOID_BCE:
        for i in range(n):
            for j in range(m):
                v = z[i, j] + b[j]
                z[i, j] = v
                e = math.exp(-abs(v))
                s = 1 / (1 + e) if v >= 0 else e / (1 + e)
                a[i, j] = s
                loss += max(v, 0.0) - v * y[i, j] + math.log1p(e)
                delta[i, j] = (s - y[i, j]) / size
        return loss / size
    scale = 2.0 / size
    for i in range(n):
        for j in range(m):
            v = z[i, j] + b[j]
            z[i, j] = v
            a[i, j] = v
            diff = v - y[i, j]
            loss += diff * diff
            delta[i, j] = scale * diff
    return loss / size


@jit
def _delta_through_activation(d, z, a, code, slope):
    """δ ← ∂J/∂A ∘ σ'(Z), in place."""
    n, m = d.shape
    for i in range(n):
        for j in range(m):
            g = d[i, j]
            if code == RELU:
                d[i, j] = g if z[i, j] > 0 else g * 0
            elif code == TANH:
                d[i, j] = g * (1 - a[i, j] * a[i, j])
            elif code == SIGMOID:
                d[i, j] = g * a[i, j] * (1 - a[i, j])
            elif code == LEAKY_RELU:
                d[i, j] = g if z[i, j] > 0 else slope * g


@jit
def _sum_rows(x, out):
    n, m = x.shape
    for j in range(m):
        out[j] = 0
    for i in range(n):
        for j in range(m):
            out[j] += x[i, j]


@jit
def workspace_size(n, layout):
    """Elements of scratch a batch of ``n`` rows needs: Z and A per layer, two δ buffers."""
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
def dense_stack_gradients(x, y, params, grads, layout, codes, slope, pair, work):
    """Forward, loss, δ_out and backward of the whole stack; fills ``grads``, returns the loss.

    ``layout[l] = (fan_in, fan_out, W offset, b offset)`` into the flat ``params``/``grads``;
    ``codes[l]`` is layer l's activation (the last one is fixed by ``pair``). ``work`` holds
    ``workspace_size(n, layout)`` elements; Z[l] and A[l] stay there for the caller.
    """
    n = x.shape[0]
    depth = layout.shape[0]
    widest = 0
    offset = 0
    for layer in range(depth):
        widest = max(widest, layout[layer, 1])
        offset += 2 * n * layout[layer, 1]
    delta = work[offset : offset + n * widest]
    spare = work[offset + n * widest : offset + 2 * n * widest]

    previous = x
    offset = 0
    loss = 0.0
    for layer in range(depth):
        fan_in, fan_out, w_at, b_at = layout[layer, 0], layout[layer, 1], layout[layer, 2], layout[layer, 3]
        w = _matrix(params, w_at, fan_in, fan_out)
        b = params[b_at : b_at + fan_out]
        z = _matrix(work, offset, n, fan_out)
        a = _matrix(work, offset + n * fan_out, n, fan_out)
        np.dot(previous, w, z)  # a W
        if layer < depth - 1:
            _activate_rows(z, b, a, codes[layer], slope)
        else:
            loss = _output_delta(z, b, a, y, delta[: n * fan_out].reshape((n, fan_out)), pair)
        previous = a
        offset += 2 * n * fan_out

    for layer in range(depth - 1, -1, -1):
        fan_in, fan_out, w_at, b_at = layout[layer, 0], layout[layer, 1], layout[layer, 2], layout[layer, 3]
        d = delta[: n * fan_out].reshape((n, fan_out))
        _sum_rows(d, grads[b_at : b_at + fan_out])  # db = Σ_rows δ
        offset -= 2 * n * fan_out
        if layer == 0:
            np.dot(x.T, d, _matrix(grads, w_at, fan_in, fan_out))  # dW = aᵀ δ
            break
        below = offset - 2 * n * fan_in  # Z and A of the layer below
        a_below = _matrix(work, below + n * fan_in, n, fan_in)
        np.dot(a_below.T, d, _matrix(grads, w_at, fan_in, fan_out))
        d_below = spare[: n * fan_in].reshape((n, fan_in))
        np.dot(d, _matrix(params, w_at, fan_in, fan_out).T, d_below)  # ∂J/∂A[l-1] = δ Wᵀ
        _delta_through_activation(d_below, _matrix(work, below, n, fan_in), a_below, codes[layer - 1], slope)
        delta, spare = spare, delta
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
    SINGLE_THREAD_PRODUCT = 4 * 65536  # OpenBLAS GEMM_MULTITHREAD_THRESHOLD × SMP_THRESHOLD_MIN (m·n·k)

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
