"""The ``Sequential`` container: a stack of layers, its flat parameter buffer, and the
explicit forward and backward passes through it.

All parameters live in one flat array and all gradients in another; each layer's ``W`` and
``b`` are views into them. An optimizer therefore updates the whole model in one call, and a
data-parallel run all-reduces one buffer per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .backend import Backend
from .config import get_backend, load_backend
from .dense_stack import describe_dense_stack
from .errors import InputError, ShapeError
from .layers import Dense, Layer
from .losses import Loss, get_loss
from .optimizers import Optimizer, get_optimizer

Array = Any


class Sequential:
    """A feed-forward network ``ŷ = f_L(… f_2(f_1(x)))``.

    Args:
        layers: the layers, first to last.
        input_dim: number of input features (or give ``input_dim`` to the first ``Dense``).
        dtype: ``"float32"`` (default) or ``"float64"``.
        seed: seed of the initial weights; the same seed gives the same weights on every backend.
        backend: a backend name or object; defaults to the active one (``TOOLKIT_BACKEND``).

    Example:
        >>> from toolkit import Dense, Sequential
        >>> model = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3, activation="softmax")])
        >>> model.compile(loss="categorical_crossentropy", optimizer="adam")
        >>> float(model.train_step([[1.0, 2.0, 3.0, 4.0]], [2])) > 0
        True
    """

    def __init__(
        self,
        layers: Iterable[Layer],
        input_dim: int | None = None,
        dtype: str = "float32",
        seed: int = 0,
        backend: str | Backend | None = None,
    ) -> None:
        self.layers: list[Layer] = list(layers)
        if not self.layers:
            raise InputError("Sequential needs at least one layer")
        self.backend: Backend = get_backend() if backend is None else load_backend(backend)
        self.dtype = self.backend.dtype(dtype)
        self.dtype_name = dtype
        self.seed = seed
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.metrics: list[Any] = []
        self.stop_training = False
        self.is_main_process = True  # False on the other ranks of a data-parallel run
        self.built = False
        self._output_pair: str | None = None
        self._kernel: Any = None
        self._kernel_for: Any = None  # the flat buffer the kernel was made for; None forces a lookup
        first_dim = input_dim if input_dim is not None else getattr(self.layers[0], "declared_input_dim", None)
        if first_dim is not None:
            self.build(first_dim)

    # -- construction ---------------------------------------------------------------------
    def build(self, input_dim: int) -> None:
        """Fix the layer widths, allocate the flat buffers and draw the initial weights."""
        if not isinstance(input_dim, int) or input_dim < 1:
            raise InputError(f"input_dim must be a positive integer; got {input_dim!r}")
        width = input_dim
        for layer in self.layers:
            width = layer.configure(width)
        shapes = [(index, layer, name, shape) for index, layer in enumerate(self.layers)
                  for name, shape in layer.param_shapes().items()]
        total = sum(math.prod(shape) for *_, shape in shapes)
        xp = self.backend.xp
        self.flat_params = self.backend.zeros(total, self.dtype)
        # One slot past the gradients carries the batch loss, so a data-parallel step reduces
        # gradients and loss together in a single all-reduce.
        self.reduction_buffer = self.backend.zeros(total + 1, self.dtype)
        self.flat_grads = self.reduction_buffer[:total]
        offset = 0
        # Where each parameter starts in the flat buffers, by (layer index, name): compiled
        # whole-pass kernels address W and b by these offsets.
        self.param_offsets: dict[tuple[int, str], int] = {}
        for index, layer, name, shape in shapes:
            size = math.prod(shape)
            layer.params[name] = xp.reshape(self.flat_params[offset : offset + size], shape)
            layer.grads[name] = xp.reshape(self.flat_grads[offset : offset + size], shape)
            self.param_offsets[index, name] = offset
            offset += size
        rng = self.backend.random(self.seed)
        for index, layer in enumerate(self.layers):
            layer.backend = self.backend
            layer.needs_input_grad = index > 0
            layer.initialize(rng, self.dtype)
        self.input_dim = input_dim
        self.output_dim = width
        self.built = True
        if self.optimizer is not None:
            self.optimizer.bind(self.flat_params, self.backend)

    def compile(self, loss: str | Loss, optimizer: str | Optimizer = "sgd", metrics: Sequence[Any] = ()) -> None:
        """Choose the loss, the optimizer and the metrics reported by ``fit``/``evaluate``."""
        from .metrics import get_metric

        self.loss = get_loss(loss)
        self.optimizer = get_optimizer(optimizer)
        self.metrics = [get_metric(m) for m in metrics]
        last = self.layers[-1]
        # When the output activation and the loss pair up (sigmoid + BCE, softmax + CE),
        # backward starts from the fused δ_out = ŷ − y instead of chaining ∂J/∂ŷ through σ'.
        self._output_pair = (
            self.loss.fused_pairs.get(last.activation.name) if isinstance(last, Dense) else None
        )
        self._kernel_for = None
        if self.built:
            self.optimizer.bind(self.flat_params, self.backend)

    def named_parameters(self) -> list[tuple[str, Array]]:
        """``("0.W", array), ("0.b", array), …`` in model order; the arrays are live views."""
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers) for name, p in layer.params.items()]

    def named_gradients(self) -> list[tuple[str, Array]]:
        return [(f"{i}.{name}", g) for i, layer in enumerate(self.layers) for name, g in layer.grads.items()]

    def get_weights(self) -> dict[str, Any]:
        """Host (NumPy) copies of every parameter, by name."""
        return {name: self.backend.to_host(p).copy() for name, p in self.named_parameters()}

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load parameters by name; every name and shape is checked before anything is written."""
        params = dict(self.named_parameters())
        if set(weights) != set(params):
            raise ShapeError(f"weights name {sorted(weights)}, the model has {sorted(params)}")
        converted = {}
        for name, value in weights.items():
            array = self.backend.asarray(value, dtype=self.dtype)
            if tuple(array.shape) != tuple(params[name].shape):
                raise ShapeError(f"weight {name}: shape {tuple(array.shape)}, model needs {tuple(params[name].shape)}")
            converted[name] = array
        for name, array in converted.items():
            params[name][...] = array

    # -- inputs ---------------------------------------------------------------------------
    def as_input(self, x: Any) -> Array:
        """``x`` as a (N, n_features) array of the model's backend, device and dtype.

        Host arrays (NumPy, lists) and arrays of another backend are copied onto the model's
        device here, explicitly; integer, boolean and float16 inputs are refused.
        """
        x = self.backend.asarray(x)
        xp = self.backend.xp
        dtype_name = str(x.dtype).rsplit(".", 1)[-1]  # "int64" from any namespace's dtype
        if not xp.isdtype(x.dtype, "real floating"):
            raise InputError(
                f"inputs have dtype {dtype_name}; Dense layers need floating-point inputs "
                f"(convert with x.astype('{self.dtype_name}'))"
            )
        if x.dtype not in (xp.float32, xp.float64):
            raise InputError(f"inputs have dtype {dtype_name}, which is not supported; use float32 or float64")
        if x.ndim != 2:
            raise ShapeError(f"inputs must be a 2-D batch (N, n_features); got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InputError("empty batch: inputs have 0 rows")
        if not self.built:
            self.build(int(x.shape[1]))
        if x.shape[1] != self.input_dim:
            raise ShapeError(
                f"inputs have {x.shape[1]} features but the first layer, {_describe(self.layers[0])}, "
                f"expects {self.input_dim}"
            )
        return x if x.dtype == self.dtype else xp.astype(x, self.dtype)

    def prepare_targets(self, y: Any, n_rows: int, validate: bool = True) -> Array:
        """Targets checked against the model's output shape, converted once (labels → one-hot)."""
        if self.loss is None:
            raise RuntimeError("call compile(loss=..., optimizer=...) before training or evaluating")
        targets = self.loss.prepare((n_rows, self.output_dim), y, self.backend, self.dtype)
        if validate:
            self.loss.validate(targets, self.backend)
        return targets

    # -- passes ---------------------------------------------------------------------------
    def forward(self, x: Array, training: bool = False) -> Array:
        """ŷ for a prepared batch; with ``training=True`` each layer keeps what backward needs."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, y: Array) -> Array:
        """Backpropagate the loss of the last training forward pass against prepared targets ``y``.

        Fills every parameter gradient (``flat_grads``) and returns the loss as a 0-d array.
        """
        last = self.layers[-1]
        if self._output_pair is not None:
            z, a = last.cached_output
            out = self.backend.workspace(self, "delta_out", z.shape, z.dtype)
            loss, delta = self.backend.output_delta(self._output_pair, z, a, y, out=out)  # δ_out = (ŷ − y) / N
            grad = last.backward_from_delta(delta)
        else:
            prediction = last.cached_output[1]
            xp = self.backend.xp
            loss = self.loss.value(prediction, y, xp)
            grad = last.backward(self.loss.gradient(prediction, y, xp))
        for layer in reversed(self.layers[:-1]):
            grad = layer.backward(grad)  # δ[l] = (δ[l+1] W[l+1]ᵀ) ∘ σ'(Z[l])
        return loss

    def compute_gradients(self, x: Array, y: Array) -> Array:
        """Forward and backward on a prepared batch; returns the loss; no update."""
        kernel = self._stack_kernel()
        result = None if kernel is None else kernel(x, y)
        if result is not None:  # the backend ran the whole pass in one compiled call
            loss, outputs = result
            inputs = x
            for layer, (z, a) in zip(self.layers, outputs, strict=True):
                layer.keep_training_pass(inputs, z, a)
                inputs = a
            return loss
        self.forward(x, training=True)
        return self.backward(y)

    def _stack_kernel(self) -> Any:
        """The backend's whole-pass kernel for this model, looked up once per compile/build."""
        if self._kernel_for is not self.flat_params:
            stack = describe_dense_stack(self) if self.backend.fused else None
            self._kernel = None if stack is None else self.backend.dense_stack_kernel(stack)
            self._kernel_for = self.flat_params
        return self._kernel

    def apply_gradients(self) -> None:
        self.optimizer.step(self.flat_params, self.flat_grads)

    def train_step(self, x: Any, y: Any) -> Array:
        """One step of gradient descent on one batch (inputs and targets checked); returns the loss."""
        x = self.as_input(x)
        y = self.prepare_targets(y, x.shape[0])
        loss = self.compute_gradients(x, y)
        self.apply_gradients()
        return loss

    def predict(self, x: Any, batch_size: int | None = None) -> Array:
        """ŷ for inputs ``x`` (probabilities after sigmoid/softmax outputs), on the model's backend."""
        from .training import predict

        return predict(self, x, batch_size)

    def __call__(self, x: Any) -> Array:
        return self.forward(self.as_input(x))

    def fit(self, x: Any, y: Any, **kwargs: Any) -> Any:
        """Train; see ``toolkit.training.fit`` for the arguments. Returns a ``History``."""
        from .training import fit

        return fit(self, x, y, **kwargs)

    def evaluate(self, x: Any, y: Any, **kwargs: Any) -> dict[str, float]:
        """Loss and metrics on ``(x, y)``; see ``toolkit.training.evaluate``."""
        from .training import evaluate

        return evaluate(self, x, y, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {
            "input_dim": self.input_dim if self.built else None,
            "dtype": self.dtype_name,
            "seed": self.seed,
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
        }

    def summary(self) -> str:
        lines = [f"Sequential on {self.backend.name} ({self.dtype_name})"]
        for i, layer in enumerate(self.layers):
            count = sum(math.prod(p.shape) for p in layer.params.values())
            lines.append(f"  {i}: {_describe(layer):40s} -> {layer.output_dim}  params: {count}")
        lines.append(f"  total params: {int(self.flat_params.shape[0]) if self.built else 'not built'}")
        return "\n".join(lines)


def _describe(layer: Layer) -> str:
    return layer.describe() if hasattr(layer, "describe") else type(layer).__name__

