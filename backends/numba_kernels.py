"""numba kernels for the toolkit's hot ops: each is one pass over memory with no temporaries.

Activations are integer codes from the toolkit's table. The per-layer loops are compiled once
per code (``for_activation``), so the branch on it folds away; the whole-pass runner of Dense
stacks picks codes at run time and calls ``*_by_code``, which branch once, outside the loops,
into a copy of the loop per code. Every kernel mirrors a reference in ``toolkit.ops``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import types
from numba.extending import overload

from toolkit.ops import random
from toolkit.ops.activations import CODES, GELU_CUBIC, GELU_SCALE

# Branch constants of the compiled code, taken from the toolkit's one activation table.
IDENTITY, RELU, SIGMOID, TANH, LEAKY_RELU, SOFTMAX, GELU, SILU, ELU, SOFTPLUS = (CODES[name] for name in (
    "identity", "relu", "sigmoid", "tanh", "leaky_relu", "softmax", "gelu", "silu", "elu", "softplus"))

# Kernels are single-threaded on purpose: the matrix products around them run on every core in
# OpenBLAS, whose threads spin between calls; numba's own thread pool competed with them and lost
# more than it won (measured: a 784-256-256-10 step went from 0.9 ms to 8 ms).
# error_model="numpy" drops Python's division-by-zero checks, which kept loops from vectorising.
jit = numba.njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
# Kernels whose rows are sums: LLVM vectorises a reduction only when it may reorder the additions
# ("reassoc"; "nsz" lets it start from +0, "contract" fuses a·b + c). Round-off changes within the
# dtype's tolerance; NaN and inf keep their meaning (no "nnan"/"ninf"). Softmax over attention rows:
# 2.4 → 0.6 ms at (128, 64, 64) float32, causal.
reducing_jit = numba.njit(cache=True, fastmath={"reassoc", "nsz", "contract"}, nogil=True, error_model="numpy")
# Loop bodies that other kernels share: numba copies them into each caller before compiling it.
inline = numba.njit(inline="always", error_model="numpy")


def like(reference, value):  # noqa: D103 - typed by the overload below
    raise NotImplementedError("only callable from numba-compiled code")


@overload(like)
def _like_overload(reference, value):
    """``value`` cast to the dtype of ``reference`` (an array or a scalar), in compiled code.

    numba types a Python literal or float as float64, and float32 × float64 is float64: a
    constant left uncast turns float32 loops into float64 ones (half the SIMD width, and a
    result that differs from the float32 reference)."""
    dtype = reference.dtype if isinstance(reference, types.Array) else reference
    return lambda reference, value: dtype(value)


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


# Cephes' float32 exp (expf.c): e^v = 2^n · e^x with n = round(v / ln 2) and |x| ≤ ln 2 / 2, e^x a
# degree-7 polynomial, ln 2 split in two constants so that v − n ln 2 is exact. Pure arithmetic, so
# the loops around it vectorise (numba's float32 math.exp is a scalar libm call: measured 2.9 ns an
# element against 0.7–1.0 ns here, over 1M values on a 2-core AMD EPYC; over 4M points of [−110, 95] at
# most 0.97 ulp from float64's exp, subnormal results within one subnormal step).
# n is taken with np.floor, not math.floor: math.floor returns int64, whose conversion AVX2 cannot
# vectorise. 2^n is two factors 2^(n//2) · 2^(n − n//2), each a normal float32, so results near
# the overflow and in the subnormal range are right too.
_EXP_POLYNOMIAL = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                   5.0000001201e-1)
_EXP_HIGHEST = 88.72283905206835  # ln(largest float32): above it e^v overflows to inf
_EXP_LOWEST = -103.97208405  # below it e^v rounds to 0 even as a subnormal


def exp(v):  # noqa: D103 - typed by the overload below
    raise NotImplementedError("only callable from numba-compiled code")


@overload(exp)
def _exp_overload(v):
    if v != types.float32:
        return lambda v: math.exp(v)
    p0, p1, p2, p3, p4, p5 = (np.float32(c) for c in _EXP_POLYNOMIAL)
    highest, lowest = np.float32(_EXP_HIGHEST), np.float32(_EXP_LOWEST)
    log2e, ln2_high, ln2_low = np.float32(1.44269504088896341), np.float32(0.693359375), np.float32(-2.12194440e-4)
    one, half, zero, inf = np.float32(1), np.float32(0.5), np.float32(0), np.float32(np.inf)
    bias, mantissa_bits = np.int32(127), np.int32(23)

    def cephes_exp(v):
        x = min(max(v, lowest), highest)
        n = np.floor(x * log2e + half)
        x = x - n * ln2_high - n * ln2_low
        y = (((((p0 * x + p1) * x + p2) * x + p3) * x + p4) * x + p5) * (x * x) + x + one
        whole = np.int32(n)
        first = whole >> np.int32(1)
        y = y * np.int32((first + bias) << mantissa_bits).view(np.float32)
        y = y * np.int32((whole - first + bias) << mantissa_bits).view(np.float32)
        if v > highest:
            return inf
        if v < lowest:
            return zero
        return y if v == v else v  # NaN stays NaN

    return cephes_exp


@jit
def _sigmoid(v):
    one = like(v, 1)
    e = math.exp(-abs(v))
    return one / (one + e) if v >= 0 else e / (one + e)


@jit
def _gelu_tanh(v):
    return tanh(like(v, GELU_SCALE) * (v + like(v, GELU_CUBIC) * (v * v * v)))


@jit
def _activate(v, code, slope):
    zero, one, half = like(v, 0), like(v, 1), like(v, 0.5)
    if code == RELU:
        return v if (v > 0 or v != v) else zero  # NaN propagates, as in the reference's maximum
    if code == SIGMOID:
        return _sigmoid(v)
    if code == TANH:
        return tanh(v)
    if code == LEAKY_RELU:
        return v if v > 0 else like(v, slope) * v
    if code == GELU:
        return half * v * (one + _gelu_tanh(v))
    if code == SILU:
        return v * _sigmoid(v)
    if code == ELU:
        return v if v > 0 else math.expm1(min(v, zero))
    if code == SOFTPLUS:
        return max(v, zero) + math.log1p(math.exp(-abs(v)))
    return v


@jit
def _derivative_times(da, z, a, code, slope):
    one, half = like(a, 1), like(a, 0.5)
    if code == RELU:
        return da if z > 0 else da * like(da, 0)  # da · 0: a NaN gradient stays NaN
    if code == SIGMOID:
        return da * a * (one - a)
    if code == TANH:
        return da * (one - a * a)
    if code == LEAKY_RELU:
        return da if z > 0 else like(da, slope) * da
    if code == GELU:
        t = _gelu_tanh(z)
        return da * (half * (one + t) + half * z * (one - t * t)
                     * (like(z, GELU_SCALE) * (one + like(z, 3.0 * GELU_CUBIC) * (z * z))))
    if code == SILU:
        s = _sigmoid(z)
        return da * (s * (one + z * (one - s)))
    if code == ELU:
        return da if z > 0 else da * (a + one)
    if code == SOFTPLUS:
        return da * _sigmoid(z)
    return da


# The activation loops are written once and compiled twice over: as they are, with the activation
# code an argument (the whole-pass runner of Dense stacks picks the code per layer at run time),
# and inlined into ``for_activation``'s kernels, where the code is a constant of the compiled
# function, every branch on it folds away and the loop vectorises (ReLU over a convolution's output
# ran 7× faster that way).


@jit
def bias_activation(z, b, a, code, slope):
    """Z ← Z + b in place and A = σ(Z), row by row (softmax needs the whole row)."""
    n, m = z.shape
    for i in range(n):
        if code == SOFTMAX:
            # In Z's own dtype: float64 scalars here made every float32 exp a double exp (2.5× slower).
            row_max = z[i, 0] + b[0]
            for j in range(m):
                v = z[i, j] + b[j]
                z[i, j] = v
                row_max = max(row_max, v)
            total = like(z, 0.0)
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
def bias_activation_flat(z, tile, a, code, slope):
    """``bias_activation`` of a narrow (n, m) batch as flat arrays: ``tile`` is b repeated r times
    (length r·m), so each pass of the inner loop covers r rows and is long enough to vectorise."""
    width = tile.shape[0]
    for start in range(0, z.shape[0], width):
        # Slices, indexed from 0 by the loop counter: numba adds a negative-index check to z[start + t]
        # (it cannot tell the sum is ≥ 0), and that check kept the loop from vectorising.
        zs, as_ = z[start : start + width], a[start : start + width]
        for t in range(zs.shape[0]):
            v = zs[t] + tile[t]
            zs[t] = v
            as_[t] = _activate(v, code, slope)


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
def activation_backward_flat(da, z, a, dz, partial, code, slope):
    """``activation_backward`` of a narrow batch as flat arrays; ``partial`` (the tile's length)
    gathers the column sums, which the caller folds into db."""
    width = partial.shape[0]
    for start in range(0, z.shape[0], width):
        end = start + width
        das, zs, as_, dzs = da[start:end], z[start:end], a[start:end], dz[start:end]
        for t in range(zs.shape[0]):
            v = _derivative_times(das[t], zs[t], as_[t], code, slope)
            dzs[t] = v
            partial[t] += v


_bias_activation_rows, _bias_activation_flat = inline(bias_activation.py_func), inline(bias_activation_flat.py_func)
_activation_backward_rows = inline(activation_backward.py_func)
_activation_backward_flat = inline(activation_backward_flat.py_func)


@jit
def bias_activation_by_code(z, b, a, code, slope):
    """``bias_activation`` with the branch on ``code`` taken once, before the loops: each arm
    inlines the loop with its code a constant, so every arm's loop vectorises. (With ten codes in
    one loop LLVM no longer hoisted the branch itself, and tanh over 64×32 values went from 0.84
    to 7.9 µs.) The whole-pass runner of Dense stacks picks its layers' codes at run time."""
    if code == RELU:
        _bias_activation_rows(z, b, a, RELU, slope)
    elif code == SIGMOID:
        _bias_activation_rows(z, b, a, SIGMOID, slope)
    elif code == TANH:
        _bias_activation_rows(z, b, a, TANH, slope)
    elif code == LEAKY_RELU:
        _bias_activation_rows(z, b, a, LEAKY_RELU, slope)
    elif code == SOFTMAX:
        _bias_activation_rows(z, b, a, SOFTMAX, slope)
    elif code == GELU:
        _bias_activation_rows(z, b, a, GELU, slope)
    elif code == SILU:
        _bias_activation_rows(z, b, a, SILU, slope)
    elif code == ELU:
        _bias_activation_rows(z, b, a, ELU, slope)
    elif code == SOFTPLUS:
        _bias_activation_rows(z, b, a, SOFTPLUS, slope)
    else:
        _bias_activation_rows(z, b, a, IDENTITY, slope)


