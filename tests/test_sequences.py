"""Sequences: token ids in, Embedding, PositionEmbedding, MultiHeadAttention, Dense on every position,
sparse categorical cross-entropy and per-token accuracy. Values against independent NumPy (and
PyTorch) computations, bad input, checkpoints, ONNX and torch weights. Finite differences, every
backend against numpy and the ``jax.grad`` oracle run on the transformer of ``tests.test_deeper``
(kind "seq"); 2-rank MPI on the one of ``tests.test_distributed`` (kind "seq")."""

import numpy as np
import pytest

import toolkit
from tests.conftest import selected_backends, to_numpy
from tests.helpers import relative_error
from toolkit import (
    Dense,
    Embedding,
    InputError,
    LayerNorm,
    MultiHeadAttention,
    PositionEmbedding,
    Residual,
    Sequential,
    ShapeError,
)
from toolkit.ops.attention import masked_softmax, softmax_backward


def _numpy_session_only():
    if "numpy" not in selected_backends():
        pytest.skip("backend-independent: runs in the numpy session")


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _attention_by_loops(x, w, heads, key_dim, causal):
    """Self-attention written position by position and head by head, for comparison."""
    n, length, _ = x.shape
    out = np.zeros_like(x)
    for b in range(n):
        q, k, v = x[b] @ w["Wq"] + w["bq"], x[b] @ w["Wk"], x[b] @ w["Wv"] + w["bv"]
        concatenated = np.zeros((length, heads * key_dim))
        for h in range(heads):
            cols = slice(h * key_dim, (h + 1) * key_dim)
            for i in range(length):
                visible = i + 1 if causal else length
                scores = np.array([q[i, cols] @ k[j, cols] for j in range(visible)]) / np.sqrt(key_dim)
                weights = _softmax(scores)
                concatenated[i, cols] = sum(weights[j] * v[j, cols] for j in range(visible))
        out[b] = concatenated @ w["Wo"] + w["bo"]
    return out


# -- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_the_formula_written_out(backend, rng, causal):
    model = Sequential([MultiHeadAttention(3, 2, causal=causal)], input_shape=(5, 4), dtype="float64", seed=1)
    weights = {name: rng.normal(size=value.shape) for name, value in model.get_weights().items()}
    model.set_weights(weights)
    x = rng.normal(size=(2, 5, 4))
    expected = _attention_by_loops(x, {name.split(".")[1]: value for name, value in weights.items()}, 3, 2, causal)
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)


def test_a_causal_position_never_sees_a_later_token(backend, rng):
    model = Sequential([Embedding(9, 6, input_length=6), PositionEmbedding(6),
                        Residual([LayerNorm(), MultiHeadAttention(2, 3, causal=True)]), Dense(9)], dtype="float64")
    x = rng.integers(0, 9, size=(3, 6))
    changed = x.copy()
    changed[:, 4:] = (x[:, 4:] + 1) % 9
    before, after = to_numpy(backend, model.predict(x)), to_numpy(backend, model.predict(changed))
    np.testing.assert_array_equal(before[:, :4], after[:, :4])
    assert np.all(np.abs(before[:, 4:] - after[:, 4:]).max(axis=-1) > 0)


def test_embedding_looks_up_rows_and_repeated_ids_add_their_gradients(backend, rng):
    model = Sequential([Embedding(5, 3, input_length=4), Dense(2)], dtype="float64", seed=2)
    model.compile(loss="mse")
    x = np.array([[1, 1, 4, 1], [0, 4, 4, 1]])
    table = model.get_weights()["0.embeddings"]
    w, b = model.get_weights()["1.W"], model.get_weights()["1.b"]
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), table[x] @ w + b, rtol=1e-13)
    y = rng.normal(size=(2, 4, 2))
    xb = model.as_input(x)
    model.compute_gradients(xb, model.prepare_targets(y, 2))
    delta = 2.0 * (table[x] @ w + b - y) / y.size @ w.T  # ∂J/∂E[x[n, t]] for each position
    expected = np.zeros_like(table)
    np.add.at(expected, x, delta)
    np.testing.assert_allclose(to_numpy(backend, dict(model.named_gradients())["0.embeddings"]), expected, rtol=1e-12)
    assert np.all(expected[[2, 3]] == 0)  # ids 2 and 3 never appear


