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

    def _input_part(self, params: Params, x: Array) -> Array:
        """X = x W + b for every step at once: (N, T, G·H)."""
        xp = self.backend.xp
        rows = xp.reshape(x, (-1, x.shape[2]))
        return xp.reshape(rows @ params["W"] + params["b"], (-1, x.shape[1], self.gates * self.units))

    def _output(self, states: list[Array]) -> Array:
        return self.backend.xp.stack(states, axis=1) if self.return_sequences else states[-1]

    def _output_gradient(self, grad_output: Array, t: int, length: int) -> Array | None:
        """∂J/∂h_t from the layer's output (None where the output does not include h_t)."""
        if self.return_sequences:
            return grad_output[:, t, :]
        return grad_output if t == length - 1 else None

    def _recurrent_gradient(self, tape: list[Any], deltas: list[Array]) -> Array:
        """dU = Σ_t h_{t−1}ᵀ δ_t as one product of the stacked states (N·T, H) and δs (N·T, G·H)."""
        xp = self.backend.xp
        states = xp.reshape(xp.stack([step[0] for step in tape], axis=1), (-1, self.units))
        return xp.matrix_transpose(states) @ xp.reshape(xp.stack(deltas, axis=1), (-1, self.gates * self.units))

    def _input_gradients(self, params: Params, x: Array, deltas: list[Array]) -> tuple[Array | None, Params]:
        """After the loop: dW = xᵀ δ, db = Σ δ, ∂J/∂x = δ Wᵀ over all steps' δ (N, T, G·H) at once."""
        xp = self.backend.xp
        delta = xp.reshape(xp.stack(deltas, axis=1), (-1, self.gates * self.units))
        rows = xp.reshape(x, (-1, x.shape[2]))
        grads = {"W": xp.matrix_transpose(rows) @ delta, "b": xp.sum(delta, axis=0)}
        if not self.needs_input_grad:
            return None, grads
        return xp.reshape(delta @ xp.matrix_transpose(params["W"]), x.shape), grads

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"units": self.units, "return_sequences": self.return_sequences}
        if hasattr(self, "declared_input_shape"):
            config["input_shape"] = list(self.declared_input_shape)
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
        xp, backend = self.backend.xp, self.backend
        inputs = self._input_part(params, x)  # X = x W + b
        h = c = xp.zeros_like(inputs[:, 0, : self.units])  # h₀ = c₀ = 0
        states, tape = [], []
        for t in range(x.shape[1]):
            a = inputs[:, t, :] + h @ params["U"]  # a_t = X_t + h_{t−1} U
            h_new, c_new, gates = backend.lstm_cell(a, c, self.units)
            tape.append((h, c, gates))
            h, c = h_new, c_new
            states.append(h)
        return self._output(states), ((x, tape) if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp, backend = self.backend.xp, self.backend
        x, tape = saved
        length = len(tape)
        deltas: list[Array] = [None] * length  # type: ignore[list-item]
        dh_next = dc_next = None
        for t in range(length - 1, -1, -1):
            _, c_prev, gates = tape[t]
            from_output = self._output_gradient(grad_output, t, length)
            dh = from_output if dh_next is None else (dh_next if from_output is None else dh_next + from_output)
            if dc_next is None:
                dc_next = xp.zeros_like(dh)
            deltas[t], dc_next = backend.lstm_cell_backward(dh, dc_next, c_prev, gates)  # δ_t = ∂J/∂a_t
            if t:  # h₀ = 0: nothing flows back from step 0
                dh_next = deltas[t] @ xp.matrix_transpose(params["U"])  # ∂J/∂h_{t−1} = δ_t Uᵀ
        dx, grads = self._input_gradients(params, x, deltas)
        grads["U"] = self._recurrent_gradient(tape, deltas)  # dU = Σ_t h_{t−1}ᵀ δ_t
        return dx, grads


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
        xp, backend = self.backend.xp, self.backend
        inputs = self._input_part(params, x)  # X = x W + b
        h = xp.zeros_like(inputs[:, 0, : self.units])  # h₀ = 0
        states, tape = [], []
        for t in range(x.shape[1]):
            h_new, cell = backend.gru_cell(inputs[:, t, :], h @ params["U"], params["b_hn"], h, self.units)
            tape.append((h, cell))
            h = h_new
            states.append(h)
        return self._output(states), ((x, tape) if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp, backend = self.backend.xp, self.backend
        x, tape = saved
        length, units = len(tape), self.units
        deltas: list[Array] = [None] * length  # type: ignore[list-item]
        recurrent_deltas: list[Array] = [None] * length  # type: ignore[list-item]
        dh_next = None
        for t in range(length - 1, -1, -1):
            h_prev, cell = tape[t]
            from_output = self._output_gradient(grad_output, t, length)
            dh = from_output if dh_next is None else (dh_next if from_output is None else dh_next + from_output)
            deltas[t], recurrent_deltas[t], dh_direct = backend.gru_cell_backward(dh, h_prev, cell)
            if t:  # h₀ = 0: nothing flows back from step 0
                dh_next = recurrent_deltas[t] @ xp.matrix_transpose(params["U"]) + dh_direct
        dx, grads = self._input_gradients(params, x, deltas)
        grads["U"] = self._recurrent_gradient(tape, recurrent_deltas)  # dU = Σ_t h_{t−1}ᵀ d(h U)_t
        stacked = xp.reshape(xp.stack(recurrent_deltas, axis=1), (-1, 3 * units))
        grads["b_hn"] = xp.sum(stacked[:, 2 * units :], axis=0)  # db_hn = Σ dn ∘ r
        return dx, grads