@jit
def activation_backward_by_code(da, z, a, dz, db, code, slope):
    """``activation_backward`` with the branch on ``code`` taken once (see ``bias_activation_by_code``)."""
    if code == RELU:
        _activation_backward_rows(da, z, a, dz, db, RELU, slope)
    elif code == SIGMOID:
        _activation_backward_rows(da, z, a, dz, db, SIGMOID, slope)
    elif code == TANH:
        _activation_backward_rows(da, z, a, dz, db, TANH, slope)
    elif code == LEAKY_RELU:
        _activation_backward_rows(da, z, a, dz, db, LEAKY_RELU, slope)
    elif code == SOFTMAX:
        _activation_backward_rows(da, z, a, dz, db, SOFTMAX, slope)
    elif code == GELU:
        _activation_backward_rows(da, z, a, dz, db, GELU, slope)
    elif code == SILU:
        _activation_backward_rows(da, z, a, dz, db, SILU, slope)
    elif code == ELU:
        _activation_backward_rows(da, z, a, dz, db, ELU, slope)
    elif code == SOFTPLUS:
        _activation_backward_rows(da, z, a, dz, db, SOFTPLUS, slope)
    else:
        _activation_backward_rows(da, z, a, dz, db, IDENTITY, slope)


class ActivationKernels(NamedTuple):
    """The four activation loops compiled for one activation (see ``for_activation``)."""

    bias_activation: Any  # (z, b, a, slope)
    bias_activation_flat: Any  # (z, tile, a, slope)
    activation_backward: Any  # (da, z, a, dz, db, slope)
    activation_backward_flat: Any  # (da, z, a, dz, partial, slope)


