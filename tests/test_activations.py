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
    # written out here from their definitions, independently of toolkit.ops.activations
    "gelu": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
    "silu": lambda z: z / (1 + np.exp(-z)),
    "elu": lambda z: np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1),
    "softplus": lambda z: np.log(1 + np.exp(z)),
}

# Values at ±1000 and 0 (and the derivative there): what each must give without overflowing.
SATURATED = {
    "sigmoid": ([0.0, 1.0, 0.5], [0.0, 0.0, 0.25]),
    "tanh": ([-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]),
    "softmax": ([0.0, 1.0, 0.0], None),
    "gelu": ([0.0, 1000.0, 0.0], [0.0, 1.0, 0.5]),
    "silu": ([0.0, 1000.0, 0.0], [0.0, 1.0, 0.5]),
    "elu": ([-1.0, 1000.0, 0.0], [0.0, 1.0, 1.0]),
    "softplus": ([0.0, 1000.0, math.log(2.0)], [0.0, 1.0, 0.5]),
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


@pytest.mark.parametrize("name", sorted(SATURATED))
def test_activations_are_safe_at_plus_minus_1000(backend, name):
    activation, xp = ACTIVATIONS[name], backend.xp
    z = backend.asarray(np.array([[-1000.0, 1000.0, 0.0]]))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = activation.forward(z, xp)
        dz = to_numpy(backend, activation.backward(backend.asarray(np.ones((1, 3))), z, a, xp))
    values, derivatives = SATURATED[name]
    np.testing.assert_allclose(to_numpy(backend, a), [values], rtol=1e-15, atol=1e-300)
    assert np.all(np.isfinite(dz))
    if derivatives is not None:
        np.testing.assert_allclose(dz, [derivatives], rtol=1e-15, atol=1e-300)


def test_relu_derivative_at_zero_is_zero(backend):
    z = backend.asarray(np.array([[0.0, -0.0, 1e-300]]))
    da = backend.asarray(np.ones((1, 3)))
    dz = ACTIVATIONS["relu"].backward(da, z, ACTIVATIONS["relu"].forward(z, backend.xp), backend.xp)
    np.testing.assert_array_equal(to_numpy(backend, dz), [[0.0, 0.0, 1.0]])
