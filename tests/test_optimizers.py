"""Optimizers and schedules against trajectories computed independently here, in float64 NumPy,
from the update rules as PyTorch documents them."""

import math

import numpy as np
import pytest

from tests.conftest import to_numpy
from toolkit import SGD, Adam, AdamW, InputError, RMSProp
from toolkit.schedules import CosineDecay, ExponentialDecay, StepDecay, Warmup

STEPS = 6


def gradient_of(theta):
    """∇ of a fixed non-quadratic objective, so every step sees a new gradient."""
    return np.sin(theta) + 0.3 * theta**3


def reference_trajectory(rule, theta, **h):
    theta = theta.copy()
    state1, state2 = np.zeros_like(theta), np.zeros_like(theta)
    for t in range(1, STEPS + 1):
        g = gradient_of(theta)
        if rule == "sgd":
            g = g + h.get("weight_decay", 0.0) * theta
            if h.get("momentum", 0.0):
                state1 = g.copy() if t == 1 else h["momentum"] * state1 + (1 - h.get("dampening", 0.0)) * g
                g = g + h["momentum"] * state1 if h.get("nesterov") else state1
            theta = theta - h["lr"] * g
        elif rule in ("adam", "adamw"):
            if rule == "adamw":
                theta = theta * (1 - h["lr"] * h["weight_decay"])
            else:
                g = g + h.get("weight_decay", 0.0) * theta
            state1 = h["beta1"] * state1 + (1 - h["beta1"]) * g
            state2 = h["beta2"] * state2 + (1 - h["beta2"]) * g * g
            m_hat, v_hat = state1 / (1 - h["beta1"] ** t), state2 / (1 - h["beta2"] ** t)
            theta = theta - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])
        elif rule == "rmsprop":
            g = g + h.get("weight_decay", 0.0) * theta
            state1 = h["alpha"] * state1 + (1 - h["alpha"]) * g * g
            theta = theta - h["lr"] * g / (np.sqrt(state1) + h["eps"])
    return theta


CASES = {
    "sgd": (lambda: SGD(lr=0.1), "sgd", {"lr": 0.1}),
    "sgd-momentum": (lambda: SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01), "sgd",
                     {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    "sgd-nesterov": (lambda: SGD(lr=0.05, momentum=0.8, nesterov=True), "sgd",
                     {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    "sgd-decay-only": (lambda: SGD(lr=0.1, weight_decay=0.05), "sgd", {"lr": 0.1, "weight_decay": 0.05}),
    "adam": (lambda: Adam(lr=0.01, weight_decay=0.02), "adam",
             {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.02}),
    "adamw": (lambda: AdamW(lr=0.01, beta1=0.8, beta2=0.99, weight_decay=0.1), "adamw",
              {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1}),
    "rmsprop": (lambda: RMSProp(lr=0.01, alpha=0.9, weight_decay=0.01), "rmsprop",
                {"lr": 0.01, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.01}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_matches_reference(backend, case):
    make, rule, hyper = CASES[case]
    theta0 = np.linspace(-1.5, 2.0, 11)
    optimizer = make()
    params = backend.asarray(theta0.copy(), dtype=backend.dtype("float64"))
    optimizer.bind(params, backend)
    for _ in range(STEPS):
        grads = backend.asarray(gradient_of(to_numpy(backend, params)), dtype=backend.dtype("float64"))
        params = optimizer.step(params, grads)  # the same array on mutable backends, a new one on JAX
    expected = reference_trajectory(rule, theta0, **hyper)
    np.testing.assert_allclose(to_numpy(backend, params), expected, rtol=1e-10, atol=1e-12)
    assert optimizer.iterations == STEPS


def test_state_dict_round_trip_continues_the_same_trajectory(numpy_backend):
    theta0 = np.linspace(-1, 1, 5)
    a, b = Adam(lr=0.05), Adam(lr=0.05)
    pa, pb = theta0.copy(), theta0.copy()
    a.bind(pa, numpy_backend)
    for _ in range(3):
        a.step(pa, gradient_of(pa))
    b.load_state_dict({**a.state_dict(), "state": {k: v.copy() for k, v in a.state.items()}})
    b.bind(pb, numpy_backend)
    pb[...] = pa
    for _ in range(3):
        a.step(pa, gradient_of(pa))
        b.step(pb, gradient_of(pb))
    np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), "0.1"])
def test_learning_rate_must_be_positive(bad):
    with pytest.raises(InputError, match="learning rate must be"):
        SGD(lr=bad)


def test_invalid_hyper_parameters():
    with pytest.raises(InputError, match="Nesterov momentum needs momentum > 0"):
        SGD(lr=0.1, nesterov=True)
    with pytest.raises(InputError, match=r"beta2 must lie in \[0, 1\)"):
        Adam(beta2=1.0)


def test_schedules_follow_pytorch_formulas():
    assert [StepDecay(0.1, step_size=2, gamma=0.5)(e) for e in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    assert ExponentialDecay(0.2, gamma=0.9)(3) == pytest.approx(0.2 * 0.9**3)
    cosine = CosineDecay(0.1, total_epochs=10, min_lr=0.01)
    assert cosine(0) == pytest.approx(0.1) and cosine(10) == pytest.approx(0.01)
    assert cosine(5) == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi / 2)) / 2)
    warm = Warmup(StepDecay(0.1, step_size=100), warmup_epochs=4)
    assert [warm(e) for e in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_keras_spelling_learning_rate():
    assert SGD(learning_rate=0.2).lr == 0.2 and Adam(learning_rate=3e-4).base_lr == 3e-4
    assert AdamW().lr == 1e-3 and RMSProp().lr == 1e-2  # defaults unchanged
    with pytest.raises(InputError, match="give lr or learning_rate, not both"):
        Adam(lr=1e-3, learning_rate=1e-3)