@functools.cache
def for_activation(code: int) -> ActivationKernels:
    """The activation loops with ``code`` a compile-time constant (cached on disk per code:
    numba keys a closure's cache entry by the values it closes over)."""

    @jit
    def bias_activation_one(z, b, a, slope):
        _bias_activation_rows(z, b, a, code, slope)

    @jit
    def bias_activation_flat_one(z, tile, a, slope):
        _bias_activation_flat(z, tile, a, code, slope)

    @jit
    def activation_backward_one(da, z, a, dz, db, slope):
        _activation_backward_rows(da, z, a, dz, db, code, slope)

    @jit
    def activation_backward_flat_one(da, z, a, dz, partial, slope):
        _activation_backward_flat(da, z, a, dz, partial, code, slope)

    return ActivationKernels(bias_activation_one, bias_activation_flat_one, activation_backward_one,
                             activation_backward_flat_one)


@jit
def bias_add(z, b):
    """Z ← Z + b in place (identity activation: A is Z itself)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] += b[j]


@reducing_jit
def layer_norm(x, gamma, beta, eps, y, x_hat, inv_std):
    """Per row of x (R, C): x̂ = (x − μ)/√(σ² + ε), y = γ x̂ + β; inv_std (R,) = 1/√(σ² + ε)."""
    rows, width = x.shape
    count = like(eps, width)  # an int divisor would promote float32 sums to float64
    for r in range(rows):
        row = x[r]
        mean = like(eps, 0.0)  # sums in x's dtype, as the reference's; float64 ones did not vectorise
        for j in range(width):
            mean += row[j]
        mean /= count
        square = like(eps, 0.0)
        for j in range(width):
            centered = row[j] - mean
            square += centered * centered
        scale = like(eps, 1.0) / math.sqrt(square / count + eps)
        inv_std[r] = scale
        for j in range(width):
            normalized = (row[j] - mean) * scale
            x_hat[r, j] = normalized
            y[r, j] = gamma[j] * normalized + beta[j]


@reducing_jit
def layer_norm_backward(dy, x_hat, inv_std, gamma, dx, d_gamma, d_beta):
    """∂J/∂x = (g − mean(g) − x̂ ∘ mean(g ∘ x̂)) · inv_std per row, g = dy ∘ γ; dγ = Σ dy ∘ x̂, dβ = Σ dy."""
    rows, width = dy.shape
    count = like(inv_std, width)
    d_gamma[:] = 0.0
    d_beta[:] = 0.0
    for r in range(rows):
        dy_row, x_hat_row = dy[r], x_hat[r]
        mean_g = like(inv_std, 0.0)
        mean_g_x_hat = like(inv_std, 0.0)
        for j in range(width):
            g = dy_row[j] * gamma[j]
            mean_g += g
            mean_g_x_hat += g * x_hat_row[j]
        for j in range(width):
            d_gamma[j] += dy_row[j] * x_hat_row[j]
            d_beta[j] += dy_row[j]
        mean_g /= count
        mean_g_x_hat /= count
        for j in range(width):
            dx[r, j] = inv_std[r] * (dy_row[j] * gamma[j] - mean_g - x_hat_row[j] * mean_g_x_hat)


@reducing_jit
def attention_softmax(scores, causal, out):
    """Each row of scores (R, T, T) → its softmax; with ``causal``, row i over columns j ≤ i only
    (the rest 0), as ``toolkit.ops.attention.masked_softmax`` with the causal mask."""
    rows, length = scores.shape[0], scores.shape[1]
    for r in range(rows):
        for i in range(length):
            end = i + 1 if causal else length
            row, weights = scores[r, i], out[r, i]
            largest = row[0]
            for j in range(1, end):
                largest = max(largest, row[j])
            total = like(largest, 0.0)  # in the scores' dtype: a float64 sum made every float32 exp a double one
            for j in range(end):
                e = exp(row[j] - largest)
                weights[j] = e
                total += e
            scale = like(total, 1.0) / total
            for j in range(end):
                weights[j] *= scale
            for j in range(end, length):
                weights[j] = 0


@reducing_jit
def attention_softmax_backward(dp, p, out):
    """dS = P ∘ (dP − Σ_j dP ∘ P), row by row, for (R, T, T) arrays."""
    rows, length = dp.shape[0], dp.shape[1]
    for r in range(rows):
        for i in range(length):
            dp_row, p_row, ds_row = dp[r, i], p[r, i], out[r, i]
            total = like(dp_row, 0.0)
            for j in range(dp_row.shape[0]):
                total += dp_row[j] * p_row[j]
            for j in range(dp_row.shape[0]):
                ds_row[j] = p_row[j] * (dp_row[j] - total)


@jit
def scatter_add_rows(ids, values, out):
    """out[r] = Σ values[p] over the p with ids[p] = r (an embedding's gradient), in position order."""
    out[:] = 0
    width = values.shape[1]
    for p in range(ids.shape[0]):
        row = ids[p]
        for j in range(width):
            out[row, j] += values[p, j]


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
    """J = −(1/N) Σ y (z − max − log Σ e^(z−max)) and δ = (A·Σₖyₖ − Y) / N, in one pass
    (the row sum keeps δ exact for target rows that do not sum to 1).

    ``a`` is softmax(z), so at the row's largest logit a = e⁰ / Σ e^(z−max): the log-sum-exp
    is −log a there, one logarithm per row instead of an exponential per element.
    """
    n, m = z.shape
    rows = like(delta, n)
    loss = 0.0
    for i in range(n):
        top = 0
        for j in range(1, m):
            if z[i, j] > z[i, top]:
                top = j
        log_total = -math.log(a[i, top])
        row_max = z[i, top]
        weight = like(delta, 0.0)
        for j in range(m):
            loss -= y[i, j] * (z[i, j] - row_max - log_total)
            weight += y[i, j]
        for j in range(m):
            delta[i, j] = (a[i, j] * weight - y[i, j]) / rows
    return loss / n


@jit
def sigmoid_bce_delta(z, a, y, delta):
    """J = mean(max(z, 0) − z y + log(1 + e^(−|z|))) and δ = (A − Y) / (N·k), in one pass."""
    n, m = z.shape
    size = like(delta, n * m)
    loss = 0.0
    for i in range(n):
        for j in range(m):
            v = z[i, j]
            loss += max(v, 0.0) - v * y[i, j] + math.log1p(math.exp(-abs(v)))
            delta[i, j] = (a[i, j] - y[i, j]) / size
    return loss / size


@jit
def mse_delta(a, y, delta):
    """J = mean((A − Y)²) and δ = 2 (A − Y) / (N·k), in one pass."""
    n, m = a.shape
    scale = like(delta, 2.0 / (n * m))
    loss = 0.0
    for i in range(n):
        for j in range(m):
            diff = a[i, j] - y[i, j]
            loss += diff * diff
            delta[i, j] = scale * diff
    return loss / (n * m)


# Optimizer updates over the whole flat parameter buffer, one pass each. The operation order
# is the reference's (toolkit/ops/optim.py), so float64 results match it to the last bit or two.
# Update kernels take Python floats (cheap to pass: casting them to np.float32 on the Python
# side cost 1.8 µs a step) and cast them to the parameters' dtype before the loop. Left as
# float64, they would promote every float32 element and halve the SIMD width (Adam ran 3.3×
# slower that way); cast, the arithmetic is the reference's float32 arithmetic.


@jit
def sgd(param, grad, grad_scale, lr):
    grad_scale, lr = like(param, grad_scale), like(param, lr)
    for i in range(param.shape[0]):
        param[i] -= lr * (grad_scale * grad[i])


@jit
def sgd_momentum(param, grad, velocity, grad_scale, lr, momentum, carry, gain, nesterov, weight_decay):
    grad_scale, lr, momentum = like(param, grad_scale), like(param, lr), like(param, momentum)
    weight_decay = like(param, weight_decay)
    carry, gain = like(param, carry), like(param, gain)
    for i in range(param.shape[0]):
        g = grad_scale * grad[i] + weight_decay * param[i]
        v = carry * velocity[i] + gain * g
        velocity[i] = v
        param[i] -= lr * (g + momentum * v if nesterov else v)


@jit
def adam(param, grad, m, v, grad_scale, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2):
    one_minus_beta1, one_minus_beta2 = like(param, 1.0 - beta1), like(param, 1.0 - beta2)
    grad_scale = like(param, grad_scale)
    step_size, beta1, beta2, eps = like(param, step_size), like(param, beta1), like(param, beta2), like(param, eps)
    shrink, l2, sqrt_correction2 = like(param, shrink), like(param, l2), like(param, sqrt_correction2)
    for i in range(param.shape[0]):
        p = param[i] * shrink
        g = grad_scale * grad[i] + l2 * p
        mi = beta1 * m[i] + one_minus_beta1 * g
        vi = beta2 * v[i] + one_minus_beta2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] = p - step_size * (mi / (math.sqrt(vi) / sqrt_correction2 + eps))


