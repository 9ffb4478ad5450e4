"""One blocked gradient pass for a LeNet-shaped stack on the numba backend (``compile_pass``).

Covers ``[Conv2D → (MaxPool2D)]… → Flatten → Dense…`` whose last Dense layer pairs with the loss.
The layer-by-layer pass stores every convolution's columns, Z and A for the whole batch (20 MB of
columns for the LeNet at batch 256), runs each window kernel over all of it on one thread, and
leaves the products to OpenBLAS's threads, which run the long, narrow products of a convolution
badly (conv1's dW = colsᵀ δ, 25 × 200,704 × 6: 3.9 GMAC/s on two threads, slower than on one).
Here each convolution runs per block of images, the blocks spread over the step's threads (as many as
``fit``'s thread tuner allows, ``cpu_threads.step_threads``), each block's products on single-threaded
BLAS while its columns are still in cache:

    forward, per block:   cols = im2col(pad(a)),  Z = cols W + b,  A = σ(Z)
                          with a pool: P = max over windows of A; kept: P, the winners, Z at them
    backward, per block:  with a pool: δ_P = ∂J/∂P ∘ σ'(Z at the winners), δ = unpool(δ_P)
                          (σ' is the same at a winner as at its window's output, so routing first
                          and multiplying after gives the same δ); without: δ = ∂J/∂A ∘ σ'(Z)
                          cols = im2col(pad(a)) again (cheaper than keeping them),
                          dW_block = colsᵀ δ,  db_block = Σ δ,  ∂J/∂a = unpad(col2im(δ Wᵀ))
    then:                 dW = Σ_blocks dW_block, db likewise, in block order

so the columns, and a pooled layer's Z and A, never exist for the whole batch. The per-block sums
make the gradients independent of the thread count (one seed, one run). The Dense tail runs as
``numba_stack.dense_pass``, which also returns ∂J/∂(flattened input). Every kernel is one the
per-layer path uses too; only the summation order differs from it (tested to 1e-10 / 1e-4).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from toolkit.engine import Plan
from toolkit.layers import Conv2D, Dense, Flatten, MaxPool2D
from toolkit.ops.activations import LEAKY_RELU_SLOPE

from . import numba_kernels as kernels
from .cpu_threads import blas_controllers, step_threads
from .numba_stack import DensePassRunner
from .numba_stack import covers as dense_covers

# Images per block: as many as keep one block's columns near this size (an L2 cache's worth; the
# products read them right after im2col writes them).
BLOCK_BYTES = 256 * 1024
# The bias tile of the flat activation loops (a convolution's rows are a few channels wide, too short
# to vectorise alone; see numba_backend._TILE).
TILE = 256


@dataclass(frozen=True)
class ConvUnit:
    """One Conv2D and the MaxPool2D after it (if any): the geometry the kernels take."""

    index: int  # the Conv2D's position in the plan
    input_shape: tuple[int, int, int]  # (H, W, C)
    pads: tuple[int, int]  # (top, left); bottom and right follow from the padded size
    padded_hw: tuple[int, int]
    window: tuple[int, int]
    strides: tuple[int, int]
    out_hw: tuple[int, int]
    filters: int
    code: int
    pool_window: tuple[int, int] | None
    pool_strides: tuple[int, int] | None
    pooled_hw: tuple[int, int] | None

    @property
    def depth(self) -> int:  # K: a column's length
        return self.window[0] * self.window[1] * self.input_shape[2]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (*(self.pooled_hw or self.out_hw), self.filters)

    @property
    def geometry(self) -> tuple[tuple[int, int], ...]:
        """(pads, strides): what the kernels take as arguments (the rest is compiled in)."""
        return self.pads, self.strides

    @property
    def kernels(self) -> tuple[Any, Any]:
        return unit_kernels(self.code, *self.window, self.input_shape[2], self.filters, self.pool_window or (0, 0),
                            self.pool_strides or (0, 0))


def _units(plan: Plan) -> tuple[list[ConvUnit], int] | str:
    """The convolution units and the index of the Flatten after them, or why the plan is not covered."""
    layers, units, i = plan.layers, [], 0
    while i < len(layers) and type(layers[i]) is Conv2D:
        conv = layers[i]
        if not conv.activation.elementwise:
            return f"{conv.describe()} has a row-wise activation"
        pool = layers[i + 1] if i + 1 < len(layers) and type(layers[i + 1]) is MaxPool2D else None
        (top, _), (left, _) = conv.pads
        units.append(ConvUnit(i, conv.input_shape, (top, left), conv.padded_hw, conv.kernel_size, conv.strides,
                              conv.out_hw, conv.filters, conv.activation.code,
                              None if pool is None else pool.pool_size, None if pool is None else pool.strides,
                              None if pool is None else pool.out_hw))
        i += 1 if pool is None else 2
    if not units:
        return "it does not start with a Conv2D"
    if i >= len(layers) or type(layers[i]) is not Flatten:
        return f"{layers[i].describe() if i < len(layers) else 'the end'} follows the convolutions, not Flatten"
    if plan.pair is None or not all(type(layer) is Dense for layer in layers[i + 1:]) or i + 1 == len(layers):
        return "Flatten is not followed by Dense layers only, the last one paired with the loss"
    return units, i


def why_not_covered(plan: Plan) -> str | None:
    """None when ``ConvPassRunner`` covers ``plan``, else the reason, for the user."""
    found = _units(plan)
    if isinstance(found, str):
        return found
    return None if dense_covers(plan, first=found[1] + 1) else "a Dense layer before the last one uses softmax"


@numba.njit(inline="always", error_model="numpy")
def _padded(x, top, left, scratch):
    """x with zeros around it, in ``scratch`` (the padded shape); x itself when there is no padding."""
    if scratch.shape[1] == x.shape[1] and scratch.shape[2] == x.shape[2]:
        return x
    scratch[:] = 0
    h, w = x.shape[1], x.shape[2]
    for b in range(x.shape[0]):
        for y in range(h):
            scratch[b, top + y, left : left + w, :] = x[b, y]
    return scratch


@numba.njit(inline="always", error_model="numpy")
def _at_winners(z, winners, kh, kw, sh, sw, out):
    """out[n, y, x, c] = z at the winner of window (y, x), channel c (``winners``: offsets i·kw + j)."""
    channels, h, w = out.shape[3], z.shape[1], z.shape[2]
    jump = np.empty(kh * kw, dtype=np.int64)  # offset → flat distance from the window's corner (no division)
    for i in range(kh):
        for j in range(kw):
            jump[i * kw + j] = (i * w + j) * channels
    source, target, where = z.reshape(-1), out.reshape(-1), winners.reshape(-1)
    at = 0
    for b in range(out.shape[0]):
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                corner = ((b * h + y * sh) * w + x * sw) * channels
                for c in range(channels):
                    target[at] = source[corner + jump[where[at]] + c]
                    at += 1


class Workers:
    """Runs a kernel over a range of blocks, split in equal shares over ``threads`` threads (the
    calling thread takes the first share).

    Python threads around ``nogil`` kernels, not numba's ``prange``: numba's default threading layer
    here is GNU OpenMP, whose threads spin after each parallel region, and beside OpenBLAS's they
    made the LeNet step at batch 64 4.7× slower than on one thread (38 against 8.1 ms). These wait
    on a queue."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="toolkit-blocks") if threads > 1 else None

    def run(self, kernel: Any, blocks: int, *args: Any) -> None:
        """``kernel(first, last, share, *args)`` for every share of ``range(blocks)``."""
        shares = min(self.threads, blocks)
        bounds = [blocks * share // shares for share in range(shares + 1)]
        pending = [self._pool.submit(kernel, bounds[share], bounds[share + 1], share, *args)
                   for share in range(1, shares)] if self._pool is not None else []
        kernel(bounds[0], bounds[1], 0, *args)
        for future in pending:
            future.result()


@functools.cache
def workers(threads: int) -> Workers:
    """One pool per thread count, shared by every model."""
    return Workers(threads)


@functools.cache
def unit_kernels(code: int, kh: int, kw: int, channels: int, filters: int, pool_window: tuple[int, int],
                 pool_strides: tuple[int, int]) -> tuple[Any, Any]:
    """(forward, backward) of a convolution unit whose activation ``code``, window ``kh × kw`` over
    ``channels``, ``filters`` and pool (window (0, 0): none) are compile-time constants: the flat
    activation loops vectorise only with their branch folded away, and the window copies unroll (see
    ``numba_kernels.im2col_for``); constant shapes made col2im 0.39 → 0.28 ms and max-pool 0.55 →
    0.47 ms at the LeNet's sizes (batch 64)."""
    (pkh, pkw), (psh, psw) = pool_window, pool_strides

    @kernels.jit
    def forward(first, last, t, x, w, tile, slope, pads, strides, block, padded, cols, z, a, out_z, out_a, winners):
        """Blocks ``first … last − 1`` on thread scratch ``t``: im2col, Z = cols W + b, A = σ(Z); with a pool
        the pooled A into ``out_a``, its winners and Z at them into ``out_z``, else Z and A themselves."""
        n, k = x.shape[0], w.shape[0]
        ho, wo, f = cols.shape[2], cols.shape[3], w.shape[1]
        pooled = pkh > 0
        for chunk in range(first, last):
            start = chunk * block
            m = min(block, n - start)
            rows = m * ho * wo
            source = _padded(x[start : start + m], pads[0], pads[1], padded[t, :m])
            kernels._im2col(source, kh, kw, strides[0], strides[1], cols[t, :m], channels)
            if pooled:
                zb, ab = z[t, : rows * f], a[t, : rows * f]
            else:
                zb, ab = out_z[start : start + m].reshape(-1), out_a[start : start + m].reshape(-1)
            np.dot(cols[t, :m].reshape((rows, k)), w, zb.reshape((rows, f)))  # cols W
            kernels._bias_activation_flat(zb, tile, ab, code, slope)  # Z = cols W + b, A = σ(Z)
            if pooled:
                z4, a4 = zb.reshape((m, ho, wo, f)), ab.reshape((m, ho, wo, f))
                kernels._max_pool(a4, pkh, pkw, psh, psw, out_a[start : start + m], winners[start : start + m], filters)
                _at_winners(z4, winners[start : start + m], pkh, pkw, psh, psw, out_z[start : start + m])

    @kernels.jit
    def backward(first, last, t, x, w_t, slope, pads, strides, block, grad_output, out_z, out_a, winners, padded, cols,
                 delta_pooled, delta, dcols, dpadded, dw_blocks, db_blocks, dx):
        """Blocks ``first … last − 1`` on thread scratch ``t``: δ from ∂J/∂(output), dW and db of each block
        (``dw_blocks``, ``db_blocks``: one tile of column sums per block), and ∂J/∂x into ``dx`` unless it
        is empty (the first layer)."""
        n, k = x.shape[0], w_t.shape[1]
        ho, wo, f = cols.shape[2], cols.shape[3], w_t.shape[0]
        pooled = pkh > 0
        for chunk in range(first, last):
            start = chunk * block
            m = min(block, n - start)
            rows = m * ho * wo
            partial = db_blocks[chunk]
            partial[:] = 0
            d = delta[t, : rows * f]
            if pooled:  # δ_P = ∂J/∂P ∘ σ'(Z at the winners), then routed to the winners
                g = grad_output[start : start + m]
                dp = delta_pooled[t, : g.size]
                kernels._activation_backward_flat(g.reshape(-1), out_z[start : start + m].reshape(-1),
                                                  out_a[start : start + m].reshape(-1), dp, partial, code, slope)
                kernels.max_pool_backward(dp.reshape(g.shape), winners[start : start + m], pkh, pkw, psh, psw,
                                          d.reshape((m, ho, wo, f)))
            else:  # δ = ∂J/∂A ∘ σ'(Z)
                kernels._activation_backward_flat(grad_output[start : start + m].reshape(-1),
                                                  out_z[start : start + m].reshape(-1),
                                                  out_a[start : start + m].reshape(-1), d, partial, code, slope)
            source = _padded(x[start : start + m], pads[0], pads[1], padded[t, :m])
            kernels._im2col(source, kh, kw, strides[0], strides[1], cols[t, :m], channels)
            c2, d2 = cols[t, :m].reshape((rows, k)), d.reshape((rows, f))
            np.dot(c2.T, d2, dw_blocks[chunk])  # dW_block = colsᵀ δ
            if dx.shape[0] == 0:
                continue
            np.dot(d2, w_t, dcols[t, : rows * k].reshape((rows, k)))  # δ Wᵀ
            # ∂J/∂x = unpad(col2im(δ Wᵀ)); without padding col2im writes into ∂J/∂x itself.
            unpadded = dpadded.shape[2] == dx.shape[1] and dpadded.shape[3] == dx.shape[2]
            target = dx[start : start + m] if unpadded else dpadded[t, :m]
            kernels._col2im(dcols[t, : rows * k].reshape(cols[t, :m].shape), kh, kw, strides[0], strides[1], target,
                            channels)
            if not unpadded:
                h, wi = dx.shape[1], dx.shape[2]
                for b in range(m):
                    for y in range(h):
                        dx[start + b, y] = target[b, pads[0] + y, pads[1] : pads[1] + wi]

    return forward, backward


class _Buffers:
    """Everything one batch size needs, allocated once (a fresh 20 MB array page-faults every step)."""

    def __init__(self, units: list[ConvUnit], n: int, threads: int, dtype: np.dtype) -> None:
        self.threads = threads
        self.per_unit = []
        for number, unit in enumerate(units):
            block = unit_block(unit, dtype)
            blocks = (n + block - 1) // block
            h, w, c = unit.input_shape
            (hp, wp), (ho, wo), f, k = unit.padded_hw, unit.out_hw, unit.filters, unit.depth
            out_shape = (n, *unit.output_shape)
            pooled = unit.pool_window is not None
            thread_rows = threads if pooled else 0
            tile = max(1, TILE // f) * f
            self.per_unit.append({
                "block": block, "blocks": blocks,
                "padded": np.empty((threads, block, hp, wp, c), dtype),
                "cols": np.empty((threads, block, ho, wo, unit.window[0] * unit.window[1], c), dtype),
                "z": np.empty((thread_rows, block * ho * wo * f), dtype),
                "a": np.empty((thread_rows, block * ho * wo * f), dtype),
                "out_z": np.empty(out_shape, dtype), "out_a": np.empty(out_shape, dtype),
                "winners": np.empty(out_shape if pooled else (0, 0, 0, 0), np.int64),
                "grad_output": np.empty(out_shape, dtype),
                "delta_pooled": np.empty((thread_rows, block * int(np.prod(unit.output_shape))), dtype),
                "delta": np.empty((threads, block * ho * wo * f), dtype),
                "dcols": np.empty((threads if number else 0, block * ho * wo * k), dtype),
                "dpadded": np.empty((threads if number else 0, block, hp, wp, c), dtype),
                "dw_blocks": np.empty((blocks, k, f), dtype),
                "db_blocks": np.empty((blocks, tile), dtype),
            })
            # ∂J/∂x of a unit is the ∂J/∂(output) of the one below it; the first one has none.
            self.per_unit[-1]["dx"] = self.per_unit[-2]["grad_output"] if number else np.empty((0, h, w, c), dtype)


def unit_block(unit: ConvUnit, dtype: np.dtype) -> int:
    """Images per block: a block's columns about ``BLOCK_BYTES``."""
    per_image = unit.out_hw[0] * unit.out_hw[1] * unit.depth * np.dtype(dtype).itemsize
    return max(1, BLOCK_BYTES // per_image)


class ConvPassRunner:
    """The blocked pass bound to one model's plan: its units, the Dense tail's runner, and scratch
    per batch size (a training run sees two: the batch and the last, shorter one)."""

    MAX_BATCH_SIZES = 4

    def __init__(self, plan: Plan) -> None:
        found = _units(plan)
        assert not isinstance(found, str), found
        self.units, flatten_at = found
        self.table = plan.table
        self.dtype = np.dtype(plan.dtype)
        self.slope = self.dtype.type(LEAKY_RELU_SLOPE)
        self.dense = DensePassRunner(plan, first=flatten_at + 1)
        self._buffers: dict[int, _Buffers] = {}
        self._blas: list[Any] | None = None

    def _buffers_for(self, n: int, threads: int) -> _Buffers:
        found = self._buffers.get(n)
        if found is None or found.threads < threads:
            if found is None and len(self._buffers) >= self.MAX_BATCH_SIZES:
                self._buffers.pop(next(iter(self._buffers)))
            found = self._buffers[n] = _Buffers(self.units, n, threads, self.dtype)
        return found

    def _blas_libraries(self) -> list[Any]:
        if self._blas is None:
            self._blas = blas_controllers()
        return self._blas

    def _slots(self, flat: np.ndarray, unit: ConvUnit) -> tuple[np.ndarray, np.ndarray]:
        """Layer's W as (K, F) and b, views into a flat buffer."""
        w, b = self.table.by_key[f"{unit.index}.W"], self.table.by_key[f"{unit.index}.b"]
        return (flat[w.offset : w.offset + w.size].reshape(unit.depth, unit.filters), flat[b.offset : b.offset + b.size])

    def __call__(self, params: np.ndarray, grads: np.ndarray, state: np.ndarray, x: np.ndarray, y: np.ndarray,
                 context: object):
        if y.shape[-1] != self.dense.widths[-1]:  # targets that carry weights: the per-layer path
            return None
        n, pool = x.shape[0], workers(step_threads())
        buffers = self._buffers_for(n, pool.threads)
        blas = self._blas_libraries()
        before = [lib.num_threads for lib in blas]
        for lib in blas:
            lib.set_num_threads(1)
        try:
            loss, output = self._pass(params, grads, np.ascontiguousarray(x), np.ascontiguousarray(y), buffers, pool)
        finally:
            for lib, count in zip(blas, before, strict=True):
                lib.set_num_threads(count)
        return np.asarray(loss, dtype=self.dtype), output, grads, None  # no layer here has state

    def _pass(self, params: np.ndarray, grads: np.ndarray, x: np.ndarray, y: np.ndarray, buffers: _Buffers,
              pool: Workers) -> tuple[float, np.ndarray]:
        inputs = [x]  # each unit's input: x, then the unit below's output
        for unit, b in zip(self.units, buffers.per_unit, strict=True):
            w, bias = self._slots(params, unit)
            tile = np.tile(bias, b["db_blocks"].shape[1] // unit.filters)
            pool.run(unit.kernels[0], b["blocks"], inputs[-1], w, tile, self.slope, *unit.geometry, b["block"],
                     b["padded"], b["cols"], b["z"], b["a"], b["out_z"], b["out_a"], b["winners"])
            inputs.append(b["out_a"])
        n = x.shape[0]
        loss, output = self.dense.run(inputs[-1].reshape(n, -1), y, params, grads,
                                      input_grad=buffers.per_unit[-1]["grad_output"].reshape(n, -1))
        for unit, b, below in reversed(list(zip(self.units, buffers.per_unit, inputs, strict=False))):
            w, _ = self._slots(params, unit)
            dw, db = self._slots(grads, unit)
            # Wᵀ as its own C-ordered array: OpenBLAS multiplying by a transposed view ran 3× slower when
            # two threads did it at once (contended; the plain product did not).
            pool.run(unit.kernels[1], b["blocks"], below, np.ascontiguousarray(w.T), self.slope, *unit.geometry,
                     b["block"], b["grad_output"], b["out_z"], b["out_a"], b["winners"], b["padded"], b["cols"],
                     b["delta_pooled"], b["delta"], b["dcols"], b["dpadded"], b["dw_blocks"], b["db_blocks"], b["dx"])
            np.sum(b["dw_blocks"], axis=0, out=dw)  # dW = Σ_blocks colsᵀ δ, in block order
            np.sum(b["db_blocks"].reshape(-1, unit.filters), axis=0, out=db)
        return loss, output
