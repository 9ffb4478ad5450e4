"""numba's blocked convolution pass (``backends.numba_conv_stack``) against the engine's
layer-by-layer pass (``fused=False``): gradients, loss and ŷ of the stacks it covers, training
through it, its independence from the thread count, and the models it leaves to the per-layer path
(which it says, in the ``toolkit.numba`` log)."""

import logging

import numpy as np
import pytest

import toolkit
from tests.conftest import selected_backends, unavailable_reason
from tests.helpers import TOLERANCE, assert_fit_follows_reference, relative_error
from toolkit import BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, Sequential

# name: (input (H, W, C), layers, loss)
STACKS = {
    "lenet": ((12, 12, 1), lambda: [Conv2D(3, 5, padding="same", activation="relu"), MaxPool2D(2),
                                    Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(),
                                    Dense(7, activation="relu"), Dense(5, activation="softmax")],
              "categorical_crossentropy"),
    # strides, no pool between the convolutions, an overlapping pool, other activations
    "strided-overlap": ((11, 9, 2), lambda: [Conv2D(3, (3, 2), strides=(2, 1), padding=1, activation="tanh"),
                                             Conv2D(5, 3, padding="same", activation="gelu"),
                                             MaxPool2D(3, strides=2), Flatten(), Dense(1, activation="sigmoid")],
                        "binary_crossentropy"),
    "leaky-elu-mse": ((8, 8, 3), lambda: [Conv2D(4, 3, activation="leaky_relu"), MaxPool2D((2, 3)),
                                          Conv2D(2, 1, activation="elu"), Flatten(), Dense(3)], "mse"),
}


def _model(spec, name, dtype, fused, seed=5):
    shape, layers, loss = STACKS[name]
    with toolkit.use_backend(spec, fused=fused):
        model = Sequential(layers(), input_shape=shape, dtype=dtype, seed=seed)
    model.compile(loss=loss, optimizer="adam")
    return model


def _data(rng, name, n):
    shape, _, loss = STACKS[name]
    x = rng.normal(size=(n, *shape))
    if loss == "categorical_crossentropy":
        return x, rng.integers(0, 5, size=n)
    if loss == "binary_crossentropy":
        return x, rng.integers(0, 2, size=(n, 1)).astype(float)
    return x, rng.normal(size=(n, 3))


def _pass(model, x, y):
    xb = model.as_input(x)
    loss, output, _ = model._gradients(xb, model.prepare_targets(y, xb.shape[0]))
    return float(loss), np.array(model.flat_grads, copy=True), np.array(output, copy=True)


@pytest.mark.parametrize("rows", [1, 5, 70])
@pytest.mark.parametrize("name, dtype", [("lenet", "float32"), *((name, "float64") for name in sorted(STACKS))])
def test_blocked_pass_matches_layer_by_layer(backend, rng, name, dtype, rows):
    if backend.name != "numba":
        pytest.skip("the blocked pass is numba's; the other backends' conv layers are compared in test_conv")
    x, y = _data(rng, name, rows)
    fast, reference = _model("numba", name, dtype, True), _model("numba", name, dtype, False)
    assert type(fast._engine_for_training().runner).__name__ == "ConvPassRunner"
    assert reference._engine_for_training().runner is None
    (loss_fast, grads_fast, out_fast), (loss_ref, grads_ref, out_ref) = _pass(fast, x, y), _pass(reference, x, y)
    assert loss_fast == pytest.approx(loss_ref, rel=TOLERANCE[dtype])
    assert relative_error(grads_fast, grads_ref) <= TOLERANCE[dtype]
    assert relative_error(out_fast, out_ref) <= TOLERANCE[dtype]
    table = fast.plan(fast._compiled_loss()).table
    for key, slot in table.by_key.items():  # every tensor, not only the whole buffer, and never all zeros
        part_fast, part_ref = grads_fast[slot.offset : slot.offset + slot.size], grads_ref[slot.offset : slot.offset + slot.size]
        assert np.any(part_ref != 0), key
        assert relative_error(part_fast, part_ref) <= TOLERANCE[dtype], key


