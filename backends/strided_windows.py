"""The window ops of convolutions and pooling for NumPy-like libraries (NumPy, CuPy): strided views
copied once, in place of the Array-API references' stacks, zero-stuffing and one-hot products.

``StridedWindows`` goes before ``Backend`` among a backend's bases; the backend names its array
library in ``array_module``. Overlapping or gapped max-pool windows fall back to the reference."""

from __future__ import annotations

from typing import Any


class StridedWindows:
    array_module: Any  # numpy or cupy: the same calls on either

    # im2col: one copy of a strided view; col2im, its adjoint: one in-place add per kernel offset.
    def im2col(self, x, window, strides, out_hw, out=None):
        m = self.array_module
        (kh, kw), (sh, sw), (ho, wo) = window, strides, out_hw
        n, c = x.shape[0], x.shape[3]
        step_n, step_h, step_w, step_c = x.strides
        # (N, Ho, Wo, kh, kw, C): pixel (y·sh + i, x·sw + j) at window (y, x), offset (i, j); a view.
        views = m.lib.stride_tricks.as_strided(x, shape=(n, ho, wo, kh, kw, c),
                                               strides=(step_n, step_h * sh, step_w * sw, step_h, step_w, step_c))
        out = m.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
        m.copyto(out, views)
        return out.reshape(n, ho, wo, kh * kw, c)

    def col2im(self, cols, padded_hw, window, strides, out=None):
        m = self.array_module
        (kh, kw), (sh, sw), (hp, wp) = window, strides, padded_hw
        n, ho, wo, _, c = cols.shape
        out = m.zeros((n, hp, wp, c), dtype=cols.dtype)
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            out[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += cols[:, :, :, k, :]
        return out

    # Max-pool over non-overlapping windows (strides = pool size, the usual case): the windows are a
    # reshape of the input, so one transposed copy replaces the general path's window copy, its
    # max pass and its one-hot backward.
    def max_pool(self, x, window, strides, out_hw, out=None, winners_out=None):
        m = self.array_module
        (kh, kw), (ho, wo) = window, out_hw
        if tuple(strides) != (kh, kw):
            return super().max_pool(x, window, strides, out_hw)  # type: ignore[misc]
        n, c = x.shape[0], x.shape[3]
        blocks = x[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)
        windows = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(n, ho, wo, kh * kw, c)
        winners = m.argmax(windows, axis=3)  # the first maximum in row-major window order (NaN wins)
        largest = m.take_along_axis(windows, winners[:, :, :, None, :], axis=3)[:, :, :, 0, :]
        return largest, winners

    def max_pool_backward(self, grad, winners, input_hw, window, strides, out=None):
        m = self.array_module
        (kh, kw), (h, w) = window, input_hw
        if tuple(strides) != (kh, kw):
            return super().max_pool_backward(grad, winners, input_hw, window, strides)  # type: ignore[misc]
        n, ho, wo, c = grad.shape
        routed = m.zeros((n, ho, wo, kh * kw, c), dtype=grad.dtype)
        m.put_along_axis(routed, winners[:, :, :, None, :], grad[:, :, :, None, :], axis=3)
        image = routed.reshape(n, ho, wo, kh, kw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, ho * kh, wo * kw, c)
        if (ho * kh, wo * kw) == (h, w):
            return image
        full = m.zeros((n, h, w, c), dtype=grad.dtype)  # rows and columns no window covered get 0
        full[:, : ho * kh, : wo * kw, :] = image
        return full
