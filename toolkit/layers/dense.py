"""``Dense``: a fully connected layer with its activation.

Convention: batch-first rows. A batch ``a`` of shape (N, n_in) goes through

    Z = a W + b,   A = σ(Z)          W: (n_in, n_out), b: (n_out,)

which is the textbook's column form ``Z[l] = W[l] a[l-1] + b[l]`` transposed
(there ``W[l]`` is (n_out, n_in) and each sample is a column). Backward, given
δ = ∂J/∂Z of this layer:

    dW = aᵀ δ,   db = Σ_rows δ,   ∂J/∂a = δ Wᵀ

and the previous layer's error term is ``δ[l-1] = (δ[l] W[l]ᵀ) ∘ σ'(Z[l-1])``.

On inputs of higher rank (N, …, n_in), a sequence (N, T, n_in) say, the layer acts on the last axis
of every position, as Keras ``Dense`` and PyTorch ``Linear`` do: the leading axes are folded into
rows, (N·T, n_in), so the formulas above hold unchanged and ``dW = aᵀ δ`` sums over every position.
"""

from __future__ import annotations

from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import InputError, ShapeError
from ..initializers import default_for, get_initializer
from ..ops.activations import get_activation
from ..validation import check_int
from .base import Array, Layer, Params, Scratch, scratch_buffer


