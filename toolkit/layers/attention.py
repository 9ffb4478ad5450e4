"""``MultiHeadAttention``: scaled dot-product self-attention with several heads.

Convention: a sequence batch x (N, T, d); h heads of width k (``num_heads``, ``key_dim``); every
product acts on the last axis of every position, and per head h:

    [Q K V] = x [W_q W_k W_v] + [b_q 0 b_v]                          W_q, W_k, W_v: (d, h·k), split into heads
    S = Q̃ Kᵀ (+ mask),  Q̃ = Q / √k,   P = softmax(S) row by row,   O = P̃ V     P̃ = P with dropout (training)
    y = concat_h(O) W_o + b_o                                        W_o: (h·k, d)

backward, from dy = ∂J/∂y:

    dW_o = concat(O)ᵀ dy,  db_o = Σ dy,  dO = dy W_oᵀ (split into heads)
    dP̃ = dO Vᵀ,  dV = P̃ᵀ dO,  dP = dP̃ ∘ dropout mask,  dS = P ∘ (dP − Σ_j dP ∘ P)
    dQ = dS K / √k,  dK = dSᵀ Q̃
    [dW_q dW_k dW_v] = xᵀ [dQ dK dV],  db_* = Σ d*,  ∂J/∂x = [dQ dK dV] [W_q W_k W_v]ᵀ

The three projections run as one product with the weights side by side (as PyTorch's packed
``in_proj_weight``): one matrix product instead of three each way, and no sum of three ∂J/∂x parts.
Q is scaled before the scores, on (T, k) per head rather than on the (T, T) scores.

Keys have no bias: a key bias b_k adds q_i·b_k to every score of row i, which the softmax cancels,
so its gradient is exactly 0 and its value never matters. Keras and PyTorch carry one anyway;
here it is left out, because with Adam its round-off gradients (~1e-17) become steps of the full
learning rate in random directions, and runs on two backends would differ in it.

The causal mask lets position i attend to positions j ≤ i only (a language model's), and is a
constant of the sequence length. PyTorch's ``nn.MultiheadAttention`` (one layer, batch_first) is
the same function with ``in_proj_weight = [W_qᵀ; W_kᵀ; W_vᵀ]`` and ``out_proj.weight = W_oᵀ``
(``toolkit.interop`` maps the two; the torch key bias is dropped on loading, which changes nothing
the layer computes, and written as zeros on storing).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import InputError, ShapeError
from ..initializers import get_initializer
from ..validation import check_int, check_real
from .base import Array, Layer, Params, Scratch

PROJECTIONS = ("q", "k", "v")


class MultiHeadAttention(Layer):
    """Self-attention over a sequence (N, T, d) → (N, T, d) with ``num_heads`` heads of width ``key_dim``.

    Args:
        num_heads: number of heads h.
        key_dim: width k of each head's queries, keys and values (h·k need not equal d).
        causal: let each position attend only to itself and earlier positions.
        dropout: rate of dropout on the attention weights P, in training.
        kernel_initializer: initializer of the four weight matrices (biases start at zero).

    Example:
        >>> from toolkit import Embedding, MultiHeadAttention, Sequential
        >>> model = Sequential([Embedding(10, 8, input_length=5), MultiHeadAttention(2, 4, causal=True)])
        >>> model.predict([[1, 2, 3, 4, 5]]).shape
        (1, 5, 8)
    """

    def __init__(self, num_heads: int, key_dim: int, causal: bool = False, dropout: float = 0.0,
                 kernel_initializer: str = "xavier_uniform") -> None:
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads, 1)
        self.key_dim = check_int("key_dim", key_dim, 1)
        if not isinstance(causal, bool):
            raise InputError(f"MultiHeadAttention: causal must be True or False; got {causal!r}")
        self.causal = causal
        try:
            self.dropout = check_real("dropout", dropout, 0.0, 1.0, high_open=True)
        except InputError:
            raise InputError(f"MultiHeadAttention(dropout={dropout!r}): dropout must lie in [0, 1)") from None
        get_initializer(kernel_initializer)
        self.kernel_initializer = kernel_initializer
        self.stream = 0

    @property
    def draws_random(self) -> bool:
        return self.dropout > 0.0

    @property
    def width(self) -> int:
        """h·k, the width of the concatenated heads."""
        return self.num_heads * self.key_dim

    def describe(self) -> str:
        return (f"MultiHeadAttention({self.num_heads}, {self.key_dim}"
                + (", causal=True" if self.causal else "") + (f", dropout={self.dropout}" if self.dropout else "") + ")")

    def bind(self, backend: Any, index: str) -> None:
        super().bind(backend, index)
        self.stream = zlib.crc32(f"{index}.attention".encode())  # its own stream of dropout masks

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2:
            raise ShapeError(f"{self.describe()} takes sequences (N, T, d); got samples of shape {input_shape}"
                             + (" (add a time axis, e.g. Reshape, or an Embedding first)" if len(input_shape) == 1
                                else ""))
        self.input_shape = self.output_shape = tuple(input_shape)
        return self.output_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        d, width = self.input_shape[1], self.width
        shapes: dict[str, tuple[int, ...]] = {}
        for name in PROJECTIONS:
            shapes[f"W{name}"] = (d, width)
            if name != "k":
                shapes[f"b{name}"] = (width,)
        shapes["Wo"], shapes["bo"] = (width, d), (d,)
        return shapes

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        initializer = get_initializer(self.kernel_initializer)
        params = {}
        for name, shape in self.param_shapes().items():
            params[name] = (initializer(rng, shape, shape[0], shape[1], dtype) if len(shape) == 2
                            else rng.constant(shape, 0.0, dtype))
        return params

    # -- forward ----------------------------------------------------------------------------
    def _packed(self, params: Params) -> tuple[Array, Array]:
        """[W_q W_k W_v] (d, 3·h·k) and [b_q 0 b_v] (3·h·k,): keys have no bias."""
        xp = self.backend.xp
        weights = xp.concat([params[f"W{name}"] for name in PROJECTIONS], axis=1)
        return weights, xp.concat([params["bq"], xp.zeros_like(params["bq"]), params["bv"]])

    def _heads(self, rows: Array, length: int) -> Array:
        """(N·T, h·k) → (N, h, T, k). The batch is -1 throughout: an exported graph's is symbolic."""
        xp = self.backend.xp
        return xp.permute_dims(xp.reshape(rows, (-1, length, self.num_heads, self.key_dim)), (0, 2, 1, 3))

    def _rows(self, heads: Array) -> Array:
        """(N, h, T, k) → (N·T, h·k): the heads side by side, per position."""
        xp = self.backend.xp
        return xp.reshape(xp.permute_dims(heads, (0, 2, 1, 3)), (-1, self.width))

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        xp, backend = self.backend.xp, self.backend
        _, length, d = x.shape
        rows = xp.reshape(x, (-1, d))
        weights, biases = self._packed(params)
        packed = rows @ weights + biases  # [Q K V], (N·T, 3·h·k)
        # (N·T, 3·h·k) → (3, N, h, T, k): Q, K and V split into heads, as views
        qkv = xp.permute_dims(xp.reshape(packed, (-1, length, 3, self.num_heads, self.key_dim)), (2, 0, 3, 1, 4))
        q, k, v = qkv[0, ...] * (1.0 / math.sqrt(self.key_dim)), qkv[1, ...], qkv[2, ...]  # Q̃ = Q / √k
        scores = q @ xp.matrix_transpose(k)  # S = Q̃ Kᵀ, (N, h, T, T)
        p = backend.attention_weights(scores, self.causal, length)  # P = softmax(S + mask), row by row
        mask = None
        if context.training and self.dropout > 0.0:
            mask = backend.dropout_mask(context.random_key, self.stream, tuple(p.shape), context.first_row,
                                        self.dropout, p.dtype)
        p_used = p if mask is None else p * mask  # P̃
        heads_out = self._rows(p_used @ v)  # concat_h(O), O = P̃ V
        y = heads_out @ params["Wo"] + params["bo"]
        saved = (rows, weights, q, k, v, p, mask, heads_out) if context.training else None
        return xp.reshape(y, (-1, length, d)), saved

    # -- backward ---------------------------------------------------------------------------
    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp = self.backend.xp
        rows, weights, q, k, v, p, mask, heads_out = saved
        length, width = q.shape[2], self.width
        dy = xp.reshape(grad_output, (-1, grad_output.shape[-1]))
        grads = {"Wo": xp.matrix_transpose(heads_out) @ dy, "bo": xp.sum(dy, axis=0)}  # dW_o = concat(O)ᵀ dy
        d_out = self._heads(dy @ xp.matrix_transpose(params["Wo"]), length)  # dO = dy W_oᵀ
        p_used = p if mask is None else p * mask
        d_v = xp.matrix_transpose(p_used) @ d_out  # dV = P̃ᵀ dO
        d_p = d_out @ xp.matrix_transpose(v)  # dP̃ = dO Vᵀ
        if mask is not None:
            d_p = d_p * mask  # dP = dP̃ ∘ mask
        d_scores = self.backend.attention_weights_backward(d_p, p)  # dS = P ∘ (dP − Σ_j dP ∘ P)
        d_q = (d_scores @ k) * (1.0 / math.sqrt(self.key_dim))  # dQ = dS K / √k
        d_k = xp.matrix_transpose(d_scores) @ q  # dK = dSᵀ Q̃
        # [dQ dK dV] as rows (N·T, 3·h·k), each head's block where the forward's product put it
        d_packed = xp.reshape(xp.stack([xp.permute_dims(d, (0, 2, 1, 3)) for d in (d_q, d_k, d_v)], axis=2),
                              (-1, 3 * width))
        d_weights = xp.matrix_transpose(rows) @ d_packed  # [dW_q dW_k dW_v] = xᵀ [dQ dK dV]
        d_biases = xp.sum(d_packed, axis=0)
        for index, name in enumerate(PROJECTIONS):
            grads[f"W{name}"] = d_weights[:, index * width : (index + 1) * width]
            if name != "k":
                grads[f"b{name}"] = d_biases[index * width : (index + 1) * width]  # db = Σ d
        if not self.needs_input_grad:
            return None, grads
        dx = d_packed @ xp.matrix_transpose(weights)  # ∂J/∂x = [dQ dK dV] [W_q W_k W_v]ᵀ
        return xp.reshape(dx, grad_output.shape), grads

    def get_config(self) -> dict[str, Any]:
        return {"num_heads": self.num_heads, "key_dim": self.key_dim, "causal": self.causal, "dropout": self.dropout,
                "kernel_initializer": self.kernel_initializer}
