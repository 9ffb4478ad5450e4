"""Dropout, BatchNorm, LayerNorm, Residual and training/inference modes on every backend: forward
values worked out here with NumPy, backward against float64 finite differences, every backend
against numpy, the dropout generator against a plain-Python transcription of its definition,
running statistics against a hand computation, checkpoints that resume exactly, bad inputs."""

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from tests.helpers import TOLERANCE, relative_error
from toolkit import (
    GRU,
    LSTM,
    Activation,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    InputError,
    LayerNorm,
    MaxPool1D,
    MaxPool2D,
    MultiHeadAttention,
    PositionEmbedding,
    Residual,
    Sequential,
    ShapeError,
    gradcheck,
)
from toolkit.ops import random

# -- the dropout generator ---------------------------------------------------------------------


def python_mix(h):
    """``toolkit.ops.random.mix`` written out again from its docstring: three xor-shift-multiply
    rounds modulo 2³², then a final xor-shift."""
    for multiplier in (0x7FEB352D, 0x6C8E9CF5, 0x5BD1E995):
        h ^= h >> 16
        h = (h * multiplier) % 2**32
    return h ^ (h >> 15)


def python_mask(seed, step, stream, shape, first_row, rate):
    key = python_mix(python_mix(seed % 2**32) ^ python_mix(step % 2**32) ^ (seed >> 32) % 2**32)
    layer = python_mix(key ^ (stream * 0x1E3779B9) % 2**32)
    per_row = int(np.prod(shape[1:]))
    flat = []
    for i in range(int(np.prod(shape))):
        bits = python_mix((python_mix((first_row * per_row + i) ^ layer) + layer) % 2**32)
        flat.append(bits >= int(rate * 2**32))
    return np.array(flat).reshape(shape)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dropout_masks_are_the_definition_and_the_same_on_every_backend(backend, dtype):
    shape, rate = (6, 3, 2), 0.4
    key = random.step_key(11, 5)
    mask = to_numpy(backend, backend.dropout_mask(key, 77, shape, 3, rate, backend.dtype(dtype)))
    kept = python_mask(11, 5, 77, shape, 3, rate)
    scale = np.asarray(1 / (1 - rate), dtype=dtype)
    np.testing.assert_array_equal(mask, np.where(kept, scale, 0).astype(dtype))
    with toolkit.use_backend("numpy") as numpy_backend:  # and bit for bit what numpy draws
        np.testing.assert_array_equal(mask, numpy_backend.dropout_mask(key, 77, shape, 3, rate, numpy_backend.dtype(dtype)))


def test_each_process_draws_its_rows_of_the_one_process_mask(backend):
    key, shape, dtype = random.step_key(3, 9), (10, 4), backend.dtype("float64")
    whole = to_numpy(backend, backend.dropout_mask(key, 1, shape, 0, 0.5, dtype))
    first = to_numpy(backend, backend.dropout_mask(key, 1, (4, 4), 0, 0.5, dtype))
    second = to_numpy(backend, backend.dropout_mask(key, 1, (6, 4), 4, 0.5, dtype))
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)


def test_dropout_bits_look_random(numpy_backend):
    """Kept fraction, independence of neighbours, of steps and of layers, over 200 000 draws."""
    n, rate = 200_000, 0.3
    draw = [to_numpy(numpy_backend, numpy_backend.dropout_mask(random.step_key(0, step), stream, (n,), 0, rate,
                                                                numpy_backend.xp.float64)) > 0
            for step, stream in ((0, 0), (1, 0), (0, 1))]
    p = 1 - rate
    spread = 5 * np.sqrt(p * (1 - p) / n)  # five standard deviations
    assert abs(draw[0].mean() - p) < spread
    agree = p * p + (1 - p) * (1 - p)  # chance that two independent draws agree
    for a, b in ((draw[0][:-1], draw[0][1:]), (draw[0], draw[1]), (draw[0], draw[2])):
        assert abs(np.mean(a == b) - agree) < 5 * np.sqrt(agree * (1 - agree) / n)


