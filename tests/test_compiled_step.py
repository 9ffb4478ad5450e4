"""Training steps leave on the model what the NumPy backend's step-by-step path leaves, and what is
written between steps is what the next step uses.

JAX compiles forward, backward and update into one program and keeps parameters, optimizer moments
and gradients per tensor between steps, making the model's flat buffers only when they are read
(``toolkit.deferred``): these tests read and write those buffers between steps, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from toolkit import SGD, Adam, AdamW, BatchNorm, Dense, Dropout, RMSProp, Sequential

RNG = np.random.default_rng(11)
X = RNG.normal(size=(8, 4))
LABELS = RNG.integers(0, 3, size=8)


def _model(optimizer=lambda: Adam(lr=0.05)) -> Sequential:
    model = Sequential([Dense(5, activation="tanh", input_dim=4), Dense(3, activation="softmax")], dtype="float64", seed=3)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer())
    return model


def _host(model: Sequential) -> dict[str, np.ndarray]:
    """Everything a step changes, read back in float64."""
    assert model.optimizer is not None
    return {"params": to_numpy(model.backend, model.flat_params), "grads": to_numpy(model.backend, model.flat_grads),
            **{name: to_numpy(model.backend, value) for name, value in model.optimizer.state.items()},
            "iterations": np.asarray(model.optimizer.iterations)}


def _run(spec: str, between=None, optimizer=lambda: Adam(lr=0.05)) -> dict[str, np.ndarray]:
    """Three steps on ``spec``; ``between(model)`` runs after the first."""
    with toolkit.use_backend(spec):
        model = _model(optimizer)
    for step in range(3):
        model.train_step(X, LABELS)
        if step == 0 and between is not None:
            between(model)
    return _host(model)


def _assert_same(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(found[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def _spec(backend) -> str:
    return backend.name if backend.name != "array_api_strict" else f"array_api_strict:{str(backend.device).split(chr(39))[1]}"


def _new_weights(model: Sequential) -> None:
    model.set_weights({name: value * 0.5 + 0.1 for name, value in model.get_weights().items()})


def _zeroed_moments(model: Sequential) -> None:
    state = model.optimizer.state
    state["m"] = model.backend.assign(state["m"], model.backend.zeros(tuple(state["m"].shape), state["m"].dtype))


def _read_everything(model: Sequential) -> None:
    model.get_weights()
    model.named_gradients()
    model.optimizer.state_dict()
    model.predict(X)


@pytest.mark.parametrize("between", [None, _new_weights, _zeroed_moments, _read_everything],
                         ids=["plain", "set_weights", "moments-written", "everything-read"])
def test_what_is_written_between_steps_is_what_the_next_step_uses(backend, between):
    found, expected = _run(_spec(backend), between), _run("numpy", between)
    _assert_same(found, expected)
    if between in (_new_weights, _zeroed_moments):  # the write changed the run: the test can tell
        assert not np.allclose(expected["params"], _run("numpy")["params"])


# Settings that are zero, not zero, and booleans both ways: a compiled step builds settings into its
# program (a zero one drops its term), so each kind is checked against the NumPy backend.
OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1),
    "momentum": lambda: SGD(lr=0.1, momentum=0.9, dampening=0.1),
    "nesterov-decay": lambda: SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam-l2": lambda: Adam(lr=0.05, weight_decay=0.02),
    "adamw": lambda: AdamW(lr=0.05, beta1=0.8, weight_decay=0.1),
    "rmsprop": lambda: RMSProp(lr=0.01, alpha=0.9),
    "rmsprop-decay": lambda: RMSProp(lr=0.01, alpha=0.9, weight_decay=0.01),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_rule_and_setting_steps_as_numpy_does(backend, name):
    _assert_same(_run(_spec(backend), optimizer=OPTIMIZERS[name]), _run("numpy", optimizer=OPTIMIZERS[name]))


def test_the_compiled_step_takes_its_own_results_back(backend):
    with toolkit.use_backend(_spec(backend)):
        model = _model()
    step = model._engine_for_training().step
    if step is None:
        pytest.skip(f"{backend.name} runs the pass and the update as separate calls (no compiled step)")
    splits = []
    split = step.split
    step.split = lambda flat: splits.append(flat.shape) or split(flat)
    model.train_step(X, LABELS)
    assert len(splits) == 3  # the first step: the parameters and the two moments from the flat buffers
    model.train_step(X, LABELS)
    model.get_weights()  # reading the parameters leaves them as they are: taken back as they were
    model.train_step(X, LABELS)
    assert len(splits) == 3
    model.optimizer.state_dict()  # whoever reads the moments may write them: split again
    model.train_step(X, LABELS)
    assert len(splits) == 5


def test_only_a_model_whose_buffers_wait_gets_the_reading_hook(backend):
    """A class with ``__getattr__`` makes every attribute read slower (10 → 32 ns): the models of
    backends that never defer keep their own class; a deferring one stays a ``Sequential``."""
    with toolkit.use_backend(_spec(backend)):
        model = _model()
    model.train_step(X, LABELS)
    deferring = model._engine_for_training().step is not None
    assert (type(model) is not Sequential) == deferring
    assert (type(model.optimizer) is not Adam) == deferring
    assert isinstance(model, Sequential) and type(model).__name__ == "Sequential"
    assert not hasattr(model, "no_such_attribute")


def test_gradients_read_after_a_step_with_dropout_and_batchnorm_are_that_steps(backend):
    """A compiled step returns no gradients: reading ``flat_grads`` makes them again from the step's
    inputs, which must include its dropout key and the layer state it started from."""
    def run(spec):
        with toolkit.use_backend(spec):
            model = Sequential([Dense(6, activation="relu", input_dim=4), BatchNorm(), Dropout(0.5),
                                Dense(3, activation="softmax")], dtype="float64", seed=5)
        model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=0.05))
        for _ in range(2):
            model.train_step(X, LABELS)
        return to_numpy(model.backend, model.flat_grads), to_numpy(model.backend, model.flat_state)

    (grads, state), (expected_grads, expected_state) = run(_spec(backend)), run("numpy")
    assert np.count_nonzero(expected_grads) > expected_grads.size // 2
    np.testing.assert_allclose(grads, expected_grads, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state, expected_state, rtol=1e-10, atol=1e-12)
