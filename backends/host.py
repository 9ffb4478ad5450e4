"""Host-side (NumPy) helpers shared by every backend: seeded random numbers and the conversion
of whatever a user passes (lists, NumPy, CuPy, torch tensors) into a host array."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from toolkit.errors import InputError


class HostRandom:
    """Draws on the host in float64 from one seeded ``numpy.random.Generator``, then moves the
    result with ``to_backend``: the same seed gives the same numbers on every backend."""

    def __init__(self, seed: int | None, to_backend: Callable[[Any, Any], Any]) -> None:
        self._generator = np.random.default_rng(seed)
        self._to_backend = to_backend

    def normal(self, shape: tuple[int, ...], std: float, dtype: Any) -> Any:
        return self._to_backend(self._generator.normal(0.0, std, size=shape), dtype)

    def uniform(self, shape: tuple[int, ...], low: float, high: float, dtype: Any) -> Any:
        return self._to_backend(self._generator.uniform(low, high, size=shape), dtype)

    def constant(self, shape: tuple[int, ...], value: float, dtype: Any) -> Any:
        return self._to_backend(np.full(shape, value), dtype)

    def permutation(self, n: int) -> Any:
        return self._to_backend(self._generator.permutation(n).astype(np.int64), None)


def host_array(x: Any, backend_name: str, dtype: Any = None) -> np.ndarray:
    """``x`` as a NumPy array, or an ``InputError`` that says what to change."""
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        x = x.get()  # a CuPy array: an explicit device-to-host copy
    if getattr(x, "requires_grad", False):
        raise InputError(
            f"backend {backend_name!r} got a torch tensor that requires grad; the toolkit computes its own "
            "gradients, so pass tensor.detach() (and .cpu() for a GPU tensor)"
        )
    if isinstance(x, (list, tuple)):
        try:
            return np.asarray(x, dtype=dtype)
        except ValueError as error:
            raise InputError(
                f"the nested list cannot be an array ({error}); give every row the same length"
            ) from error
    try:
        array = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as error:
        device = str(getattr(x, "device", "unknown"))
        where = ("Move it to the host first (or build the model on that array's backend)" if device not in ("cpu", "unknown")
                 else f"Convert it to a NumPy dtype first (e.g. float32: {type(x).__name__} of dtype "
                      f"{getattr(x, 'dtype', '?')} has no NumPy equivalent)")
        raise InputError(
            f"backend {backend_name!r} cannot take an array of type {type(x).__name__} on device {device}: {error}. "
            + where
        ) from error
    if array.dtype.kind in "USO":
        raise InputError(f"backend {backend_name!r} takes numbers; got an array of dtype {array.dtype} "
                         "(strings or objects): encode labels as integers (e.g. sklearn's LabelEncoder) and "
                         "inputs as floats")
    return array


class UpdateScratch:
    """One scratch array per (thread, shape, dtype) for in-place optimizer kernels, at most
    ``entries`` of them: reused step after step, bounded so a sweep over model sizes cannot grow it,
    and per thread because two models may train in two threads."""

    def __init__(self, empty_like: Callable[[Any], Any], entries: int = 4) -> None:
        self._empty_like = empty_like
        self._entries = entries
        self._buffers: OrderedDict[tuple[int, tuple[int, ...], str], Any] = OrderedDict()

    def like(self, param: Any) -> Any:
        key = (threading.get_ident(), tuple(param.shape), str(param.dtype))
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = self._empty_like(param)
            while len(self._buffers) > self._entries:
                self._buffers.popitem(last=False)
        return buffer