def _numba_only():
    if "numba" not in selected_backends():
        pytest.skip("the blocked pass's own checks run once, in the numba session")
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)


def test_the_thread_count_does_not_change_a_bit(rng, monkeypatch):
    """Blocks are summed in block order whatever thread ran them: 1, 2 and 3 threads agree exactly."""
    _numba_only()
    x, y = _data(rng, "lenet", 37)
    results = []
    model = _model("numba", "lenet", "float32", True)
    for threads in (1, 2, 3):
        monkeypatch.setenv("TOOLKIT_NUM_THREADS", str(threads))
        results.append(_pass(model, x, y))
        assert model._engine_for_training().runner._buffers[37].threads >= threads
    for loss, grads, output in results[1:]:
        assert loss == results[0][0]
        assert np.array_equal(grads, results[0][1]) and np.array_equal(output, results[0][2])


def test_blas_threads_are_given_back(rng):
    _numba_only()
    from threadpoolctl import ThreadpoolController

    x, y = _data(rng, "lenet", 9)
    model = _model("numba", "lenet", "float64", True)
    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    before = [lib.num_threads for lib in blas]
    _pass(model, x, y)
    assert [lib.num_threads for lib in blas] == before


def test_training_through_the_blocked_pass_follows_the_reference(rng):
    """Two epochs of fit with Adam and a short last batch: the same weights and accuracy either way."""
    _numba_only()
    x, y = _data(rng, "lenet", 45)
    assert_fit_follows_reference(lambda fused: _model("numba", "lenet", "float64", fused), "categorical_crossentropy",
                                 x, y, epochs=2)


def test_weighted_targets_take_the_per_layer_path(rng):
    _numba_only()
    x, y = _data(rng, "lenet", 6)
    model = _model("numba", "lenet", "float64", True)
    runner = model._engine_for_training().runner
    xb = model.as_input(x)
    weighted = np.concatenate([model.prepare_targets(y, 6), np.ones((6, 5))], axis=1)
    assert runner(model.flat_params, model.flat_grads, model.flat_state, xb, weighted, None) is None
    fitted = model.fit(x, y, sample_weight=np.linspace(0.5, 2, 6), epochs=1, batch_size=6, verbose=0)
    assert np.isfinite(fitted.history["loss"][0])


@pytest.mark.parametrize("layers, reason", [
    (lambda: [Conv2D(2, 3, activation="relu"), BatchNorm(), Flatten(), Dense(3, activation="softmax")],
     "BatchNorm"),
    (lambda: [Conv2D(2, 3, activation="softmax"), Flatten(), Dense(3, activation="softmax")], "row-wise"),
    (lambda: [Conv2D(2, 3), Flatten(), Dense(4, activation="softmax"), Dense(3, activation="softmax")], "softmax"),
], ids=["batchnorm", "softmax-conv", "hidden-softmax"])
def test_stacks_it_does_not_cover_say_so_and_run_layer_by_layer(rng, caplog, layers, reason):
    _numba_only()
    with toolkit.use_backend("numba"):
        model = Sequential(layers(), input_shape=(6, 6, 1), seed=1)
    model.compile(loss="categorical_crossentropy", optimizer="sgd")
    with caplog.at_level(logging.INFO, logger="toolkit.numba"):
        assert model._engine_for_training().runner is None
    assert reason in caplog.text and "per-layer pass" in caplog.text
    assert np.isfinite(float(model.train_step(rng.normal(size=(4, 6, 6, 1)), rng.integers(0, 3, size=4))))


def test_every_blas_numba_calls_is_visible_once_the_backend_is_loaded():
    """numba's np.dot calls SciPy's OpenBLAS; listed only after its first product, it stayed on every core
    (the thread tuner and the blocked pass set the libraries they saw), and two blocks' products then
    fought over both cores. Loading the backend must load it."""
    _numba_only()
    script = """
import numba, numpy as np
import toolkit
from threadpoolctl import ThreadpoolController
toolkit.config.load_backend("numba")
def blas():
    return sorted(lib.filepath for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas")
before = blas()
product = numba.njit(lambda a: np.dot(a, a))
product(np.ones((2, 2)))
assert blas() == before, (before, blas())
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