@jit
def rmsprop(param, grad, square_avg, grad_scale, lr, alpha, eps, weight_decay):
    one_minus_alpha, grad_scale = like(param, 1.0 - alpha), like(param, grad_scale)
    lr, alpha, eps, weight_decay = like(param, lr), like(param, alpha), like(param, eps), like(param, weight_decay)
    for i in range(param.shape[0]):
        g = grad_scale * grad[i] + weight_decay * param[i]
        s = alpha * square_avg[i] + one_minus_alpha * (g * g)
        square_avg[i] = s
        param[i] -= lr * g / (math.sqrt(s) + eps)


# Windows of channels-last images (toolkit.ops.conv): one pass each, no temporaries.
#
# Flat offsets are unsigned (np.uint64, and only uint64 with uint64: numba turns uint64 + int64 into
# a float). A signed index gets numba's negative-index wraparound, a compare and an add per access
# that it cannot prove away for a computed offset, and that kept the copies from vectorising
# (im2col of the LeNet's second layer: 0.59 → 0.21 ms).
_U = np.uint64


@inline
def _im2col(x, kh, kw, sh, sw, out, channels):
    """out[n, y, x, i·kw + j, c] = x[n, y·sh + i, x·sw + j, c].

    For one kernel row i the kw·C values x[n, y·sh + i, x·sw : x·sw + kw, :] are adjacent in
    memory (channels-last), and so are their places in ``out``: each is copied as one run, so
    the innermost loop is kw·C long, not C (1 for a grey image)."""
    n, ho, wo = out.shape[0], out.shape[1], out.shape[2]
    hp, wp = x.shape[1], x.shape[2]
    run = _U(kw * channels)
    source, target = x.reshape(-1), out.reshape(-1)
    for b in range(n):
        for y in range(ho):
            for z in range(wo):
                to = _U(((b * ho + y) * wo + z) * kh) * run
                for i in range(kh):
                    at = _U(((b * hp + y * sh + i) * wp + z * sw) * channels)
                    for t in range(run):
                        target[to + t] = source[at + t]
                    to += run