def test_position_embedding_adds_its_first_rows(backend, rng):
    model = Sequential([PositionEmbedding(6)], input_shape=(4, 3), dtype="float64")
    x = rng.normal(size=(2, 4, 3))
    expected = x + model.get_weights()["0.positions"][:4]
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-15)


def test_dense_acts_on_every_position_as_on_rows(backend, rng):
    sequence = Sequential([Dense(3, activation="tanh")], input_shape=(4, 5), dtype="float64", seed=3)
    rows = Sequential([Dense(3, activation="tanh")], input_shape=(5,), dtype="float64", seed=3)
    x = rng.normal(size=(2, 4, 5))
    np.testing.assert_array_equal(to_numpy(backend, sequence.predict(x)),
                                  to_numpy(backend, rows.predict(x.reshape(8, 5))).reshape(2, 4, 3))


def test_sparse_categorical_crossentropy_and_per_token_accuracy(backend, rng):
    model = Sequential([Embedding(6, 4, input_length=3), Dense(6, activation="softmax")], dtype="float64", seed=5)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = rng.integers(0, 6, size=(4, 3)), rng.integers(0, 6, size=(4, 3))
    p = to_numpy(backend, model.predict(x))
    chosen = np.take_along_axis(p, y[..., None], axis=-1)[..., 0]
    result = model.evaluate(x, y)
    assert abs(result["loss"] - float(-np.mean(np.log(chosen)))) < 1e-12  # the mean over all 12 positions
    assert result["accuracy"] == np.mean(p.argmax(axis=-1) == y)
    one_hot = Sequential([Embedding(6, 4, input_length=3), Dense(6, activation="softmax")], dtype="float64", seed=5)
    one_hot.compile(loss="categorical_crossentropy")
    assert abs(one_hot.evaluate(x, np.eye(6)[y])["loss"] - result["loss"]) < 1e-13


def test_masked_softmax_of_a_fully_masked_row_is_zero_not_nan(numpy_backend):
    _numpy_session_only()
    xp = numpy_backend.xp
    scores = np.array([[0.5, 2.0, -1.0], [3.0, 1.0, 0.0]])
    allowed = np.array([[True, False, True], [False, False, False]])
    p = masked_softmax(scores, allowed, xp)
    np.testing.assert_allclose(p[0], _softmax(np.array([0.5, -1.0]))[[0, 0, 1]] * [1, 0, 1], rtol=1e-15)
    np.testing.assert_array_equal(p[1], 0.0)
    np.testing.assert_array_equal(softmax_backward(np.ones((2, 3)), p, xp)[1], 0.0)


# -- training -----------------------------------------------------------------------------------

def _copy_task(rng, rows=64, length=8):
    """Predict the previous token: learnable only by attending backwards."""
    x = rng.integers(1, 8, size=(rows, length))
    return x, np.concatenate([np.zeros((rows, 1), dtype=x.dtype), x[:, :-1]], axis=1)


def _tiny_gpt(seed=0):
    return Sequential([Embedding(8, 16, input_length=8), PositionEmbedding(8),
                       Residual([LayerNorm(), MultiHeadAttention(2, 8, causal=True)]),
                       Residual([LayerNorm(), Dense(32, activation="gelu"), Dense(16)]),
                       LayerNorm(), Dense(8, activation="softmax")], seed=seed)


