"""The backend interface: one object that owns the array namespace ``xp``, the device,
host transfers, random numbers and the named hot ops.

Every hot op defaults to the plain Array-API reference in ``toolkit.ops.fused``; a
concrete backend under ``backends/`` may override it with a fused kernel, and must
fall back to ``super()`` when ``self.fused`` is false so tests can compare the two.
"""

from __future__ import annotations

from typing import Any, Protocol

from .ops import fused as reference
from .ops import optim
from .ops.activations import Activation

Array = Any

FLOAT_DTYPES = ("float32", "float64")


class HostRandom(Protocol):
    """Random numbers drawn on the host (float64) and moved to the backend, so that one
    seed gives the same numbers on every backend."""

    def normal(self, shape: tuple[int, ...], std: float, dtype: Any) -> Array: ...

    def uniform(self, shape: tuple[int, ...], low: float, high: float, dtype: Any) -> Array: ...

    def constant(self, shape: tuple[int, ...], value: float, dtype: Any) -> Array: ...

    def permutation(self, n: int) -> Array: ...


class Backend:
    """Base class of every backend. Subclasses set ``name`` and implement the transfer methods."""

    name = "abstract"

    def __init__(self, xp: Any, device: Any = None, fused: bool = True) -> None:
        self.xp = xp
        self.device = device
        self.fused = fused

    def __repr__(self) -> str:
        return f"<backend {self.name} device={self.device} fused={self.fused}>"

    # -- arrays and transfers -------------------------------------------------------------
    def dtype(self, name: str) -> Any:
        """The namespace's dtype object for ``"float32"`` or ``"float64"``."""
        if name not in FLOAT_DTYPES:
            raise ValueError(f"unsupported dtype {name!r}; use one of {FLOAT_DTYPES}")
        return getattr(self.xp, name)

    def is_native(self, x: Any) -> bool:
        """True when ``x`` is already an array of this backend on its device."""
        raise NotImplementedError

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """Any array or nested sequence as an array of this backend, on its device."""
        raise NotImplementedError

    def to_host(self, x: Array) -> Any:
        """A host (NumPy) copy of ``x``, for saving, printing and comparing."""
        raise NotImplementedError

    def random(self, seed: int | None) -> HostRandom:
        raise NotImplementedError

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any) -> Array:
        return self.xp.zeros(shape, dtype=dtype, device=self.device)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU backends)."""

    def workspace(self, owner: object, name: str, shape: tuple[int, ...], dtype: Any) -> Array | None:
        """A scratch array reused from step to step by a training pass, or None to let each op
        allocate. Backends that keep steady-state steps allocation-free return buffers here."""
        return None

    def dense_stack_kernel(self, stack: Any) -> Any | None:
        """A compiled gradient pass for a ``toolkit.dense_stack.DenseStack``, or None.

        None (the default) makes the model run its layers one by one, which is the reference
        such a kernel is tested against. A kernel is called as ``kernel(x, y)`` on a prepared
        batch, fills ``stack.grads`` and returns ``(loss, [(Z, A) per layer])``, or None to
        decline that batch (the model then runs it layer by layer).
        """
        return None

    # -- named hot ops; overridable by fused kernels --------------------------------------
    # An ``out`` argument is a scratch array from ``workspace`` that an op may write into and
    # return; the generic references ignore it. Callers always use the returned array.
    # ``*_into`` ops and ``db_out`` are different: they must write there (the flat gradient buffer).
    # ``bias_activation`` receives the product it follows, fresh, and may overwrite it.
    def bias_activation(self, z: Array, b: Array, activation: Activation, out: Array | None = None) -> tuple[Array, Array]:
        return reference.bias_activation(z, b, activation, self.xp)

    def activation_backward(
        self, da: Array, z: Array, a: Array, activation: Activation, db_out: Array, out: Array | None = None
    ) -> Array:
        return reference.activation_backward(da, z, a, activation, db_out, self.xp)

    def output_delta(self, pair: str, z: Array, a: Array, y: Array, out: Array | None = None) -> tuple[Array, Array]:
        return reference.output_delta(pair, z, a, y, self.xp)

    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        return a @ b

    def matmul_into(self, a: Array, b: Array, out: Array) -> Array:
        return reference.matmul_into(a, b, out, self.xp)

    def sum_rows_into(self, x: Array, out: Array) -> Array:
        return reference.sum_rows_into(x, out, self.xp)

    def sgd_update(self, param: Array, grad: Array, lr: float) -> None:
        reference.sgd_update(param, grad, lr, self.xp)

    def sgd_momentum_update(self, param: Array, grad: Array, velocity: Array, lr: float, momentum: float,
                            dampening: float, nesterov: bool, weight_decay: float, step: int) -> None:
        optim.sgd_momentum_update(param, grad, velocity, lr, momentum, dampening, nesterov,
                                  weight_decay, step, self.xp)

    def adam_update(self, param: Array, grad: Array, m: Array, v: Array, lr: float, beta1: float,
                    beta2: float, eps: float, weight_decay: float, decoupled: bool, step: int) -> None:
        optim.adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step, self.xp)

    def rmsprop_update(self, param: Array, grad: Array, square_avg: Array, lr: float, alpha: float,
                       eps: float, weight_decay: float, step: int) -> None:
        optim.rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay, step, self.xp)