@jit
def im2col(x, kh, kw, sh, sw, out):
    _im2col(x, kh, kw, sh, sw, out, x.shape[3])


# Windows whose kernel rows are this short (kw·C values) or shorter get an im2col compiled for
# their (kh, kw, C): with those constants the whole window's copies unroll into straight-line
# code. A 5×5 window over a grey image went 0.46 → 0.31 ms at batch 64; fixing the run length
# alone gained nothing.
SHORT_RUN = 8


@functools.cache
def im2col_for(kh: int, kw: int, channels: int) -> Any:
    """``im2col`` for one window shape ``kh × kw`` over ``channels`` (kw·C ≤ ``SHORT_RUN``)."""

    @jit
    def im2col_window(x, kh_, kw_, sh, sw, out):
        _im2col(x, kh, kw, sh, sw, out, channels)

    return im2col_window


@inline
def _col2im(cols, kh, kw, sh, sw, out, channels):
    """The adjoint of im2col: out[n, y·sh + i, x·sw + j, c] += cols[n, y, x, i·kw + j, c], one
    run of kw·C adjacent values per kernel row (as in ``im2col``)."""
    n, ho, wo = cols.shape[0], cols.shape[1], cols.shape[2]
    hp, wp = out.shape[1], out.shape[2]
    run = _U(kw * channels)
    source, target = cols.reshape(-1), out.reshape(-1)
    target[:] = 0
    for b in range(n):
        for y in range(ho):
            for z in range(wo):
                at = _U(((b * ho + y) * wo + z) * kh) * run
                for i in range(kh):
                    to = _U(((b * hp + y * sh + i) * wp + z * sw) * channels)
                    for t in range(run):
                        target[to + t] += source[at + t]
                    at += run