def test_dropout_is_inverted_in_training_and_the_identity_at_inference(backend):
    model = Sequential([Dropout(0.5)], input_dim=1000, dtype="float64", seed=4)
    x = np.ones((3, 1000))
    np.testing.assert_array_equal(to_numpy(backend, model.predict(x)), x)
    trained = to_numpy(backend, model.forward(model.as_input(x), training=True))
    assert set(np.unique(trained)) == {0.0, 2.0}
    assert 0.45 < np.mean(trained == 2.0) < 0.55
    again = to_numpy(backend, model.forward(model.as_input(x), training=True))
    assert model.random_step == 2 and not np.array_equal(trained, again)  # a new mask per training pass


# -- the pass context --------------------------------------------------------------------------


def test_pass_context_of_one_process_and_of_a_data_parallel_rank():
    """One process: no reduction, the batch is the global batch. A rank: sums go through its
    all-reduce and the global row count is the one it was given."""
    import dataclasses

    from toolkit.context import INFERENCE, PassContext

    assert not INFERENCE.training and INFERENCE.first_row == 0 and INFERENCE.share == 1.0
    single = PassContext(training=True, random_key=7)
    values = np.array([1.0, 2.0])
    assert single.sum_over_processes(values) is values and single.rows(5) == 5
    calls = []
    rank = PassContext(training=True, first_row=4, global_rows=9, share=5 / 9,
                       all_reduce=lambda x: calls.append(x) or x * 2)  # as if 2 ranks held the same sums
    np.testing.assert_array_equal(rank.sum_over_processes(values), [2.0, 4.0])
    assert len(calls) == 1 and rank.rows(5) == 9
    with pytest.raises(dataclasses.FrozenInstanceError):
        single.training = False


# -- normalisation -------------------------------------------------------------------------------


def test_batchnorm_training_and_inference_values(backend, rng):
    """(N, H, W, C) images: statistics over N, H and W per channel; running ones after 3 steps."""
    model = Sequential([BatchNorm(momentum=0.25, eps=1e-3)], input_shape=(2, 3, 4), dtype="float64")
    model.compile(loss="mse")
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    model.set_weights({"0.gamma": gamma, "0.beta": beta})
    running_mean, running_var = np.zeros(4), np.ones(4)
    for step in range(3):
        x = rng.normal(size=(5, 2, 3, 4)) * (step + 1) + step
        out = to_numpy(backend, model.forward(model.as_input(x), training=True))
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, over 30 values each
        np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-3) + beta, rtol=1e-12, atol=1e-12)
        running_mean = 0.75 * running_mean + 0.25 * mean
        running_var = 0.75 * running_var + 0.25 * var * 30 / 29  # unbiased, as PyTorch keeps it
    state = model.get_state()
    np.testing.assert_allclose(state["0.running_mean"], running_mean, rtol=1e-12)
    np.testing.assert_allclose(state["0.running_var"], running_var, rtol=1e-12)
    x = rng.normal(size=(2, 2, 3, 4))
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)),
                               gamma * (x - running_mean) / np.sqrt(running_var + 1e-3) + beta, rtol=1e-12, atol=1e-12)


def test_batchnorm_running_statistics_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    reference = torch.nn.BatchNorm1d(3, momentum=0.1, eps=1e-5, dtype=torch.float64)
    model = Sequential([BatchNorm()], input_dim=3, dtype="float64", backend="numpy")
    for _ in range(4):
        x = rng.normal(size=(7, 3)) * 2 + 1
        expected = reference(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(to_numpy(model.backend, model.forward(model.as_input(x), training=True)), expected,
                                   rtol=1e-12, atol=1e-12)
    state = model.get_state()
    np.testing.assert_allclose(state["0.running_mean"], reference.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(state["0.running_var"], reference.running_var.numpy(), rtol=1e-12)


def test_layernorm_values(backend, rng):
    model = Sequential([LayerNorm(eps=1e-4)], input_shape=(3, 5), dtype="float64")
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    model.set_weights({"0.gamma": gamma, "0.beta": beta})
    x = rng.normal(size=(4, 3, 5)) * 3
    mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    expected = gamma * (x - mean) / np.sqrt(var + 1e-4) + beta
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)
    training = to_numpy(backend, model.forward(model.as_input(x), training=True))
    np.testing.assert_allclose(training, expected, rtol=1e-12, atol=1e-12)  # no batch dependence


def test_residual_adds_the_input(backend, rng):
    model = Sequential([Residual([Dense(4, activation="tanh"), Dense(3)])], input_dim=3, dtype="float64", seed=2)
    w = model.get_weights()
    x = rng.normal(size=(5, 3))
    expected = x + np.tanh(x @ w["0.0.W"] + w["0.0.b"]) @ w["0.1.W"] + w["0.1.b"]
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)
    assert [name for name, _ in model.named_parameters()] == ["0.0.W", "0.0.b", "0.1.W", "0.1.b"]