def test_a_tiny_transformer_learns_to_copy_the_previous_token(numpy_backend, rng):
    _numpy_session_only()
    x, y = _copy_task(rng)
    model = _tiny_gpt()
    model.compile(loss="sparse_categorical_crossentropy", optimizer=toolkit.Adam(lr=0.01), metrics=["accuracy"])
    history = model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    assert history["accuracy"][-1] > 0.95, history["accuracy"][-5:]


def test_checkpoint_round_trip_and_resumed_training(backend, rng, tmp_path):
    from tests.test_deeper import deep_sequence

    x, y = rng.integers(0, 7, size=(8, 5)), rng.integers(0, 7, size=(8, 5))
    whole = deep_sequence()
    whole.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
    first = deep_sequence()
    first.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    toolkit.save(first, tmp_path / "gpt.safetensors")
    resumed = toolkit.load(tmp_path / "gpt.safetensors")
    np.testing.assert_array_equal(to_numpy(backend, resumed.predict(x)), to_numpy(backend, first.predict(x)))
    resumed.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)  # same dropout masks, Adam state
    for name, value in whole.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[name], value)


# -- bad input ----------------------------------------------------------------------------------

def _token_model():
    model = Sequential([Embedding(10, 4, input_length=3), MultiHeadAttention(2, 2), Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("x,y,error,message", [
    ([[1.0, 2.0, 3.0]], [[1, 2, 3]], InputError, r"takes integer token ids; got inputs of dtype float64 .*astype"),
    ([[1, -2, 3]], [[1, 2, 3]], InputError, r"token id -2 at row 0, position 1 is outside \[0, 10\)"),
    ([[1, 2, 3], [4, 10, 5]], [[1, 2, 3]] * 2, InputError, r"token id 10 at row 1, position 1 is outside \[0, 10\)"),
    ([1, 2, 3], [[1, 2, 3]], ShapeError, r"token ids of shape \(N, T\); got shape \(3,\) \(add a batch axis"),
    ([[1, 2, 3, 4]], [[1, 2, 3, 4]], ShapeError, r"sequences of length 4 .* built for length 3"),
    ([[1, 2, 3]], [[1, 2]], ShapeError, r"2 labels for 3 predictions"),
    ([[1, 2, 3]], np.eye(10)[[[1, 2, 3]]], ShapeError, r"integer labels of shape \(1, 3\).*use loss='categorical_crossentropy'"),
    ([[1, 2, 3]], [[1, 2, 11]], InputError, r"class labels must lie in \[0, 10\)"),
], ids=["float-ids", "negative-id", "id-too-large", "no-batch-axis", "too-long", "short-targets", "one-hot-targets",
        "label-too-large"])
def test_bad_sequence_input_is_a_clear_error_and_changes_nothing(backend, x, y, error, message):
    model = _token_model()
    before = model.get_weights()
    with pytest.raises(error, match=message):
        model.fit(np.asarray(x), np.asarray(y), epochs=1, verbose=0)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("make,error,message", [
    (lambda: Sequential([Dense(4, input_dim=3), Embedding(5, 4)]), InputError, r"layer 1, Embedding\(5, 4\), takes token "
     r"ids, so it must be the model's first layer"),
    (lambda: Sequential([MultiHeadAttention(2, 3)], input_shape=(6,)), ShapeError,
     r"takes sequences \(N, T, d\); got samples of shape \(6,\) \(add a time axis"),
    (lambda: Sequential([Embedding(5, 4, input_length=9), PositionEmbedding(8)]), ShapeError,
     r"sequences of length 9 are longer than max_length=8"),
    (lambda: MultiHeadAttention(0, 3), InputError, r"num_heads must be an integer ≥ 1"),
    (lambda: MultiHeadAttention(2, 3, dropout=1.0), InputError, r"dropout must lie in \[0, 1\)"),
    (lambda: Embedding(0, 4), InputError, r"vocab_size must be an integer ≥ 1"),
], ids=["embedding-not-first", "attention-on-flat", "longer-than-positions", "no-heads", "dropout-one", "no-vocab"])
def test_bad_sequence_models(make, error, message):
    with pytest.raises(error, match=message):
        make()


# -- exchange -----------------------------------------------------------------------------------

def test_onnx_export_takes_token_ids_with_a_dynamic_batch(numpy_backend, rng, tmp_path):
    _numpy_session_only()
    pytest.importorskip("ndonnx")
    import onnxruntime

    from tests.test_deeper import deep_sequence

    model = deep_sequence()
    model.fit(rng.integers(0, 7, size=(8, 5)), rng.integers(0, 7, size=(8, 5)), epochs=1, verbose=0)
    model.export_onnx(str(tmp_path / "gpt.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "gpt.onnx"))
    for rows in (1, 3, 16):
        x = rng.integers(0, 7, size=(rows, 5))
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict(x), rtol=1e-12, atol=1e-12)


def _torch_gpt(torch):
    """The toolkit model of ``_toolkit_gpt`` in PyTorch, modules registered in the same order."""
    nn = torch.nn

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(11, 6), nn.Embedding(9, 6)
            self.norm1, self.attention = nn.LayerNorm(6), nn.MultiheadAttention(6, 2, batch_first=True)
            self.norm2, self.up, self.down = nn.LayerNorm(6), nn.Linear(6, 12), nn.Linear(12, 6)
            self.norm3, self.head = nn.LayerNorm(6), nn.Linear(6, 11)

        def forward(self, ids):
            length = ids.shape[1]
            h = self.tokens(ids) + self.positions.weight[:length]
            a = self.norm1(h)
            blocked = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
            h = h + self.attention(a, a, a, attn_mask=blocked, need_weights=False)[0]
            h = h + self.down(nn.functional.gelu(self.up(self.norm2(h)), approximate="tanh"))
            return torch.softmax(self.head(self.norm3(h)), dim=-1)

    torch.manual_seed(0)
    return TorchGPT().double().eval()


def _toolkit_gpt():
    return Sequential([Embedding(11, 6, input_length=7), PositionEmbedding(9),
                       Residual([LayerNorm(), MultiHeadAttention(2, 3, causal=True)]),
                       Residual([LayerNorm(), Dense(12, activation="gelu"), Dense(6)]),
                       LayerNorm(), Dense(11, activation="softmax")], dtype="float64")


def test_torch_transformer_weights_in_and_out(backend, rng):
    torch = pytest.importorskip("torch")
    net, model = _torch_gpt(torch), _toolkit_gpt()
    with torch.no_grad():  # a non-zero key bias: the softmax cancels it, so the outputs still agree
        net.attention.in_proj_bias.normal_()
    x = rng.integers(0, 11, size=(4, 7))
    toolkit.load_torch_weights(model, net)
    expected = net(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)
    model.set_weights({name: value * 1.25 for name, value in model.get_weights().items()})
    toolkit.store_torch_weights(model, net)
    expected = net(torch.tensor(x)).detach().numpy()
    assert relative_error(to_numpy(backend, model.predict(x)), expected) <= 1e-12


def test_torch_modules_that_cannot_be_mapped_are_named(numpy_backend):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = _toolkit_gpt()
    before = model.get_weights()
    wrong_heads = _torch_gpt(torch)
    wrong_heads.attention = nn.MultiheadAttention(6, 3, batch_first=True).double()
    with pytest.raises(ShapeError, match=r"layer 2.1, MultiHeadAttention\(2, 3, causal=True\), does not match .*"
                                         r"\(embed_dim, num_heads, head_dim\) = \(6, 3, 2\) vs \(6, 2, 3\)"):
        toolkit.load_torch_weights(model, wrong_heads)
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(4, .*\) with weights, which the toolkit cannot map; "
                                         r"load_torch_weights maps Linear, Conv2d, Embedding"):
        toolkit.load_torch_weights(Sequential([Dense(4, input_dim=3)]), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])
