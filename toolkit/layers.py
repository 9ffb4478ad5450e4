"""Layers: ``Dense`` (a fully connected layer with its activation) and ``Activation``.

Convention: batch-first rows. A batch ``a`` of shape (N, n_in) goes through

    Z = a W + b,   A = σ(Z)          W: (n_in, n_out), b: (n_out,)

which is the textbook's column form ``Z[l] = W[l] a[l-1] + b[l]`` transposed
(there ``W[l]`` is (n_out, n_in) and each sample is a column). Backward, given
δ = ∂J/∂Z of this layer:

    dW = aᵀ δ,   db = Σ_rows δ,   ∂J/∂a = δ Wᵀ

and the previous layer's error term is ``δ[l-1] = (δ[l] W[l]ᵀ) ∘ σ'(Z[l-1])``.
"""

from __future__ import annotations

from typing import Any

from .backend import Backend, HostRandom
from .errors import InputError, ShapeError
from .initializers import default_for, get_initializer
from .ops.activations import get_activation

Array = Any


class Layer:
    """Base class. A layer owns views into its model's flat parameter and gradient buffers."""

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.input_dim: int | None = None
        self.output_dim: int | None = None
        # The first layer has no one to pass ∂J/∂a to; skipping that product saves a GEMM.
        self.needs_input_grad = True

    def configure(self, input_dim: int) -> int:
        """Fix the input width; return the output width."""
        self.input_dim = self.output_dim = input_dim
        return input_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def initialize(self, rng: HostRandom, dtype: Any) -> None:
        """Write initial values into ``self.params`` (views already attached)."""

    def forward(self, x: Array, training: bool = False) -> Array:
        raise NotImplementedError

    def backward(self, grad_output: Array) -> Array | None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}


class Dense(Layer):
    """Fully connected layer ``A = σ(a W + b)``.

    Args:
        units: output width n_out (≥ 1).
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"softmax"``, ``"leaky_relu"`` or None.
        kernel_initializer: ``"he_normal"``, ``"xavier_uniform"``, ``"xavier_normal"``,
            ``"uniform"``, or a callable; defaults to He for ReLU, Xavier otherwise.
        input_dim: input width, needed on the first layer unless the model is given one.

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
    ) -> None:
        super().__init__()
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            raise InputError(f"Dense(units={units!r}): units must be a positive integer")
        self.units = units
        self.activation = get_activation(activation)
        self.kernel_initializer = kernel_initializer or default_for(self.activation.name)
        self.bias_initializer = bias_initializer
        get_initializer(self.kernel_initializer)
        get_initializer(self.bias_initializer)
        self.declared_input_dim = input_dim
        self._cache: tuple[Array, Array, Array] | None = None

    def configure(self, input_dim: int) -> int:
        if self.declared_input_dim is not None and self.declared_input_dim != input_dim:
            raise ShapeError(
                f"{self.describe()} was declared with input_dim={self.declared_input_dim} "
                f"but the previous layer gives {input_dim} features"
            )
        self.input_dim, self.output_dim = input_dim, self.units
        return self.units

    def describe(self) -> str:
        return f"Dense({self.units}, activation={self.activation.name!r})"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.input_dim, self.units), "b": (self.units,)}

    def initialize(self, rng: HostRandom, dtype: Any) -> None:
        for name, init_name in (("W", self.kernel_initializer), ("b", self.bias_initializer)):
            shape = self.params[name].shape
            self.params[name][...] = get_initializer(init_name)(rng, shape, self.input_dim, self.units, dtype)

    def forward(self, x: Array, training: bool = False) -> Array:
        backend, shape = self.backend, (x.shape[0], self.units)
        # Scratch buffers only in training: predictions handed to the caller are never reused.
        z_buffer = backend.workspace(self, "z", shape, x.dtype) if training else None
        a_buffer = backend.workspace(self, "a", shape, x.dtype) if training else None
        z = backend.matmul(x, self.params["W"], out=z_buffer)  # a W
        z, a = backend.bias_activation(z, self.params["b"], self.activation, out=a_buffer)  # Z = aW + b, A = σ(Z)
        self._cache = (x, z, a) if training else None
        return a

    def keep_training_pass(self, x: Array, z: Array, a: Array) -> None:
        """Record a training forward pass computed elsewhere (a backend's whole-stack kernel)."""
        self._cache = (x, z, a)

    def _require_training_pass(self) -> tuple[Array, Array, Array]:
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward pass with training=True first")
        return self._cache

    @property
    def cached_output(self) -> tuple[Array, Array]:
        """(Z, A) of the last training forward pass."""
        _, z, a = self._require_training_pass()
        return z, a

    def backward(self, grad_output: Array) -> Array | None:
        """From ∂J/∂A: δ = ∂J/∂A ∘ σ'(Z) (bias gradient fused in), then the linear part."""
        z, a = self.cached_output
        out = self.backend.workspace(self, "delta", z.shape, z.dtype)
        delta = self.backend.activation_backward(grad_output, z, a, self.activation, self.grads["b"], out=out)
        return self._backward_linear(delta)

    def backward_from_delta(self, delta: Array) -> Array | None:
        """From δ = ∂J/∂Z directly (the fused output layer + loss path, δ_out = ŷ − y)."""
        self._require_training_pass()
        self.backend.sum_rows_into(delta, self.grads["b"])
        return self._backward_linear(delta)

    def _backward_linear(self, delta: Array) -> Array | None:
        x = self._cache[0]
        backend = self.backend
        backend.matmul_into(x.T, delta, self.grads["W"])  # dW = aᵀ δ
        if not self.needs_input_grad:
            return None
        out = backend.workspace(self, "grad_input", x.shape, x.dtype)
        return backend.matmul(delta, self.params["W"].T, out=out)  # ∂J/∂a = δ Wᵀ

    def get_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "activation": self.activation.name,
            "kernel_initializer": self.kernel_initializer if isinstance(self.kernel_initializer, str) else None,
            "bias_initializer": self.bias_initializer,
            "input_dim": self.declared_input_dim,
        }


class Activation(Layer):
    """A stand-alone activation ``A = σ(Z)``, for stacks that keep the linear part separate."""

    def __init__(self, activation: str | None) -> None:
        super().__init__()
        self.activation = get_activation(activation)
        self._cache: tuple[Array, Array] | None = None

    def describe(self) -> str:
        return f"Activation({self.activation.name!r})"

    def forward(self, x: Array, training: bool = False) -> Array:
        a = self.activation.forward(x, self.backend.xp)
        self._cache = (x, a) if training else None
        return a

    @property
    def cached_output(self) -> tuple[Array, Array]:
        """(input, output) of the last training forward pass."""
        if self._cache is None:
            raise RuntimeError(f"{self.describe()}: backward needs a forward pass with training=True first")
        return self._cache

    def backward(self, grad_output: Array) -> Array:
        z, a = self.cached_output
        return self.activation.backward(grad_output, z, a, self.backend.xp)

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation.name}


LAYERS: dict[str, type[Layer]] = {"Dense": Dense, "Activation": Activation}