# -- gradients -----------------------------------------------------------------------------------

def deep_mlp(dtype="float64", seed=3):
    model = Sequential([
        Dense(8, activation="gelu", input_dim=5), BatchNorm(), Dropout(0.25),
        Residual([Dense(8, activation="silu"), LayerNorm(), Dense(8, activation="elu"), Dropout(0.5)]),
        Residual([BatchNorm(momentum=0.3), Activation("softplus"), Residual([Dense(8, activation="tanh")])]),
        Dense(3, activation="softmax")], dtype=dtype, seed=seed)
    model.compile(loss="categorical_crossentropy", optimizer=toolkit.Adam(lr=0.01))
    return model


def deep_cnn(dtype="float64", seed=3):
    model = Sequential([
        Conv2D(4, 3, padding="same", activation="tanh", input_shape=(6, 6, 2)), BatchNorm(), Activation("relu"),
        Dropout(0.2),
        Residual([Conv2D(4, 3, padding="same", activation="gelu"), BatchNorm(), LayerNorm()]), MaxPool2D(),
        Flatten(), Dropout(0.3), Dense(2, activation="sigmoid")], dtype=dtype, seed=seed)
    model.compile(loss="binary_crossentropy", optimizer="sgd")
    return model


def deep_sequence(dtype="float64", seed=3):
    """A two-block pre-LayerNorm transformer: token and position embeddings, causal attention with
    dropout on its weights, a GELU feed-forward block with dropout, a softmax over the vocabulary."""
    model = Sequential([
        Embedding(VOCAB, 8, input_length=5, embeddings_initializer="uniform"), PositionEmbedding(7),
        Residual([LayerNorm(), MultiHeadAttention(2, 3, causal=True, dropout=0.2)]),
        Residual([LayerNorm(), Dense(12, activation="gelu"), Dense(8), Dropout(0.25)]),
        Residual([LayerNorm(), MultiHeadAttention(3, 2)]),
        LayerNorm(), Dense(VOCAB, activation="softmax")], dtype=dtype, seed=seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=toolkit.Adam(lr=0.01))
    return model


def deep_recurrent(dtype="float64", seed=3):
    """1-D convolutions (one dilated) and pooling, then stacked recurrent layers (an LSTM's whole sequence
    into a GRU), dropout between, LayerNorm after."""
    model = Sequential([Conv1D(4, 3, padding="same", activation="tanh", input_shape=(6, 3)), MaxPool1D(2),
                        Conv1D(4, 2, padding="same", dilation=2), LSTM(5, return_sequences=True), Dropout(0.2),
                        GRU(4), LayerNorm(), Dense(3, activation="softmax")], dtype=dtype, seed=seed)
    model.compile(loss="categorical_crossentropy", optimizer=toolkit.Adam(lr=0.01))
    return model


VOCAB = 7
DEEP = {"mlp": (deep_mlp, (12, 5), 3), "cnn": (deep_cnn, (7, 6, 6, 2), 2), "seq": (deep_sequence, (6, 5), VOCAB),
        "rnn": (deep_recurrent, (7, 6, 3), 3)}


