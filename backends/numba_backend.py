"""numba backend: NumPy arrays, matrix products in BLAS, and every other hot op as one
jitted pass over memory (``backends.numba_kernels``). Training steps write into scratch
buffers the model keeps, so a steady-state step allocates no new arrays."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

# numba's np.dot calls SciPy's BLAS (an OpenBLAS of its own, with its own threads), which SciPy loads on
# first import. Loaded here, with the backend, so that whoever sets the process's BLAS threads
# (cpu_threads.BlasThreadTuner, the convolution pass) finds it: a model made before anything imported it
# listed only NumPy's OpenBLAS, left SciPy's on every core, and its blocks, each calling a product that
# then spawned threads of its own, ran no faster on two cores than on one (LeNet step 25 against 15 ms).
import scipy.linalg.cython_blas  # noqa: F401

from toolkit.layers import Conv2D
from toolkit.ops import random
from toolkit.ops.activations import LEAKY_RELU_SLOPE, ActivationFunction
from toolkit.ops.losses import is_weighted

from . import numba_kernels as kernels
from .numba_conv_stack import ConvPassRunner, why_not_covered
from .numba_stack import DensePassRunner, covers
from .numpy_backend import NumpyBackend

_log = logging.getLogger("toolkit.numba")

# One kernel per pair of toolkit.ops.reference.OUTPUT_PAIRS (identity_mse has its own signature).
_DELTA_KERNELS = {"softmax_ce": kernels.softmax_ce_delta, "sigmoid_bce": kernels.sigmoid_bce_delta}


# Rows narrower than this run through the element-wise kernels as one flat array with the bias
# repeated along a tile (a convolution's (N·H·W, 6) output: 6-long rows did not vectorise).
_TILE = 256

# Rows per block of a long matrix-product reduction (see NumbaBackend.matmul); measured best of
# 256–16,384 on the LeNet's first-layer dW.
_REDUCTION_BLOCK = 4096


def _narrow(activation: ActivationFunction, *arrays: np.ndarray) -> bool:
    z = arrays[0]
    return (activation.elementwise and z.ndim == 2 and z.shape[1] <= _TILE // 4
            and all(x.flags.c_contiguous and x.shape == z.shape for x in arrays))


class NumbaBackend(NumpyBackend):
    name = "numba"
    reuses_buffers = True

    def register_kernels(self) -> None:
        self.update_kernels = {"sgd": kernels.sgd, "sgd_momentum": kernels.sgd_momentum, "adam": kernels.adam,
                               "rmsprop": kernels.rmsprop}

    def empty(self, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def compile_pass(self, plan: Any) -> DensePassRunner | ConvPassRunner | None:
        if covers(plan):
            return DensePassRunner(plan)
        if not any(type(layer) is Conv2D for layer in plan.layers):
            return None
        reason = why_not_covered(plan)
        if reason is None:
            return ConvPassRunner(plan)
        _log.info("numba: the per-layer pass runs this model's convolutions, one layer at a time over the whole "
                  "batch: the blocked pass does not cover it (%s)", reason)
        return None

    def dropout_mask(self, key, stream, shape, first_row, rate, dtype):
        mask = np.empty(shape, dtype=dtype)
        start = first_row * math.prod(shape[1:])
        kernels.dropout_mask(mask.reshape(-1), start, random.layer_key(key, stream), random.threshold(rate),
                             mask.dtype.type(1.0 / (1.0 - rate)))
        return mask

    def bias_activation(self, z, b, activation: ActivationFunction, out=None):
        if activation.name == "identity":
            kernels.bias_add(z, b)
            return z, z
        if activation.name == "tanh" and z.dtype == np.float64:
            # numba's float64 tanh is a scalar libm call (8 ns); NumPy's is SIMD. float32 uses the
            # kernels' vectorised rational tanh, the one the whole-pass runner uses too.
            kernels.bias_add(z, b)
            return z, np.tanh(z, out=np.empty_like(z) if out is None else out)
        a = np.empty_like(z) if out is None else out
        compiled = kernels.for_activation(activation.code)
        if _narrow(activation, z, a):
            tile = np.tile(b, _TILE // z.shape[1])
            compiled.bias_activation_flat(z.reshape(-1), tile, a.reshape(-1), LEAKY_RELU_SLOPE)
        else:
            compiled.bias_activation(z, b, a, LEAKY_RELU_SLOPE)
        return z, a

    def activation_backward(self, da, z, a, activation: ActivationFunction, out=None, db_out=None):
        dz = np.empty_like(z) if out is None else out
        db = np.empty(z.shape[1], dtype=z.dtype) if db_out is None else db_out
        compiled = kernels.for_activation(activation.code)
        if _narrow(activation, z, a, da, dz):
            partial = np.zeros(_TILE // z.shape[1] * z.shape[1], dtype=z.dtype)
            compiled.activation_backward_flat(da.reshape(-1), z.reshape(-1), a.reshape(-1), dz.reshape(-1), partial,
                                              LEAKY_RELU_SLOPE)
            np.sum(partial.reshape(-1, z.shape[1]), axis=0, out=db)  # the tile's columns folded into db
        else:
            compiled.activation_backward(da, z, a, dz, db, LEAKY_RELU_SLOPE)
        return dz, db

    def matmul(self, a, b, out=None):
        depth = a.shape[-1]
        if a.ndim == 2 and b.ndim == 2 and depth >= 2 * _REDUCTION_BLOCK and a.shape[0] * b.shape[1] <= 1024:
            # A long reduction into a small result (a convolution's dW = colsᵀ δ: 50,176 rows into
            # 25 × 6 at batch 64) in blocks of rows, then the partial products added: OpenBLAS ran the
            # single product 1.8× slower than the blocks.
            blocks = range(0, depth, _REDUCTION_BLOCK)
            partial = np.empty((len(blocks), a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
            for k, start in enumerate(blocks):
                np.matmul(a[:, start : start + _REDUCTION_BLOCK], b[start : start + _REDUCTION_BLOCK], out=partial[k])
            return np.sum(partial, axis=0, out=out)
        return np.matmul(a, b, out=out)

    def layer_norm(self, x, gamma, beta, eps):
        rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        y, x_hat = np.empty_like(rows), np.empty_like(rows)
        inv_std = np.empty(rows.shape[0], dtype=rows.dtype)
        kernels.layer_norm(rows, gamma, beta, rows.dtype.type(eps), y, x_hat, inv_std)
        return y.reshape(x.shape), x_hat.reshape(x.shape), inv_std.reshape(*x.shape[:-1], 1)

    def layer_norm_backward(self, dy, x_hat, inv_std, gamma):
        rows = np.ascontiguousarray(dy).reshape(-1, dy.shape[-1])
        dx = np.empty_like(rows)
        d_gamma, d_beta = np.empty_like(gamma), np.empty_like(gamma)
        kernels.layer_norm_backward(rows, np.ascontiguousarray(x_hat).reshape(rows.shape),
                                    np.ascontiguousarray(inv_std).reshape(-1), gamma, dx, d_gamma, d_beta)
        return dx.reshape(dy.shape), d_gamma, d_beta

    # The recurrent cells run as numba kernels at float32 only: at float64 numba's tanh is a scalar libm
    # call, 5× slower than NumPy's vectorised tanh in the reference (1.7 against 0.33 ms per LSTM and GRU
    # step forward and back at 64 × 128).
    # The LSTM's loop over time runs here, not in ``scan``: every step's results go straight into the
    # stacks (h and c as one (T + 1, N, H) array each, h_{t−1} and c_{t−1} views of them), X_t + h U
    # is added inside the cell kernel, and h U and δ Uᵀ are written into one buffer each: no step
    # allocates, copies or stacks anything.
    def lstm_sequence(self, inputs, u, units):
        if inputs.dtype != np.float32:
            return super().lstm_sequence(inputs, u, units)
        length, n = inputs.shape[0], inputs.shape[1]
        inputs = np.ascontiguousarray(inputs)
        hidden = np.empty((length + 1, n, units), dtype=inputs.dtype)  # h_0 … h_T
        cell = np.empty_like(hidden)  # c_0 … c_T
        hidden[0], cell[0] = 0, 0
        gates = np.empty((length, n, 5 * units), dtype=inputs.dtype)
        recurrent = np.empty((n, 4 * units), dtype=inputs.dtype)
        for t in range(length):
            np.matmul(hidden[t], u, out=recurrent)  # h_{t−1} U
            kernels.lstm_cell(inputs[t], recurrent, cell[t], hidden[t + 1], cell[t + 1], gates[t])
        return hidden[1:], hidden[:-1], cell[:-1], gates

    def lstm_sequence_backward(self, from_output, cells, gates, u):
        if gates.dtype != np.float32:
            return super().lstm_sequence_backward(from_output, cells, gates, u)
        length, n, units = cells.shape
        from_output, cells, gates = (np.ascontiguousarray(a) for a in (from_output, cells, gates))
        deltas = np.empty((length, n, 4 * units), dtype=gates.dtype)
        dh = np.zeros((n, units), dtype=gates.dtype)  # δ_{t+1} Uᵀ: 0 after the last step
        dc, dc_prev = np.zeros_like(dh), np.empty_like(dh)
        u_t = np.ascontiguousarray(np.matrix_transpose(u))  # δ Uᵀ with a transposed view took 108 µs, 73 µs so
        for t in range(length - 1, -1, -1):
            kernels.lstm_cell_backward(dh, from_output[t], dc, cells[t], gates[t], deltas[t], dc_prev)
            np.matmul(deltas[t], u_t, out=dh)  # ∂J/∂h_{t−1} = δ_t Uᵀ
            dc, dc_prev = dc_prev, dc
        return deltas

    def gru_cell(self, x_part, u, b_hn, h, units):
        if h.dtype != np.float32:
            return super().gru_cell(x_part, u, b_hn, h, units)
        h = np.ascontiguousarray(h)
        h_new, saved = np.empty_like(h), np.empty((h.shape[0], 4 * units), dtype=h.dtype)
        kernels.gru_cell(np.ascontiguousarray(x_part), np.ascontiguousarray(u), b_hn, h, h_new, saved)
        return h_new, saved

    def gru_cell_backward(self, dh, h, saved):
        if h.dtype != np.float32:
            return super().gru_cell_backward(dh, h, saved)
        h = np.ascontiguousarray(h)
        d_input, d_recurrent = (np.empty((h.shape[0], 3 * h.shape[1]), dtype=h.dtype) for _ in range(2))
        dh_direct = np.empty_like(h)
        kernels.gru_cell_backward(np.ascontiguousarray(dh), h, np.ascontiguousarray(saved), d_input, d_recurrent,
                                  dh_direct)
        return d_input, d_recurrent, dh_direct

    def attention_weights(self, scores, causal, length):
        flat = np.ascontiguousarray(scores).reshape(-1, *scores.shape[-2:])
        out = np.empty_like(flat)
        kernels.attention_softmax(flat, causal, out)
        return out.reshape(scores.shape)

    def attention_weights_backward(self, dp, p):
        shape = dp.shape
        dp, p = (np.ascontiguousarray(a).reshape(-1, *shape[-2:]) for a in (dp, p))
        out = np.empty_like(dp)
        kernels.attention_softmax_backward(dp, p, out)
        return out.reshape(shape)

    def scatter_add_rows(self, ids, values, n_rows):
        out = np.empty((n_rows, values.shape[1]), dtype=values.dtype)
        kernels.scatter_add_rows(np.ascontiguousarray(ids), np.ascontiguousarray(values), out)
        return out

    def sum_rows(self, x, out=None):
        out = np.empty(x.shape[1], dtype=x.dtype) if out is None else out
        kernels.sum_rows(x, out)  # one pass, rows in order: no temporaries, unlike np.sum's pairwise blocks
        return out

    def im2col(self, x, window, strides, out_hw, out=None):
        if out is None:
            out = np.empty((x.shape[0], *out_hw, window[0] * window[1], x.shape[3]), dtype=x.dtype)
        short = window[1] * x.shape[3] <= kernels.SHORT_RUN
        kernel = kernels.im2col_for(*window, x.shape[3]) if short else kernels.im2col
        kernel(np.ascontiguousarray(x), *window, *strides, out)
        return out

    def col2im(self, cols, padded_hw, window, strides, out=None):
        if out is None:
            out = np.empty((cols.shape[0], *padded_hw, cols.shape[4]), dtype=cols.dtype)
        kernels.col2im(np.ascontiguousarray(cols), *window, *strides, out)
        return out

    def max_pool(self, x, window, strides, out_hw, out=None, winners_out=None):
        shape = (x.shape[0], *out_hw, x.shape[3])
        out = np.empty(shape, dtype=x.dtype) if out is None else out
        winners = np.empty(shape, dtype=np.int64) if winners_out is None else winners_out
        kernels.max_pool(np.ascontiguousarray(x), *window, *strides, out, winners)
        return out, winners

    def max_pool_backward(self, grad, winners, input_hw, window, strides, out=None):
        if out is None:
            out = np.empty((grad.shape[0], *input_hw, grad.shape[3]), dtype=grad.dtype)
        kernels.max_pool_backward(np.ascontiguousarray(grad), np.ascontiguousarray(winners), *window, *strides, out)
        return out

    def output_delta(self, pair: str, z, a, y, out=None):
        if is_weighted(z, y):  # targets carrying sample weights: the reference's formulas
            return super().output_delta(pair, z, a, y, out)
        delta = np.empty_like(z) if out is None else out
        if pair == "identity_mse":
            return np.asarray(kernels.mse_delta(a, y, delta), dtype=z.dtype), delta
        return np.asarray(_DELTA_KERNELS[pair](z, a, y, delta), dtype=z.dtype), delta
