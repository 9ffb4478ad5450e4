"""Every bad input gets a clear error naming the problem (the README's table, row by row),
on every backend, and never silent wrong numbers."""

import numpy as np
import pytest

import toolkit
from toolkit import SGD, BackendError, Dense, InputError, Sequential, ShapeError


def classifier():
    model = Sequential([Dense(4, activation="relu", input_dim=3), Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    return model


def regressor():
    model = Sequential([Dense(1, input_dim=3)])
    model.compile(loss="mse", optimizer="sgd")
    return model


def binary():
    model = Sequential([Dense(1, activation="sigmoid", input_dim=3)])
    model.compile(loss="binary_crossentropy", optimizer="sgd")
    return model


X = np.ones((4, 3))
LABELS = np.array([0, 1, 2, 1])

# (row of the README table, what the user does, expected error, message pattern)
CASES = [
    ("feature count ≠ first layer", lambda: classifier().fit(np.ones((4, 5)), LABELS, verbose=0),
     ShapeError, r"inputs have 5 features but the first layer, Dense\(4, activation='relu'\), expects 3"),
    ("targets of another shape", lambda: regressor().fit(X, np.ones((4, 2)), verbose=0),
     ShapeError, r"targets have shape \(4, 2\) but predictions have shape \(4, 1\)"),
    ("targets of another batch size", lambda: regressor().fit(X, np.ones((5, 1)), verbose=0),
     ShapeError, r"targets have shape \(5, 1\) but predictions have shape \(4, 1\)"),
    ("labels for another batch size", lambda: classifier().fit(X, np.array([0, 1]), verbose=0),
     ShapeError, r"2 labels for 4 predictions"),
    ("class label ≥ n_classes", lambda: classifier().fit(X, np.array([0, 1, 3, 1]), verbose=0),
     InputError, r"class labels must lie in \[0, 3\); got labels from 0 to 3"),
    ("negative class label", lambda: classifier().fit(X, np.array([0, -1, 2, 1]), verbose=0),
     InputError, r"class labels must lie in \[0, 3\); got labels from -1 to 2"),
    ("non-integer class labels", lambda: classifier().fit(X, np.array([0.0, 1.5, 2.0, 1.0]), verbose=0),
     InputError, r"must be integer class labels"),
    ("BCE targets outside [0, 1]", lambda: binary().fit(X, np.array([[0.0], [2.0], [1.0], [0.0]]), verbose=0),
     InputError, r"targets must lie in \[0, 1\]"),
    ("NaN in inputs", lambda: classifier().fit(np.where(np.eye(4, 3) > 0, np.nan, 1.0), LABELS, verbose=0),
     InputError, r"inputs contain 3 NaN or inf value\(s\)"),
    ("inf in targets", lambda: regressor().fit(X, np.array([[1.0], [np.inf], [0.0], [0.0]]), verbose=0),
     InputError, r"targets contain NaN or inf"),
    ("integer inputs", lambda: classifier().predict(np.ones((2, 3), dtype=np.int64)),
     InputError, r"inputs have dtype int64; the model takes floating-point inputs"),
    ("float16 inputs", lambda: classifier().predict(np.ones((2, 3), dtype=np.float16)),
     InputError, r"dtype float16.* (is )?not supported"),
    ("1-D inputs", lambda: classifier().predict(np.ones(3)),
     ShapeError, r"inputs must be a 2-D batch \(N, n_features\); got shape \(3,\)"),
    ("empty batch", lambda: classifier().train_step(np.ones((0, 3)), np.ones((0, 1))),
     InputError, r"empty batch: inputs have 0 rows"),  # predict returns an empty batch (tests/test_display.py)
    ("zero-sized layer", lambda: Dense(0), InputError, r"Dense\(units=0\): units must be a positive integer"),
    ("zero learning rate", lambda: SGD(lr=0.0), InputError, r"learning rate must be > 0; got 0.0"),
    ("negative learning rate", lambda: toolkit.Adam(lr=-1e-3), InputError, r"learning rate must be > 0"),
    ("batch_size < 1", lambda: classifier().fit(X, LABELS, batch_size=0, verbose=0),
     InputError, r"batch_size must be an integer ≥ 1; got 0"),
    ("epochs < 0", lambda: classifier().fit(X, LABELS, epochs=-1, verbose=0),
     InputError, r"epochs must be an integer ≥ 0; got -1"),
    ("validation_split outside [0, 1)", lambda: classifier().fit(X, LABELS, validation_split=1.0, verbose=0),
     InputError, r"validation_split must lie in \[0, 1\)"),
    ("unknown activation", lambda: Dense(3, activation="swishy"), InputError, r"unknown activation 'swishy'; choose one of"),
    ("unknown loss", lambda: classifier().compile(loss="hinge"), InputError, r"unknown loss 'hinge'; choose one of"),
    ("binary metric on several outputs", lambda: _compile_fit(classifier(), ["precision"]),
     InputError, r"precision counts yes/no predictions, so it needs a model with one output per sample "
                 r"\(Dense\(1, activation='sigmoid'\)\); this model's outputs have shape \(3,\)"),
    ("fit before compile", lambda: Sequential([Dense(1, input_dim=3)]).fit(X, np.ones(4), verbose=0),
     RuntimeError, r"call model.compile\(loss=..., optimizer=...\) before fit\(\)"),
    ("unknown backend name", lambda: toolkit.use_backend("bogus").__enter__(),
     BackendError, r"unknown backend 'bogus'.*valid backends are: array_api_strict, cupy, jax, numba, numpy"),
]


def _compile_fit(model, metrics):
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=metrics)
    model.fit(X, LABELS, verbose=0)


@pytest.mark.parametrize("row,action,error,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(backend, row, action, error, message):
    with pytest.raises(error, match=message):
        action()


def test_a_failed_fit_leaves_the_model_untouched(backend):
    model = classifier()
    before = model.get_weights()
    with pytest.raises(InputError):
        model.fit(X, np.array([0, 1, 7, 1]), verbose=0)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


def test_arrays_of_another_backend_are_moved_explicitly(backend):
    """Host arrays and arrays of another backend/device go to the model's device at the boundary."""
    model = classifier()
    with toolkit.use_backend("array_api_strict:device2") as other:
        foreign = other.asarray(np.ones((2, 3)))
    if backend.name in ("numpy", "numba", "jax", "torch"):  # host libraries: the strict device refuses to leave
        with pytest.raises(InputError, match=r"cannot take an array of type .*Array.* on device .*device2"):
            model.predict(foreign)
    else:
        prediction = model.predict(foreign)
        assert backend.is_native(prediction)


def test_unavailable_backend_says_what_to_install(monkeypatch):
    from importlib.metadata import EntryPoint

    from toolkit import registry

    missing = EntryPoint(name="numba", value="no_such_module_xyz:X", group=registry.BACKEND_GROUP)
    monkeypatch.setattr(registry, "_group", lambda group: {"numba": missing})
    with pytest.raises(BackendError, match=r"backend 'numba' needs a library that is not installed .* pip install numba"):
        registry.load_backend("numba")
