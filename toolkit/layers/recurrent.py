"""``LSTM`` and ``GRU``: recurrent layers over a sequence (N, T, features), batch first, with
backpropagation through time.

Convention (PyTorch's gate order and formulas, so ``nn.LSTM``/``nn.GRU`` weights map exactly;
``toolkit.ops.recurrent`` has the cell math and its derivatives written out):

    input part, all steps at once:   X = x W + b            (N·T, G·H), one matrix product
    step t, from h₀ = c₀ = 0:        a_t = X_t + h_{t−1} U,  (h_t, c_t) = cell(a_t, c_{t−1})
    output:                          h_T, or every h_t with ``return_sequences=True`` (N, T, H)

Backward walks the steps in reverse: ∂J/∂h_t is the output's gradient at t plus the gradient from
step t + 1 (δ_{t+1} Uᵀ); the cell gives the step's δ_t = ∂J/∂a_t. What does not feed the next step
comes after the loop, one product each over all steps at once: dU = Σ_t h_{t−1}ᵀ δ_t = Hᵀ Δ (the
states and δs stacked), dW = xᵀ Δ, db = Σ Δ, ∂J/∂x = Δ Wᵀ.

W: (features, G·H), U: (H, G·H), G = 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n); b: (G·H,) is PyTorch's
b_ih + b_hh (the two always add, so one vector carries both; loading adds them, storing writes b
into b_ih and zeros into b_hh), except the GRU's b_hn, which sits inside r ∘ (h U_n + b_hn) and is
a parameter of its own.
"""

from __future__ import annotations

from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import InputError, ShapeError
from ..validation import check_int
from .base import Array, Layer, Params, Scratch


class _Recurrent(Layer):
    gates = 0  # G: the blocks of H columns in W, U and b

    def __init__(self, units: int, return_sequences: bool = False,
                 input_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.units = check_int("units", units, 1)
        if not isinstance(return_sequences, bool):
            raise InputError(f"{type(self).__name__}: return_sequences must be True or False; got {return_sequences!r}")
        self.return_sequences = return_sequences
        if input_shape is not None:
            self.declared_input_shape = tuple(check_int("input_shape", size, 1) for size in input_shape)

    def describe(self) -> str:
        return f"{type(self).__name__}({self.units}" + (", return_sequences=True" if self.return_sequences else "") + ")"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2:
            raise ShapeError(
                f"{self.describe()} takes sequences (N, T, features); got samples of shape {input_shape}"
                + (" — add a time axis: x[:, :, None] for one feature per step, or Reshape((T, features))"
                   if len(input_shape) == 1 else ""))
        self.input_shape = tuple(input_shape)
        self.output_shape = (input_shape[0], self.units) if self.return_sequences else (self.units,)
        return self.output_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        width = self.gates * self.units
        return {"W": (self.input_shape[1], width), "U": (self.units, width), "b": (width,)}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        """U(−1/√H, 1/√H) for every weight and bias, PyTorch's initialisation of its recurrent layers."""
        bound = self.units ** -0.5
        return {name: rng.uniform(shape, -bound, bound, dtype) for name, shape in self.param_shapes().items()}

    def _time_first_rows(self, x: Array) -> Array:
        """x (N, T, F) as rows (T·N, F), time first: the narrow input is what gets reordered, not the
        G·H-wide products made from it."""
        xp = self.backend.xp
        return xp.reshape(xp.permute_dims(x, (1, 0, 2)), (-1, x.shape[2]))

    def _time_major(self, params: Params, x: Array) -> Array:
        """X = x W + b for every step at once, time first: (T, N, G·H), so each step's slice is contiguous.

        Computed as [x 1] [W; b], the bias a row of the product: an add of its own over the wide
        result cost more than the product itself (NumPy, (1792 × 28)·(28 × 512) float32: 1.45 ms with
        the add, 0.57 ms so)."""
        xp = self.backend.xp
        rows = self._time_first_rows(x)
        rows_and_one = xp.concat([rows, xp.ones_like(rows[:, :1])], axis=1)  # ones_like: the batch may be symbolic
        inputs = rows_and_one @ xp.concat([params["W"], params["b"][None, :]], axis=0)
        return xp.reshape(inputs, (x.shape[1], -1, self.gates * self.units))  # batch: symbolic in an export

    def _output(self, states: Array) -> Array:
        """Every h_t (N, T, H) from the stacked states (T, N, H), or the last one."""
        return self.backend.xp.permute_dims(states, (1, 0, 2)) if self.return_sequences else states[-1, ...]

    def _output_gradients(self, grad_output: Array, length: int) -> Array:
        """∂J/∂h_t from the layer's output, time first (T, N, H): zero before the last step when only
        h_T is returned."""
        xp = self.backend.xp
        if self.return_sequences:
            return xp.permute_dims(grad_output, (1, 0, 2))
        before = xp.zeros((length - 1, *grad_output.shape), dtype=grad_output.dtype, device=self.backend.device)
        return xp.concat([before, grad_output[None, ...]], axis=0)

    def _weight_gradients(self, params: Params, x: Array, previous: Array, deltas: Array,
                          recurrent_deltas: Array) -> tuple[Array | None, Params]:
        """After the loop, one product each over all steps (time-first stacks (T, N, ·)):
        dU = Σ_t h_{t−1}ᵀ δ^U_t, dW = xᵀ δ, db = Σ δ, ∂J/∂x = δ Wᵀ."""
        xp = self.backend.xp
        width = self.gates * self.units
        grads = {"U": xp.matrix_transpose(xp.reshape(previous, (-1, self.units)))
                 @ xp.reshape(recurrent_deltas, (-1, width))}
        delta = xp.reshape(deltas, (-1, width))  # (T·N, G·H), time first
        rows = self._time_first_rows(x)
        grads["W"], grads["b"] = xp.matrix_transpose(rows) @ delta, xp.sum(delta, axis=0)
        if not self.needs_input_grad:
            return None, grads
        dx = xp.reshape(delta @ xp.matrix_transpose(params["W"]), (x.shape[1], -1, x.shape[2]))
        return xp.permute_dims(dx, (1, 0, 2)), grads

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"units": self.units, "return_sequences": self.return_sequences}
        declared = getattr(self, "declared_input_shape", None)
        if declared is not None:
            config["input_shape"] = list(declared)
        return config