def _problem(kind, rng):
    make, shape, outputs = DEEP[kind]
    if kind == "seq":  # token ids in, the next ids out (labels per position)
        return make, rng.integers(0, VOCAB, size=shape), rng.integers(0, VOCAB, size=shape)
    x = rng.normal(size=shape)
    y = rng.integers(0, 3, size=shape[0]) if outputs == 3 else rng.integers(0, 2, size=(shape[0], 2)).astype(float)
    return make, x, y


@pytest.mark.parametrize("kind", sorted(DEEP))
def test_gradients_against_finite_differences(backend, rng, kind):
    if kind in ("seq", "rnn") and backend.name != "numpy":
        # Hundreds of parameters, two passes each: on numpy only; test_every_backend_trains_as_numpy_does
        # then carries the check to every other backend (gradients equal numpy's to 1e-10).
        pytest.skip("the sequence models' finite differences run on numpy; the other backends are compared to numpy")
    make, x, y = _problem(kind, rng)
    model = make()
    model.random_step = 4  # a step where both dropout layers drop something
    errors = gradcheck(model, x, y)
    assert max(errors.values()) < 1e-7, errors
    assert model.random_step == 4  # gradcheck changed nothing
    assert all(np.all(value == 1.0) for name, value in model.get_state().items() if name.endswith("running_var"))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(DEEP))
def test_every_backend_trains_as_numpy_does(backend, rng, kind, dtype):
    """Three fit steps (masks, batch statistics, running statistics, Adam), then the gradients."""
    if backend.name == "jax" and kind in ("seq", "rnn") and dtype == "float32":
        pytest.skip("JAX compiles each model once per dtype; float64 carries the check for the sequence models")
    make, x, y = _problem(kind, rng)

    def run(spec):
        with toolkit.use_backend(spec) as active:
            model = make(dtype)
            model.fit(x, y, epochs=1, batch_size=4, verbose=0)
            xb = model.as_input(x)
            loss = float(model.compute_gradients(xb, model.prepare_targets(y, xb.shape[0])))
            grads = {name: to_numpy(active, g) for name, g in model.named_gradients()}
            return loss, grads, model.get_state(), model.get_weights(), model.random_step

    loss, grads, state, weights, steps = run(backend)
    ref_loss, ref_grads, ref_state, ref_weights, ref_steps = run("numpy")
    assert steps == ref_steps == -(-len(x) // 4) + 1
    assert abs(loss - ref_loss) <= TOLERANCE[dtype] * max(1.0, abs(ref_loss))
    for name in ref_grads:
        assert relative_error(grads[name], ref_grads[name]) <= TOLERANCE[dtype], name
    for name in ref_state:
        assert relative_error(state[name], ref_state[name]) <= TOLERANCE[dtype], name
    for name in ref_weights:
        assert relative_error(weights[name], ref_weights[name]) <= TOLERANCE[dtype], name


def test_fit_trains_with_dropout_and_predict_is_deterministic(backend, rng):
    model = deep_mlp()
    x, y = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert model.random_step == 10
    np.testing.assert_array_equal(to_numpy(backend, model.predict(x)), to_numpy(backend, model.predict(x)))
    evaluated = model.evaluate(x, y)["loss"]  # inference mode: no dropout, running statistics
    assert evaluated != history["loss"][-1]


# -- checkpoints ---------------------------------------------------------------------------------


def test_a_resumed_run_equals_the_uninterrupted_one(backend, rng, tmp_path):
    """Dropout masks continue from the saved step and BatchNorm from the saved statistics."""
    x, y = rng.normal(size=(24, 5)), rng.integers(0, 3, size=24)
    whole = deep_mlp()
    whole.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    first = deep_mlp()
    first.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    toolkit.save(first, tmp_path / "half.safetensors")
    resumed = toolkit.load(tmp_path / "half.safetensors")
    assert resumed.random_step == 3
    resumed.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for name, value in whole.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[name], value)
    for name, value in whole.get_state().items():
        np.testing.assert_array_equal(resumed.get_state()[name], value)


