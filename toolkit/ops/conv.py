"""Windows of channels-last images, as pure Array-API functions: the references of the ``im2col``
and ``col2im`` hot ops, and the padding arithmetic.

Images are ``(N, H, W, C)``. A layer with a ``kh × kw`` window and strides ``(sh, sw)`` sees, for
output position ``(y, x)``, the input rows ``y·sh … y·sh + kh − 1`` and columns ``x·sw … x·sw + kw − 1``.

    im2col:  (N, Hp, Wp, C) → (N, Ho, Wo, kh·kw, C)   one input slice per kernel offset, stacked
    col2im:  (N, Ho, Wo, kh·kw, C) → (N, Hp, Wp, C)   the adjoint: every window's values added back

``col2im`` is the transpose of ``im2col``, so ``⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩`` (tested): it is what
backpropagation through a window needs. It is written without writing into arrays (zero-stuffing for
the strides, padding for the offsets, a sum), so it runs on immutable arrays too; backends replace both
with kernels.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any


def output_size(size: int, kernel: int, stride: int, pad_total: int) -> int:
    return (size + pad_total - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras' "same": ⌈size / stride⌉ outputs, the padding split with the extra row at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad(x: Array, padding: tuple[tuple[int, int], tuple[int, int]], xp: Any) -> Array:
    """Zeros around the spatial axes of an (N, H, W, C) batch.

    Built by concatenating zero rows and columns made with ``zeros_like`` of a slice, so the batch
    size is never read: it may be symbolic (ONNX export traces a dynamic batch axis)."""
    (top, bottom), (left, right) = padding
    if top or bottom:
        row = xp.zeros_like(x[:, :1, :, :])
        x = xp.concat([row] * top + [x] + [row] * bottom, axis=1)
    if left or right:
        column = xp.zeros_like(x[:, :, :1, :])
        x = xp.concat([column] * left + [x] + [column] * right, axis=2)
    return x


def unpad(x: Array, padding: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    (top, bottom), (left, right) = padding
    return x[:, top : x.shape[1] - bottom, left : x.shape[2] - right, :]


def im2col(x: Array, window: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int], xp: Any) -> Array:
    """(N, Hp, Wp, C) → (N, Ho, Wo, kh·kw, C): the input under each kernel offset, in (kh, kw) order."""
    (kh, kw), (sh, sw), (ho, wo) = window, strides, out_hw
    slices = [x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
              for i in range(kh) for j in range(kw)]
    return xp.stack(slices, axis=3)


def _stuff(v: Array, axis: int, stride: int, xp: Any) -> Array:
    """Insert ``stride − 1`` zeros between the entries of ``v`` along ``axis`` (axis 1 or 2)."""
    if stride == 1:
        return v
    shape = list(v.shape)
    zeros = xp.zeros_like(v)
    stacked = xp.stack([v] + [zeros] * (stride - 1), axis=axis + 1)
    shape[axis] = shape[axis] * stride
    stuffed = xp.reshape(stacked, tuple(shape))
    keep = (shape[axis] - stride + 1)
    return stuffed[:, :keep, ...] if axis == 1 else stuffed[:, :, :keep, :]


def col2im(cols: Array, padded_hw: tuple[int, int], window: tuple[int, int], strides: tuple[int, int], xp: Any) -> Array:
    """(N, Ho, Wo, kh·kw, C) → (N, Hp, Wp, C): each offset's values added back where im2col took them."""
    (kh, kw), (sh, sw), (hp, wp) = window, strides, padded_hw
    total = None
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        part = _stuff(_stuff(cols[:, :, :, k, :], 1, sh, xp), 2, sw, xp)
        placed = pad(part, ((i, hp - i - part.shape[1]), (j, wp - j - part.shape[2])), xp)
        total = placed if total is None else total + placed
    return total


def max_pool(x: Array, window: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int],
             xp: Any) -> tuple[Array, Array]:
    """(largest value, its offset in the window) of every window: (N, Ho, Wo, C) each. The offset is
    ``i·kw + j``; ties go to the first maximum in row-major window order."""
    windows = im2col(x, window, strides, out_hw, xp)
    return xp.max(windows, axis=3), xp.argmax(windows, axis=3)


def max_pool_backward(grad: Array, winners: Array, input_hw: tuple[int, int], window: tuple[int, int],
                      strides: tuple[int, int], xp: Any) -> Array:
    """Each window's gradient to its winner, the others 0: (N, Ho, Wo, C) → (N, H, W, C)."""
    area = window[0] * window[1]
    # The winners' device (None for a traced JAX array, which has none and needs none).
    offsets = xp.reshape(xp.arange(area, dtype=winners.dtype, device=getattr(winners, "device", None)), (1, 1, 1, area, 1))
    one_hot = xp.astype(winners[:, :, :, None, :] == offsets, grad.dtype)
    return col2im(one_hot * grad[:, :, :, None, :], input_hw, window, strides, xp)