class LSTM(_Recurrent):
    """Long short-term memory over a sequence (N, T, features) → (N, units), or (N, T, units) with
    ``return_sequences=True``; gates i, f, g, o as in ``torch.nn.LSTM``.

    Example:
        >>> from toolkit import LSTM, Dense, Sequential
        >>> model = Sequential([LSTM(8, input_shape=(5, 3)), Dense(1)])
        >>> model.predict([[[0.0, 1.0, 2.0]] * 5]).shape
        (1, 1)
    """

    gates = 4

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        inputs = self._time_major(params, x)  # X = x W + b, (T, N, 4H)
        # a_t = X_t + h_{t−1} U and the cell, step by step (a hot op: numba runs the loop in place)
        states, previous, cells, gates = self.backend.lstm_sequence(inputs, params["U"], self.units)
        return self._output(states), ((x, previous, cells, gates) if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        x, previous, cells, gates = saved
        # per step, last first: ∂J/∂h_t = (from the output) + δ_{t+1} Uᵀ, then the cell's backward
        deltas = self.backend.lstm_sequence_backward(self._output_gradients(grad_output, x.shape[1]), cells, gates,
                                                     params["U"])
        return self._weight_gradients(params, x, previous, deltas, deltas)


class GRU(_Recurrent):
    """Gated recurrent unit over a sequence (N, T, features) → (N, units), or (N, T, units) with
    ``return_sequences=True``; gates r, z, n as in ``torch.nn.GRU``, with n = tanh(x W_n + b_n + r ∘ (h U_n + b_hn)).

    Example:
        >>> from toolkit import GRU, Dense, Sequential
        >>> model = Sequential([GRU(8, return_sequences=True, input_shape=(5, 3)), Dense(2)])
        >>> model.predict([[[0.0, 1.0, 2.0]] * 5]).shape
        (1, 5, 2)
    """

    gates = 3

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**super().param_shapes(), "b_hn": (self.units,)}

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        xp, backend, u, b_hn = self.backend.xp, self.backend, params["U"], params["b_hn"]
        inputs = self._time_major(params, x)  # X = x W + b, (T, N, 3H)

        def step(h: Array, current: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...]]:
            h_new, cell = backend.gru_cell(current[0], h @ u, b_hn, h, self.units)
            return h_new, (h_new, h, cell)

        _, (states, previous, cells) = backend.scan(step, xp.zeros_like(inputs[0, :, : self.units]), (inputs,))
        return self._output(states), ((x, previous, cells) if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp, backend, u_t = self.backend.xp, self.backend, self.backend.xp.matrix_transpose(params["U"])
        x, previous, cells = saved

        def step(dh_next: Array, current: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...]]:
            from_output, h_prev, cell = current
            delta, recurrent_delta, dh_direct = backend.gru_cell_backward(dh_next + from_output, h_prev, cell)
            return recurrent_delta @ u_t + dh_direct, (delta, recurrent_delta)  # ∂J/∂h_{t−1}

        _, (deltas, recurrent_deltas) = backend.scan(
            step, xp.zeros_like(previous[0, ...]), (self._output_gradients(grad_output, x.shape[1]), previous, cells),
            reverse=True)
        dx, grads = self._weight_gradients(params, x, previous, deltas, recurrent_deltas)
        grads["b_hn"] = xp.sum(xp.reshape(recurrent_deltas, (-1, 3 * self.units))[:, 2 * self.units :], axis=0)
        return dx, grads  # db_hn = Σ dn ∘ r