class Dense(Layer):
    """Fully connected layer ``A = σ(a W + b)``.

    Args:
        units: output width n_out (≥ 1).
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"softmax"``, ``"leaky_relu"`` or None.
        kernel_initializer: ``"he_normal"``, ``"xavier_uniform"``, ``"xavier_normal"``,
            ``"uniform"``, or a callable; defaults to He for ReLU, Xavier otherwise.
        input_dim: input width, needed on the first layer unless the model is given one.
        input_shape: one sample's shape, as Keras takes it on a first layer: ``(n_in,)``, or
            ``(T, n_in)`` for a sequence (give ``input_dim`` or ``input_shape``, not both).

    Example:
        >>> from toolkit import Dense, Sequential
        >>> model = Sequential([Dense(4, activation="relu", input_dim=3), Dense(1, activation="sigmoid")])
        >>> model.predict([[0.0, 1.0, 2.0]]).shape
        (1, 1)
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        kernel_initializer: str | None = None,
        bias_initializer: str = "zeros",
        input_dim: int | None = None,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        try:
            self.units = check_int("units", units, 1)
        except InputError:
            raise InputError(f"Dense(units={units!r}): units must be a positive integer") from None
        self.activation = get_activation(activation)
        self.kernel_initializer = kernel_initializer or default_for(self.activation.name)
        self.bias_initializer = bias_initializer
        get_initializer(self.kernel_initializer)
        get_initializer(self.bias_initializer)
        self.declared_input_dim = None if input_dim is None else check_int("input_dim", input_dim, 1)
        if input_shape is not None:
            if input_dim is not None:
                raise InputError(f"{self.describe()}: give input_dim or input_shape, not both")
            if isinstance(input_shape, int) or not input_shape:
                raise InputError(f"{self.describe()}: input_shape is one sample's shape, a tuple such as (64,); "
                                 f"got {input_shape!r}")
            self.declared_input_shape = tuple(check_int("input_shape", size, 1) for size in input_shape)

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shape:
            raise ShapeError(f"{self.describe()} needs a feature axis; got samples of shape {input_shape}")
        if self.declared_input_dim is not None and self.declared_input_dim != input_shape[-1]:
            raise ShapeError(
                f"{self.describe()} was declared with input_dim={self.declared_input_dim} "
                f"but the previous layer gives {input_shape[-1]} features"
            )
        self.input_shape, self.output_shape = tuple(input_shape), (*input_shape[:-1], self.units)
        return self.output_shape

    def describe(self) -> str:
        return f"Dense({self.units}, activation={self.activation.name!r})"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.input_shape[-1], self.units), "b": (self.units,)}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        shapes = self.param_shapes()
        return {name: get_initializer(init)(rng, shapes[name], self.input_shape[-1], self.units, dtype)
                for name, init in (("W", self.kernel_initializer), ("b", self.bias_initializer))}

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        rows = self._as_rows(x)
        z, a = self._rows_logits_and_output(params, rows, scratch)
        # saved: (input rows, Z, A) as (positions, width) matrices; the shape to give ∂J/∂a back in
        return self._unfold(a, x), ((rows, z, a, tuple(x.shape)) if context.training else None)

    def logits_and_output(self, params: Params, x: Array, scratch: Scratch | None = None) -> tuple[Array, Array]:
        """(Z, A) of a batch, shaped as the output: Z = aW + b, A = σ(Z)."""
        z, a = self._rows_logits_and_output(params, self._as_rows(x), scratch)
        return self._unfold(z, x), self._unfold(a, x)

    def _as_rows(self, x: Array) -> Array:
        """(N, …, n_in) → (N·…, n_in): every position a row (2-D batches pass as they are)."""
        return x if x.ndim == 2 else self.backend.xp.reshape(x, (-1, x.shape[-1]))

    def _unfold(self, rows: Array, like: Array) -> Array:
        return rows if like.ndim == 2 else self.backend.xp.reshape(rows, (-1, *like.shape[1:-1], rows.shape[-1]))

    def _rows_logits_and_output(self, params: Params, x: Array, scratch: Scratch | None) -> tuple[Array, Array]:
        backend, shape = self.backend, (x.shape[0], self.units)
        z = backend.matmul(x, params["W"], out=scratch_buffer(scratch, "z", shape, x.dtype))  # a W
        a_buffer = scratch_buffer(scratch, "a", shape, x.dtype)
        return backend.bias_activation(z, params["b"], self.activation, out=a_buffer)  # Z = aW + b, A = σ(Z)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        """From ∂J/∂A: δ = ∂J/∂A ∘ σ'(Z) (bias gradient fused in), then the linear part."""
        x, z, a, _ = saved
        delta, db = self.backend.activation_backward(
            self._as_rows(grad_output), z, a, self.activation, out=scratch_buffer(scratch, "delta", z.shape, z.dtype),
            db_out=grad_out.get("b"))
        return self._backward_linear(params, saved, delta, db, scratch, grad_out)

    def backward_from_delta(self, params: Params, saved: Any, delta: Array, scratch: Scratch | None,
                            grad_out: Params) -> tuple[Array | None, Params]:
        """From δ = ∂J/∂Z directly (the fused output layer + loss path, δ_out = ŷ − y)."""
        db = self.backend.sum_rows(delta, out=grad_out.get("b"))  # db = Σ_rows δ
        return self._backward_linear(params, saved, delta, db, scratch, grad_out)

    def _backward_linear(self, params: Params, saved: Any, delta: Array, db: Array, scratch: Scratch | None,
                         grad_out: Params) -> tuple[Array | None, Params]:
        backend = self.backend
        x, _, _, input_shape = saved
        if not self.trainable and not self.needs_input_grad:  # a frozen first layer: neither product is needed
            slot = grad_out.get("W")
            zeros = backend.xp.zeros_like(params["W"])
            return None, {"W": zeros if slot is None else backend.assign(slot, zeros), "b": db}
        dw = backend.matmul(x.T, delta, out=grad_out.get("W"))  # dW = aᵀ δ (a sum over every position)
        if not self.needs_input_grad:
            return None, {"W": dw, "b": db}
        dx = backend.matmul(delta, params["W"].T, out=scratch_buffer(scratch, "grad_input", x.shape, x.dtype))
        if len(input_shape) != 2:
            dx = backend.xp.reshape(dx, input_shape)
        return dx, {"W": dw, "b": db}  # ∂J/∂a = δ Wᵀ

    def get_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "activation": self.activation.name,
            "kernel_initializer": self.kernel_initializer if isinstance(self.kernel_initializer, str) else None,
            "bias_initializer": self.bias_initializer,
            "input_dim": self.declared_input_dim,
            **({"input_shape": list(declared)} if (declared := getattr(self, "declared_input_shape", None)) else {}),
        }
