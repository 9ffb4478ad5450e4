"""Losses: values against hand-worked cases, gradients against finite differences, stability."""

import math

import numpy as np
import pytest

from tests.conftest import to_numpy
from tests.helpers import numeric_gradient, relative_error
from toolkit import BinaryCrossEntropy, CategoricalCrossEntropy, MeanSquaredError
from toolkit.errors import InputError, ShapeError
from toolkit.ops import losses as ops


def test_mse_hand_worked(backend):
    # ((1 − 0)² + (2 − 4)²) / 2 = 2.5
    value = MeanSquaredError()(backend.asarray(np.array([[1.0], [2.0]])), np.array([[0.0], [4.0]]))
    assert float(value) == pytest.approx(2.5, rel=1e-15)


def test_bce_hand_worked(backend):
    # −(log 0.8 + log(1 − 0.4)) / 2
    value = BinaryCrossEntropy()(backend.asarray(np.array([[0.8], [0.4]])), np.array([[1.0], [0.0]]))
    assert float(value) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2, rel=1e-12)


def test_bce_from_logits_equals_probability_form(backend):
    z = np.array([[-2.0], [0.3], [4.0]])
    y = np.array([[0.0], [1.0], [1.0]])
    from_logits = float(BinaryCrossEntropy(from_logits=True)(backend.asarray(z), y))
    on_probabilities = float(BinaryCrossEntropy()(backend.asarray(1 / (1 + np.exp(-z))), y))
    assert from_logits == pytest.approx(on_probabilities, rel=1e-9)


def test_softmax_ce_hand_worked_labels_and_one_hot(backend):
    # logits [0, ln 3]: softmax = [1/4, 3/4]; label 1 → −ln(3/4)
    z = backend.asarray(np.array([[0.0, math.log(3.0)]]))
    loss = CategoricalCrossEntropy(from_logits=True)
    assert float(loss(z, np.array([1]))) == pytest.approx(-math.log(0.75), rel=1e-14)
    assert float(loss(z, np.array([[0.0, 1.0]]))) == pytest.approx(-math.log(0.75), rel=1e-14)


def test_large_logits_stay_finite(backend):
    z = backend.asarray(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]]))
    value = float(CategoricalCrossEntropy(from_logits=True)(z, np.array([0, 0])))
    assert value == pytest.approx(1000.0, rel=1e-12)  # row 1 is right (0), row 2 wrong by 2000 → mean 1000
    bce = float(BinaryCrossEntropy(from_logits=True)(backend.asarray(np.array([[1000.0], [-1000.0]])),
                                                     np.array([[0.0], [1.0]])))
    assert bce == pytest.approx(1000.0, rel=1e-12)


CASES = {
    "mse": (ops.mse_value, ops.mse_grad, lambda r: r.normal(size=(4, 3)), lambda r: r.normal(size=(4, 3))),
    "bce": (ops.bce_value, ops.bce_grad, lambda r: r.uniform(0.05, 0.95, size=(5, 1)),
            lambda r: r.integers(0, 2, size=(5, 1)).astype(float)),
    "bce_logits": (ops.bce_logits_value, ops.bce_logits_grad, lambda r: r.normal(size=(5, 2)) * 3,
                   lambda r: r.uniform(0, 1, size=(5, 2))),
    "softmax_ce_logits": (ops.softmax_ce_logits_value, ops.softmax_ce_logits_grad,
                          lambda r: r.normal(size=(4, 3)) * 2, lambda r: np.eye(3)[r.integers(0, 3, size=4)]),
    "categorical_ce": (ops.categorical_ce_value, ops.categorical_ce_grad,
                       lambda r: r.dirichlet(np.ones(3), size=4), lambda r: np.eye(3)[r.integers(0, 3, size=4)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_finite_differences(backend, rng, case):
    value, grad, make_pred, make_y = CASES[case]
    pred, y = make_pred(rng), make_y(rng)
    yb, xp = backend.asarray(y), backend.xp
    analytic = to_numpy(backend, grad(backend.asarray(pred), yb, xp))
    numeric = numeric_gradient(lambda p: float(value(backend.asarray(p), yb, xp)), pred)
    assert relative_error(analytic, numeric) < 1e-7


def test_targets_are_never_broadcast(backend):
    pred = backend.asarray(np.zeros((4, 1)))
    with pytest.raises(ShapeError, match=r"targets have shape \(4, 2\).*predictions have shape \(4, 1\)"):
        MeanSquaredError()(pred, np.zeros((4, 2)))
    # (N,) against (N, 1) is reshaped explicitly, not broadcast to (N, N).
    assert float(MeanSquaredError()(pred, np.ones(4))) == pytest.approx(1.0)


def test_label_errors(backend):
    z = backend.asarray(np.zeros((3, 4)))
    loss = CategoricalCrossEntropy(from_logits=True)
    with pytest.raises(InputError, match=r"class labels must lie in \[0, 4\); got labels from 0 to 4"):
        loss(z, np.array([0, 4, 1]))
    with pytest.raises(InputError, match="must be integer class labels"):
        loss(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(InputError, match=r"targets must lie in \[0, 1\]"):
        BinaryCrossEntropy()(backend.asarray(np.full((2, 1), 0.5)), np.array([[0.0], [2.0]]))