@jit
def col2im(cols, kh, kw, sh, sw, out):
    _col2im(cols, kh, kw, sh, sw, out, cols.shape[4])


@inline
def _max_pool(x, kh, kw, sh, sw, out, winners, channels):
    """Largest value of each window and its offset i·kw + j (the first one on ties).

    In two passes per output row: first the window's kh rows are compared along whole input rows
    (Wp·C adjacent values, a loop long enough to vectorise), then the kw columns of that row
    maximum. One pass per pixel ran along its C channels (6 in the LeNet): too short to vectorise,
    and 2× slower."""
    n, ho, wo = out.shape[0], out.shape[1], out.shape[2]
    hp, wp = x.shape[1], x.shape[2]
    size, width, step = _U(wp * channels), _U(wo * channels), _U(sw * channels)
    rows_max = np.empty(wp * channels, dtype=x.dtype)
    rows_winner = np.empty(wp * channels, dtype=winners.dtype)
    source, best, where = x.reshape(-1), out.reshape(-1), winners.reshape(-1)
    for b in range(n):
        for y in range(ho):
            at = _U((b * hp + y * sh) * wp * channels)
            for t in range(size):
                rows_max[t] = source[at + t]
                rows_winner[t] = 0
            for i in range(1, kh):
                at = _U((b * hp + y * sh + i) * wp * channels)
                for t in range(size):
                    v, top = source[at + t], rows_max[t]
                    # NaN wins, as in the reference's max; selects, not branches (which pixel wins is data).
                    take = (v > top) | ((v != v) & (top == top))
                    rows_max[t] = v if take else top
                    rows_winner[t] = i * kw if take else rows_winner[t]
            o = _U((b * ho + y) * wo) * _U(channels)
            top_row, won_row = best[o : o + width], where[o : o + width]
            for z in range(wo):
                pixel = _U(z) * step
                for c in range(channels):
                    top_row[z * channels + c] = rows_max[pixel + _U(c)]
                    won_row[z * channels + c] = rows_winner[pixel + _U(c)]
                for j in range(1, kw):
                    column = pixel + _U(j * channels)
                    for c in range(channels):
                        v, top = rows_max[column + _U(c)], top_row[z * channels + c]
                        offset, held = rows_winner[column + _U(c)] + j, won_row[z * channels + c]
                        # Ties (NaN ties too) go to the earlier offset in row-major order, which the
                        # row pass alone does not know: its winner may sit in a later row.
                        tied = (v == top) | ((v != v) & (top != top))
                        take = (v > top) | ((v != v) & (top == top)) | (tied & (offset < held))
                        top_row[z * channels + c] = v if take else top
                        won_row[z * channels + c] = offset if take else held


@jit
def max_pool(x, kh, kw, sh, sw, out, winners):
    _max_pool(x, kh, kw, sh, sw, out, winners, out.shape[3])


