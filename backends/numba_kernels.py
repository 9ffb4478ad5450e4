"""numba kernels for the toolkit's hot ops: each is one pass over memory with no temporaries.

Activations are passed as integer codes so that one compiled kernel serves them all; the
branch on the code is loop-invariant. Every kernel mirrors a reference in ``toolkit.ops``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from .activation_codes import CODES, LEAKY_RELU, RELU, SIGMOID, SOFTMAX, TANH  # noqa: F401

# Kernels are single-threaded on purpose: the matrix products around them run on every core in
# OpenBLAS, whose threads spin between calls; numba's own thread pool competed with them and lost
# more than it won (measured: a 784-256-256-10 step went from 0.9 ms to 8 ms).
# error_model="numpy" drops Python's division-by-zero checks, which kept loops from vectorising.
jit = numba.njit(cache=True, fastmath=False, nogil=True, error_model="numpy")


@jit
def _activate(v, code, slope):
    if code == RELU:
        return v if v > 0 else v * 0
    if code == SIGMOID:
        e = math.exp(-abs(v))
        return 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
    if code == TANH:
        return math.tanh(v)
    if code == LEAKY_RELU:
        return v if v > 0 else slope * v
    return v


@jit
def _derivative_times(da, z, a, code, slope):
    if code == RELU:
        return da if z > 0 else da * 0
    if code == SIGMOID:
        return da * a * (1.0 - a)
    if code == TANH:
        return da * (1.0 - a * a)
    if code == LEAKY_RELU:
        return da if z > 0 else slope * da
    return da


@jit
def bias_activation(z, b, a, code, slope):
    """Z ← Z + b in place and A = σ(Z), row by row (softmax needs the whole row)."""
    n, m = z.shape
    for i in range(n):
        if code == SOFTMAX:
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
            for j in range(m):
                a[i, j] /= total
        else:
            for j in range(m):
                v = z[i, j] + b[j]
                z[i, j] = v
                a[i, j] = _activate(v, code, slope)


@jit
def bias_add(z, b):
    """Z ← Z + b in place (identity activation: A is Z itself)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] += b[j]


@jit
def activation_backward(da, z, a, dz, db, code, slope):
    """δ = dA ∘ σ'(Z) into ``dz`` and db = Σ_rows δ into ``db``, in one pass."""
    n, m = z.shape
    for j in range(m):
        db[j] = 0
    for i in range(n):
        if code == SOFTMAX:
            dot = 0.0
            for j in range(m):
                dot += da[i, j] * a[i, j]
            for j in range(m):
                v = a[i, j] * (da[i, j] - dot)
                dz[i, j] = v
                db[j] += v
        else:
            for j in range(m):
                v = _derivative_times(da[i, j], z[i, j], a[i, j], code, slope)
                dz[i, j] = v
                db[j] += v


@jit
def sum_rows(x, out):
    n, m = x.shape
    for j in range(m):
        out[j] = 0
    for i in range(n):
        for j in range(m):
            out[j] += x[i, j]


@jit
def softmax_ce_delta(z, a, y, delta):
    """J = −(1/N) Σ y (z − max − log Σ e^(z−max)) and δ = (A − Y) / N, in one pass."""
    n, m = z.shape
    loss = 0.0
    for i in range(n):
        row_max = -np.inf
        for j in range(m):
            row_max = max(row_max, z[i, j])
        total = 0.0
        for j in range(m):
            total += math.exp(z[i, j] - row_max)
        log_total = math.log(total)
        for j in range(m):
            loss -= y[i, j] * (z[i, j] - row_max - log_total)
            delta[i, j] = (a[i, j] - y[i, j]) / n
    return loss / n


@jit
def sigmoid_bce_delta(z, a, y, delta):
    """J = mean(max(z, 0) − z y + log(1 + e^(−|z|))) and δ = (A − Y) / (N·k), in one pass."""
    n, m = z.shape
    size = n * m
    loss = 0.0
    for i in range(n):
        for j in range(m):
            v = z[i, j]
            loss += max(v, 0.0) - v * y[i, j] + math.log1p(math.exp(-abs(v)))
            delta[i, j] = (a[i, j] - y[i, j]) / size
    return loss / size


# Optimizer updates over the whole flat parameter buffer, one pass each. The operation order
# is the reference's (toolkit/ops/optim.py), so float64 results match it to the last bit or two.


@jit
def mse_delta(a, y, delta):
    """J = mean((A − Y)²) and δ = 2 (A − Y) / (N·k), in one pass."""
    n, m = a.shape
    scale = 2.0 / (n * m)
    loss = 0.0
    for i in range(n):
        for j in range(m):
            diff = a[i, j] - y[i, j]
            loss += diff * diff
            delta[i, j] = scale * diff
    return loss / (n * m)


def like(array, value):  # noqa: D103 - typed by the overload below
    raise NotImplementedError("only callable from numba-compiled code")


@overload(like)
def _like_overload(array, value):
    """``value`` cast to ``array``'s dtype inside compiled code."""
    dtype = array.dtype
    return lambda array, value: dtype(value)


# Update kernels take Python floats (cheap to pass: casting them to np.float32 on the Python
# side cost 1.8 µs a step) and cast them to the parameters' dtype before the loop. Left as
# float64, they would promote every float32 element and halve the SIMD width (Adam ran 3.3×
# slower that way); cast, the arithmetic is the reference's float32 arithmetic.


@jit
def sgd(param, grad, lr):
    lr = like(param, lr)
    for i in range(param.shape[0]):
        param[i] -= lr * grad[i]


@jit
def sgd_momentum(param, grad, velocity, lr, momentum, dampening, nesterov, weight_decay, first):
    lr, momentum, weight_decay = like(param, lr), like(param, momentum), like(param, weight_decay)
    one_minus_dampening = like(param, 1.0 - dampening)
    for i in range(param.shape[0]):
        g = grad[i] + weight_decay * param[i]
        v = g if first else momentum * velocity[i] + one_minus_dampening * g
        velocity[i] = v
        param[i] -= lr * (g + momentum * v if nesterov else v)


@jit
def adam(param, grad, m, v, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2):
    one_minus_beta1, one_minus_beta2 = like(param, 1.0 - beta1), like(param, 1.0 - beta2)
    step_size, beta1, beta2, eps = like(param, step_size), like(param, beta1), like(param, beta2), like(param, eps)
    shrink, l2, sqrt_correction2 = like(param, shrink), like(param, l2), like(param, sqrt_correction2)
    for i in range(param.shape[0]):
        p = param[i] * shrink
        g = grad[i] + l2 * p
        mi = beta1 * m[i] + one_minus_beta1 * g
        vi = beta2 * v[i] + one_minus_beta2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] = p - step_size * (mi / (math.sqrt(vi) / sqrt_correction2 + eps))


@jit
def rmsprop(param, grad, square_avg, lr, alpha, eps, weight_decay):
    one_minus_alpha = like(param, 1.0 - alpha)
    lr, alpha, eps, weight_decay = like(param, lr), like(param, alpha), like(param, eps), like(param, weight_decay)
    for i in range(param.shape[0]):
        g = grad[i] + weight_decay * param[i]
        s = alpha * square_avg[i] + one_minus_alpha * (g * g)
        square_avg[i] = s
        param[i] -= lr * g / (math.sqrt(s) + eps)
