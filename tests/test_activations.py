"""Activations: forward values against hand-computed NumPy, backward against finite differences."""

import math

import numpy as np
import pytest

from tests.conftest import to_numpy
from tests.helpers import numeric_gradient, relative_error
from toolkit.ops.activations import ACTIVATIONS, LEAKY_RELU_SLOPE

Z = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0], [1.0, -1.0, 2.0, -3.0, 0.25]])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


EXPECTED = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, LEAKY_RELU_SLOPE * z),
    "softmax": _softmax,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_forward_matches_formula(backend, name):
    activation = ACTIVATIONS[name]
    a = activation.forward(backend.asarray(Z), backend.xp)
    assert relative_error(to_numpy(backend, a), EXPECTED[name](Z)) < 1e-15


def test_hand_worked_values(backend):
    z = backend.asarray(np.array([[0.0, math.log(3.0)]]))
    sigmoid = to_numpy(backend, ACTIVATIONS["sigmoid"].forward(z, backend.xp))
    np.testing.assert_allclose(sigmoid, [[0.5, 0.75]], rtol=1e-15)
    softmax = to_numpy(backend, ACTIVATIONS["softmax"].forward(z, backend.xp))
    np.testing.assert_allclose(softmax, [[0.25, 0.75]], rtol=1e-15)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_backward_matches_finite_differences(backend, name):
    activation, xp = ACTIVATIONS[name], backend.xp
    # Keep away from the ReLU kinks, where the derivative is not defined.
    z = Z + 0.013
    upstream = np.linspace(-1.0, 1.5, Z.size).reshape(Z.shape)

    def objective(z_host):
        return float(np.sum(upstream * to_numpy(backend, activation.forward(backend.asarray(z_host), xp))))

    zb = backend.asarray(z)
    a = activation.forward(zb, xp)
    analytic = to_numpy(backend, activation.backward(backend.asarray(upstream), zb, a, xp))
    assert relative_error(analytic, numeric_gradient(objective, z)) < 1e-8


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softmax"])
def test_saturating_activations_do_not_overflow(backend, name):
    z = backend.asarray(np.array([[-1000.0, 1000.0, 0.0]]))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = to_numpy(backend, ACTIVATIONS[name].forward(z, backend.xp))
    assert np.all(np.isfinite(a))
    if name == "sigmoid":
        np.testing.assert_array_equal(a, [[0.0, 1.0, 0.5]])
    if name == "softmax":
        np.testing.assert_array_equal(a, [[0.0, 1.0, 0.0]])


def test_relu_derivative_at_zero_is_zero(backend):
    z = backend.asarray(np.array([[0.0, -0.0, 1e-300]]))
    da = backend.asarray(np.ones((1, 3)))
    dz = ACTIVATIONS["relu"].backward(da, z, ACTIVATIONS["relu"].forward(z, backend.xp), backend.xp)
    np.testing.assert_array_equal(to_numpy(backend, dz), [[0.0, 0.0, 1.0]])