@jit
def max_pool_backward(grad, winners, kh, kw, sh, sw, out):
    """Each window's gradient added to its winner's pixel; every other pixel 0."""
    n, ho, wo, channels = grad.shape
    h, w = out.shape[1], out.shape[2]
    # Where each window offset i·kw + j lies from the window's corner, in flat (H, W, C) steps: a
    # table instead of an integer division per element.
    jump = np.empty(kh * kw, dtype=np.uint64)
    for i in range(kh):
        for j in range(kw):
            jump[i * kw + j] = _U((i * w + j) * channels)
    target, source, where = out.reshape(-1), grad.reshape(-1), winners.reshape(-1)
    target[:] = 0
    for b in range(n):
        for y in range(ho):
            o = _U((b * ho + y) * wo * channels)
            for z in range(wo):
                corner = _U(((b * h + y * sh) * w + z * sw) * channels)
                at = o + _U(z * channels)
                for c in range(channels):
                    target[corner + jump[where[at + _U(c)]] + _U(c)] += source[at + _U(c)]


_M0, _M1, _M2 = random.MULTIPLIERS
_MASK = random.MASK


@jit
def _mix(h):
    """``toolkit.ops.random.mix`` (int64 arithmetic, values in [0, 2³²))."""
    h ^= h >> 16
    h = (h * _M0) & _MASK
    h ^= h >> 16
    h = (h * _M1) & _MASK
    h ^= h >> 16
    h = (h * _M2) & _MASK
    return h ^ (h >> 15)


@jit
def dropout_mask(mask, start, key, threshold, scale):
    """``toolkit.ops.random.dropout_mask`` into the flat ``mask``: element i of global index start + i."""
    zero = like(scale, 0)
    for i in range(mask.size):
        h = _mix((_mix((start + i) ^ key) + key) & _MASK)
        mask[i] = scale if h >= threshold else zero


# The recurrent cells of toolkit.ops.recurrent, float32. Per row, each gate block is a contiguous
# slice and each loop touches at most four of them: LLVM then vectorises every loop with the rational
# tanh above (one loop over all blocks and outputs at once ran scalar, 4× slower than NumPy's ufuncs).
# The gate σ(v) = 1 / (1 + e^−v) takes the polynomial exp above (the reference writes it
# (1 + tanh(v/2)) / 2, the same function): an LSTM cell at 64 × 128 float32 went from 64 to 45 µs
# with this and "contract" (FMA), which these kernels may use: each has one caller, so no second
# path could round differently, which is why ``jit`` has no fast-math flag at all.
cell_jit = numba.njit(cache=True, fastmath={"contract"}, nogil=True, error_model="numpy")


@inline
def _gate(v):
    one = like(v, 1.0)
    return one / (one + exp(-v))


@inline
def _block(m, row, k, units):
    """Gate block k of a row of side-by-side blocks: m[row, kH : (k+1)H]."""
    return m[row, k * units : (k + 1) * units]


@inline
def _lstm_saved(saved, row, units):
    """The LSTM's saved blocks of a row: i, f, g, o, tanh c'."""
    return (_block(saved, row, 0, units), _block(saved, row, 1, units), _block(saved, row, 2, units),
            _block(saved, row, 3, units), _block(saved, row, 4, units))


@inline
def _gru_saved(saved, row, units):
    """The GRU's saved blocks of a row: r, z, n, h U_n + b_hn."""
    return _block(saved, row, 0, units), _block(saved, row, 1, units), _block(saved, row, 2, units), _block(
        saved, row, 3, units)


@cell_jit
def lstm_cell(x_part, recurrent, c, h_new, c_new, saved):
    """i, f, g, o from a = x_part + recurrent = [a_i, a_f, a_g, a_o] (N, 4H) (X_t and h_{t−1} U, added
    here rather than in a pass of their own); c' = f c + i g, h' = o tanh c'; saved = [i, f, g, o, tanh c'] (N, 5H)."""
    units = c.shape[1]
    for r in range(c.shape[0]):
        i, f, g, o, tanh_c = _lstm_saved(saved, r, units)
        x_i, x_f, x_g, x_o = (_block(x_part, r, 0, units), _block(x_part, r, 1, units), _block(x_part, r, 2, units),
                              _block(x_part, r, 3, units))
        u_i, u_f, u_g, u_o = (_block(recurrent, r, 0, units), _block(recurrent, r, 1, units),
                              _block(recurrent, r, 2, units), _block(recurrent, r, 3, units))
        for j in range(units):
            i[j] = _gate(x_i[j] + u_i[j])
        for j in range(units):
            f[j] = _gate(x_f[j] + u_f[j])
        for j in range(units):
            g[j] = tanh(x_g[j] + u_g[j])
        for j in range(units):
            o[j] = _gate(x_o[j] + u_o[j])
        c_row, c_out, h_out = c[r], c_new[r], h_new[r]
        for j in range(units):
            c_out[j] = f[j] * c_row[j] + i[j] * g[j]
        for j in range(units):
            tanh_c[j] = tanh(c_out[j])
        for j in range(units):
            h_out[j] = o[j] * tanh_c[j]


