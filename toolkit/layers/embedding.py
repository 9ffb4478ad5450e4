"""``Embedding`` (token ids → vectors) and ``PositionEmbedding`` (a learned vector per position).

Convention: a batch of token ids ``x`` of shape (N, T), integers in [0, V); a table ``E`` (V, d):

    Embedding:          y[n, t] = E[x[n, t]]                      (N, T) → (N, T, d)
        backward:       dE[v] = Σ_{(n, t): x[n, t] = v} δ[n, t]    (a token seen twice gets both δ)
    PositionEmbedding:  y[n, t] = x[n, t] + P[t]                  (N, T, d) → (N, T, d), P: (max_length, d)
        backward:       dP[t] = Σ_n δ[n, t] for t < T (0 beyond),  ∂J/∂x = δ

Ids are not differentiable, so an ``Embedding`` is a model's first layer and passes nothing back.
Its gradient is the hot op ``scatter_add_rows`` (a plain Array-API reference, and a scatter-add
kernel on the backends that have one).
"""

from __future__ import annotations

from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import InputError, ShapeError
from ..initializers import get_initializer
from ..validation import check_int
from .base import Array, Layer, Params, Scratch


class Embedding(Layer):
    """A lookup table of ``vocab_size`` learned vectors of width ``dim``: ids (N, T) → (N, T, dim).

    The model's inputs are then integer token ids (any integer dtype of any array library); an id
    outside [0, vocab_size) is an ``InputError`` naming it and its position.

    Args:
        vocab_size: number of distinct ids V.
        dim: width d of each vector.
        input_length: the sequence length T (the model's input shape is (T,)).
        embeddings_initializer: ``"small_normal"`` (N(0, 0.02²), GPT-2's) or any initializer name.

    Example:
        >>> from toolkit import Dense, Embedding, Sequential
        >>> model = Sequential([Embedding(10, 4, input_length=3), Dense(2)])
        >>> model.predict([[1, 2, 3]]).shape
        (1, 3, 2)
    """

    takes_token_ids = True

    def __init__(self, vocab_size: int, dim: int, input_length: int | None = None,
                 embeddings_initializer: str = "small_normal") -> None:
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, 1)
        self.dim = check_int("dim", dim, 1)
        self.input_length = None if input_length is None else check_int("input_length", input_length, 1)
        get_initializer(embeddings_initializer)
        self.embeddings_initializer = embeddings_initializer
        if self.input_length is not None:
            self.declared_input_shape = (self.input_length,)

    def describe(self) -> str:
        return f"Embedding({self.vocab_size}, {self.dim})"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 1:
            raise ShapeError(f"{self.describe()} takes token ids of shape (N, T); got samples of shape {input_shape}")
        if self.input_length is not None and input_shape[0] != self.input_length:
            raise ShapeError(f"{self.describe()} was built for sequences of input_length={self.input_length}; "
                             f"got length {input_shape[0]}: cut or pad the sequences, or build it with that length")
        self.input_shape, self.output_shape = tuple(input_shape), (input_shape[0], self.dim)
        return self.output_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"embeddings": (self.vocab_size, self.dim)}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        initializer = get_initializer(self.embeddings_initializer)
        return {"embeddings": initializer(rng, (self.vocab_size, self.dim), self.vocab_size, self.dim, dtype)}

    def check_ids(self, ids: Array, xp: Any) -> None:
        """Raise ``InputError`` naming the first id outside [0, vocab_size) and its (row, position)."""
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bool(xp.any(bad)):
            first = int(xp.argmax(xp.astype(xp.reshape(bad, (-1,)), xp.int32)))
            row, position = divmod(first, int(ids.shape[1]))
            raise InputError(f"{self.describe()}: token id {int(ids[row, position])} at row {row}, position {position} "
                             f"is outside [0, {self.vocab_size}); ids index the table, so they must be in that range "
                             "(map unknown tokens to a reserved id, or build the layer with a larger vocab_size)")

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        xp = self.backend.xp
        flat_ids = xp.reshape(x, (-1,))
        vectors = xp.take(params["embeddings"], flat_ids, axis=0)  # y[n, t] = E[x[n, t]]
        # -1 for the batch: an exported graph's batch size is symbolic
        return xp.reshape(vectors, (-1, x.shape[1], self.dim)), (flat_ids if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        rows = self.backend.xp.reshape(grad_output, (-1, self.dim))
        # dE[v] = Σ δ over the positions holding v
        return None, {"embeddings": self.backend.scatter_add_rows(saved, rows, self.vocab_size)}

    def get_config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "dim": self.dim, "input_length": self.input_length,
                "embeddings_initializer": self.embeddings_initializer}


class PositionEmbedding(Layer):
    """A learned vector per position added to a sequence (GPT-2's position embedding):
    (N, T, d) → (N, T, d), with a table (max_length, d) of which the first T rows are used.

    Example:
        >>> from toolkit import Embedding, PositionEmbedding, Sequential
        >>> model = Sequential([Embedding(10, 4, input_length=3), PositionEmbedding(8)])
        >>> model.predict([[1, 2, 3]]).shape
        (1, 3, 4)
    """

    def __init__(self, max_length: int, embeddings_initializer: str = "small_normal") -> None:
        super().__init__()
        self.max_length = check_int("max_length", max_length, 1)
        get_initializer(embeddings_initializer)
        self.embeddings_initializer = embeddings_initializer

    def describe(self) -> str:
        return f"PositionEmbedding({self.max_length})"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2:
            raise ShapeError(f"{self.describe()} takes sequences (N, T, d); got samples of shape {input_shape}")
        if input_shape[0] > self.max_length:
            raise ShapeError(f"{self.describe()}: sequences of length {input_shape[0]} are longer than "
                             f"max_length={self.max_length}; build it with max_length ≥ {input_shape[0]}")
        self.input_shape = self.output_shape = tuple(input_shape)
        return self.output_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"positions": (self.max_length, self.input_shape[1])}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        shape = (self.max_length, self.input_shape[1])
        return {"positions": get_initializer(self.embeddings_initializer)(rng, shape, shape[0], shape[1], dtype)}

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        return x + params["positions"][: x.shape[1], :], None  # y[n, t] = x[n, t] + P[t]

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp = self.backend.xp
        used = xp.sum(grad_output, axis=0)  # dP[t] = Σ_n δ[n, t]
        unused = self.max_length - used.shape[0]
        d_positions = used if not unused else xp.concat([used, xp.zeros((unused, used.shape[1]), dtype=used.dtype,
                                                                        device=self.backend.device)])
        return grad_output, {"positions": d_positions}

    def get_config(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "embeddings_initializer": self.embeddings_initializer}


def check_token_inputs(layers: list[Layer]) -> None:
    """Only a model's first layer can take token ids: an ``Embedding`` deeper in would receive
    activations, not ids."""
    for index, layer in enumerate(layers[1:], start=1):
        if getattr(layer, "takes_token_ids", False):
            raise InputError(f"layer {index}, {layer.describe()}, takes token ids, so it must be the model's first "
                             "layer (the layers before it give floating-point activations)")