def test_checkpoints_load_bit_identically_on_every_backend(backend, rng, tmp_path):
    with toolkit.use_backend("numpy"):
        model = deep_cnn()
        model.fit(rng.normal(size=(8, 6, 6, 2)), rng.integers(0, 2, size=(8, 2)).astype(float), epochs=1,
                  batch_size=4, verbose=0)
        toolkit.save(model, tmp_path / "cnn.safetensors")
    loaded = toolkit.load(tmp_path / "cnn.safetensors")
    assert loaded.backend.name == backend.name
    for saved, restored in ((model.get_weights(), loaded.get_weights()), (model.get_state(), loaded.get_state())):
        assert saved.keys() == restored.keys()
        for name in saved:
            np.testing.assert_array_equal(restored[name], saved[name])
    assert (loaded.random_seed, loaded.random_step) == (model.random_seed, model.random_step)


# -- bad inputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan"), "half"])
def test_dropout_rate_outside_zero_one(rate):
    with pytest.raises(InputError, match=r"rate must lie in \[0, 1\)"):
        Dropout(rate)


def test_batchnorm_on_a_batch_of_one_in_training_is_refused_and_changes_nothing(backend):
    model = Sequential([Dense(3, input_dim=2), BatchNorm(), Dropout(0.5), Dense(1)], dtype="float64")
    model.compile(loss="mse", optimizer="adam")
    before = model.get_weights(), model.get_state(), model.random_step
    with pytest.raises(InputError, match="more than one value per feature"):
        model.fit(np.ones((1, 2)), np.ones((1, 1)), verbose=0)
    with pytest.raises(InputError, match="more than one value per feature"):
        model.train_step(np.ones((1, 2)), np.ones((1, 1)))
    after = model.get_weights(), model.get_state(), model.random_step
    for old, new in zip(before[:2], after[:2], strict=True):
        for name in old:
            np.testing.assert_array_equal(new[name], old[name])
    assert after[2] == before[2]
    assert model.predict(np.ones((1, 2))).shape == (1, 1)  # inference uses the running statistics: fine


def test_residual_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeError, match=r"\(4,\) to \(3,\)"):
        Sequential([Residual([Dense(3)])], input_dim=4)


@pytest.mark.parametrize("make", [lambda: BatchNorm(momentum=1.5), lambda: BatchNorm(eps=0.0), lambda: LayerNorm(eps=-1.0),
                                  lambda: Residual([])])
def test_bad_settings(make):
    with pytest.raises(InputError):
        make()


def test_empty_batchnorm_state_names_are_checked_on_load(tmp_path):
    model = Sequential([Dense(3, input_dim=2), BatchNorm()], backend="numpy")
    with pytest.raises(ShapeError, match="running_mean"):
        model.set_state({"1.running_mean": np.zeros(3)})


def test_data_parallel_refuses_a_last_batch_too_small_for_batchnorm_on_every_rank():
    from toolkit.distributed import DataParallel

    class TwoRanks:
        rank, size = 0, 2

    parallel = DataParallel(TwoRanks())
    with_batchnorm = Sequential([Dense(3, input_dim=2), BatchNorm()], backend="numpy")
    with pytest.raises(InputError, match="the last batch has 1 row"):
        parallel.check_batches(with_batchnorm, 37, 6)
    parallel.check_batches(with_batchnorm, 38, 6)  # 2 rows in the last batch: one per rank
    parallel.check_batches(Sequential([Dense(3, input_dim=2), Dropout(0.5)], backend="numpy"), 37, 6)


def test_load_weights_ignores_initializers_inside_residual_blocks(tmp_path):
    first = Sequential([Residual([Dense(2, kernel_initializer="uniform")])], input_dim=2, backend="numpy")
    second = Sequential([Residual([Dense(2)])], input_dim=2, backend="numpy", seed=9)
    toolkit.save(first, tmp_path / "r.safetensors")
    toolkit.load_weights(second, tmp_path / "r.safetensors")
    np.testing.assert_array_equal(second.get_weights()["0.0.W"], first.get_weights()["0.0.W"])
