"""Backpropagation through whole models: a hand-worked textbook case, gradcheck, and every
backend against the NumPy backend (float64 ≤ 1e-10, float32 ≤ 1e-4)."""

import numpy as np
import pytest

from tests.conftest import to_numpy
from tests.helpers import TOLERANCE, build_mlp, gradients_on, relative_error
from toolkit import Activation, Dense, Sequential, gradcheck, use_backend

ARCHITECTURES = {
    "relu-softmax-ce": ([5, 7, 6, 4], ["relu", "relu", "softmax"], "categorical_crossentropy", "labels4"),
    "tanh-sigmoid-bce": ([5, 6, 1], ["tanh", "sigmoid"], "binary_crossentropy", "binary"),
    "sigmoid-leaky-mse": ([5, 6, 4, 3], ["sigmoid", "leaky_relu", None], "mse", "real3"),
    "logits-ce": ([5, 8, 4], ["relu", None], "softmax_cross_entropy", "onehot4"),
    "logits-bce": ([5, 3, 1], ["tanh", None], "bce_from_logits", "binary"),
    "softmax-mse": ([5, 4, 3], ["tanh", "softmax"], "mse", "real3"),
}


def make_data(kind, n, rng, scale=1.0):
    x = rng.normal(size=(n, 5)) * scale
    y = {
        "labels4": lambda: rng.integers(0, 4, size=n),
        "onehot4": lambda: np.eye(4)[rng.integers(0, 4, size=n)],
        "binary": lambda: rng.integers(0, 2, size=(n, 1)).astype(float),
        "real3": lambda: rng.normal(size=(n, 3)),
    }[kind]()
    return x, y


def test_textbook_one_hidden_layer_by_hand(backend):
    """The column-form formulas of the textbook, computed independently in NumPy."""
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0]])  # 3 samples, batch-first
    y = np.array([[1.0], [0.0], [1.0]])
    w1 = np.array([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]])  # (n_in, n_hidden): textbook W[1] is its transpose
    b1 = np.array([0.01, -0.02, 0.03])
    w2 = np.array([[0.7], [-0.8], [0.9]])
    b2 = np.array([0.05])
    model = Sequential([Dense(3, activation="tanh", input_dim=2), Dense(1, activation="sigmoid")], dtype="float64")
    model.compile(loss="binary_crossentropy")
    model.set_weights({"0.W": w1, "0.b": b1, "1.W": w2, "1.b": b2})

    # Textbook, one column per sample: Z[1] = W[1] X + b[1], A[1] = tanh, Z[2] = W[2] A[1] + b[2], ŷ = σ.
    X, Y, m = x.T, y.T, x.shape[0]
    Z1 = w1.T @ X + b1[:, None]
    A1 = np.tanh(Z1)
    Z2 = w2.T @ A1 + b2[:, None]
    A2 = 1 / (1 + np.exp(-Z2))
    J = -np.mean(Y * np.log(A2) + (1 - Y) * np.log(1 - A2))
    dZ2 = (A2 - Y) / m                      # δ[2] = ŷ − y (averaged over the batch)
    dW2, db2 = dZ2 @ A1.T, dZ2.sum(axis=1)
    dZ1 = (w2 @ dZ2) * (1 - A1**2)          # δ[1] = W[2]ᵀ δ[2] ∘ σ'(Z[1])
    dW1, db1 = dZ1 @ X.T, dZ1.sum(axis=1)

    loss = model.compute_gradients(model.as_input(x), model.prepare_targets(y, 3))
    grads = {name: to_numpy(backend, g) for name, g in model.named_gradients()}
    assert float(loss) == pytest.approx(J, rel=1e-12)
    assert relative_error(grads["1.W"], dW2.T) < 1e-12
    assert relative_error(grads["1.b"], db2) < 1e-12
    assert relative_error(grads["0.W"], dW1.T) < 1e-12
    assert relative_error(grads["0.b"], db1) < 1e-12
    assert relative_error(to_numpy(backend, model.predict(x)), A2.T) < 1e-14


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_gradcheck(backend, rng, arch):
    widths, activations, loss, kind = ARCHITECTURES[arch]
    x, y = make_data(kind, 6, rng)
    model = build_mlp(widths, activations, loss)
    errors = gradcheck(model, x, y)
    assert set(errors) == {f"{i}.{p}" for i in range(len(widths) - 1) for p in "Wb"}
    assert max(errors.values()) < 1e-7, errors


def test_gradcheck_with_activation_layer(backend, rng):
    model = Sequential([Dense(4, input_dim=5), Activation("tanh"), Dense(1, activation="sigmoid")], dtype="float64")
    model.compile(loss="binary_crossentropy")
    x, y = make_data("binary", 5, rng)
    assert max(gradcheck(model, x, y).values()) < 1e-7


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("case", ["batch8", "batch1", "zeros", "large"])
def test_backend_matches_numpy(backend, arch, dtype, case):
    widths, activations, loss, kind = ARCHITECTURES[arch]
    rng = np.random.default_rng(11)
    n = 1 if case == "batch1" else 8
    x, y = make_data(kind, n, rng, scale=30.0 if case == "large" else 1.0)
    if case == "zeros":
        x = np.zeros_like(x)
    ours = gradients_on(_spec(backend), widths, activations, loss, x, y, dtype=dtype)
    reference = gradients_on("numpy", widths, activations, loss, x, y, dtype=dtype)
    for name, value in reference.items():
        assert np.all(np.isfinite(ours[name])), name
        if np.max(np.abs(value)) == 0:
            assert np.max(np.abs(ours[name])) == 0, name
            continue
        assert relative_error(ours[name], value) <= TOLERANCE[dtype], name


def _spec(backend):
    """The ``NAME[:DEVICE]`` that recreates ``backend``."""
    if backend.name == "array_api_strict":
        return f"array_api_strict:{str(backend.device).split(chr(39))[1]}"
    return backend.name


def test_same_seed_same_initial_weights_everywhere(backend):
    ours = build_mlp([5, 7, 3], ["relu", "softmax"], "categorical_crossentropy", dtype="float32").get_weights()
    with use_backend("numpy"):
        reference = build_mlp([5, 7, 3], ["relu", "softmax"], "categorical_crossentropy", dtype="float32").get_weights()
    for name in reference:
        np.testing.assert_array_equal(ours[name], reference[name])