@cell_jit
def lstm_cell_backward(dh, from_output, dc_next, c, saved, da, dc_prev):
    """dh += from_output (in place: ∂J/∂h_t = δ_{t+1} Uᵀ + what the output sends), then
    dc = dh o (1 − tanh²c') + dc', da = [dc g i(1−i), dc c f(1−f), dc i (1−g²), dh tanh c' o(1−o)],
    ∂J/∂c = dc f."""
    units = c.shape[1]
    one = like(c, 1.0)
    for r in range(c.shape[0]):
        i, f, g, o, tanh_c = _lstm_saved(saved, r, units)
        d_i, d_f, d_g, d_o = _block(da, r, 0, units), _block(da, r, 1, units), _block(da, r, 2, units), _block(da, r, 3, units)
        dh_row, dc = dh[r], dc_prev[r]  # dc_prev holds dc until the last loop
        output_row = from_output[r]
        for j in range(units):
            dh_row[j] += output_row[j]
        for j in range(units):
            dc[j] = dh_row[j] * o[j] * (one - tanh_c[j] * tanh_c[j]) + dc_next[r, j]
        for j in range(units):
            d_i[j] = dc[j] * g[j] * i[j] * (one - i[j])
        c_row = c[r]
        for j in range(units):
            d_f[j] = dc[j] * c_row[j] * f[j] * (one - f[j])
        for j in range(units):
            d_g[j] = dc[j] * i[j] * (one - g[j] * g[j])
        for j in range(units):
            d_o[j] = dh_row[j] * tanh_c[j] * o[j] * (one - o[j])
        for j in range(units):
            dc[j] = dc[j] * f[j]


@cell_jit
def gru_cell(x_part, u, b_hn, h, h_new, saved):
    """r, z from x W + b and h U; n = tanh(x_n + r (u_n + b_hn)), h' = (1 − z) n + z h;
    saved = [r, z, n, u_n + b_hn] (N, 4H)."""
    units = h.shape[1]
    one = like(h, 1.0)
    for row in range(h.shape[0]):
        r, z, n, hidden_n = _gru_saved(saved, row, units)
        x_r, x_z, x_n = _block(x_part, row, 0, units), _block(x_part, row, 1, units), _block(x_part, row, 2, units)
        u_r, u_z, u_n = _block(u, row, 0, units), _block(u, row, 1, units), _block(u, row, 2, units)
        for j in range(units):
            r[j] = _gate(x_r[j] + u_r[j])
        for j in range(units):
            z[j] = _gate(x_z[j] + u_z[j])
        for j in range(units):
            hidden_n[j] = u_n[j] + b_hn[j]
        for j in range(units):
            n[j] = tanh(x_n[j] + r[j] * hidden_n[j])
        h_row, h_out = h[row], h_new[row]
        for j in range(units):
            h_out[j] = (one - z[j]) * n[j] + z[j] * h_row[j]


@cell_jit
def gru_cell_backward(dh, h, saved, d_input, d_recurrent, dh_direct):
    """dn = dh (1 − z)(1 − n²), dz = dh (h − n) z(1 − z), dr = dn (u_n + b_hn) r(1 − r);
    d(x W + b) = [dr, dz, dn], d(h U) = [dr, dz, dn r], ∂J/∂h through z = dh z."""
    units = h.shape[1]
    one = like(h, 1.0)
    for row in range(h.shape[0]):
        r, z, n, hidden_n = _gru_saved(saved, row, units)
        d_r, d_z, d_n = _block(d_input, row, 0, units), _block(d_input, row, 1, units), _block(d_input, row, 2, units)
        u_r, u_z, u_n = (_block(d_recurrent, row, 0, units), _block(d_recurrent, row, 1, units),
                         _block(d_recurrent, row, 2, units))
        dh_row, h_row, direct = dh[row], h[row], dh_direct[row]
        for j in range(units):
            d_n[j] = dh_row[j] * (one - z[j]) * (one - n[j] * n[j])
        for j in range(units):
            d_z[j] = dh_row[j] * (h_row[j] - n[j]) * z[j] * (one - z[j])
        for j in range(units):
            d_r[j] = d_n[j] * hidden_n[j] * r[j] * (one - r[j])
        for j in range(units):
            u_r[j], u_z[j] = d_r[j], d_z[j]
        for j in range(units):
            u_n[j] = d_n[j] * r[j]
        for j in range(units):
            direct[j] = dh_row[j] * z[j]
