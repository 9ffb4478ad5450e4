"""Every fused kernel a backend provides against its plain Array-API reference (``fused=False``)."""

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from tests.helpers import TOLERANCE, relative_error
from toolkit.ops.activations import ACTIVATIONS


def _pair(backend):
    """(fused, reference) instances of the test's backend."""
    spec = backend.name if backend.name != "array_api_strict" else "array_api_strict"
    return toolkit.config.load_backend(spec, fused=True), toolkit.config.load_backend(spec, fused=False)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("use_buffers", [False, True], ids=["alloc", "buffers"])
def test_bias_activation_and_backward(backend, rng, name, dtype, use_buffers):
    fused, reference = _pair(backend)
    activation = ACTIVATIONS[name]
    z, b, da = rng.normal(size=(9, 5)) * 3, rng.normal(size=5), rng.normal(size=(9, 5))

    def run(side):
        t = side.dtype(dtype)
        out = side.workspace("test", "a", (9, 5), t) if use_buffers else None
        # bias_activation may overwrite the product it is given: hand it a fresh copy.
        zz, a = side.bias_activation(side.asarray(z.copy(), t), side.asarray(b, t), activation, out=out)
        db = side.zeros(5, t)
        dz_out = side.workspace("test", "dz", (9, 5), t) if use_buffers else None
        dz = side.activation_backward(side.asarray(da, t), zz, a, activation, db, out=dz_out)
        return [to_numpy(side, v) for v in (zz, a, dz, db)]

    for got, want in zip(run(fused), run(reference), strict=True):
        assert relative_error(got, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("pair", ["softmax_ce", "sigmoid_bce", "identity_mse"])
def test_output_delta(backend, rng, pair, dtype):
    fused, reference = _pair(backend)
    width = {"softmax_ce": 4, "sigmoid_bce": 1, "identity_mse": 3}[pair]
    activation = ACTIVATIONS[{"softmax_ce": "softmax", "sigmoid_bce": "sigmoid", "identity_mse": "identity"}[pair]]
    z = rng.normal(size=(7, width)) * 5
    y = {"softmax_ce": lambda: np.eye(4)[rng.integers(0, 4, size=7)],
         "sigmoid_bce": lambda: rng.integers(0, 2, size=(7, 1)).astype(float),
         "identity_mse": lambda: rng.normal(size=(7, 3))}[pair]()

    def run(side):
        t = side.dtype(dtype)
        zz = side.asarray(z, t)
        loss, delta = side.output_delta(pair, zz, activation.forward(zz, side.xp), side.asarray(y, t))
        return float(loss), to_numpy(side, delta)

    (loss_f, delta_f), (loss_r, delta_r) = run(fused), run(reference)
    assert loss_f == pytest.approx(loss_r, rel=TOLERANCE[dtype])
    assert relative_error(delta_f, delta_r) <= TOLERANCE[dtype]


def test_sum_rows_into_and_matmul_into(backend, rng):
    fused, reference = _pair(backend)
    x, w = rng.normal(size=(6, 3)), rng.normal(size=(6, 4))
    sums, products = [], []
    for side in (fused, reference):
        out = side.zeros(3, side.dtype("float64"))
        side.sum_rows_into(side.asarray(x), out)
        sums.append(to_numpy(side, out))
        product = side.zeros((3, 4), side.dtype("float64"))
        returned = side.matmul_into(side.asarray(x).T, side.asarray(w), product)
        products.append(to_numpy(side, product))
        np.testing.assert_array_equal(to_numpy(side, returned), products[-1])
    assert relative_error(*sums) < 1e-14
    assert relative_error(*products) < 1e-14


OPTIMIZER_CALLS = {
    "sgd": lambda side, p, g, s, step: side.sgd_update(p, g, 0.1),
    "momentum": lambda side, p, g, s, step: side.sgd_momentum_update(p, g, s[0], 0.1, 0.9, 0.0, False, 0.01, step),
    "nesterov": lambda side, p, g, s, step: side.sgd_momentum_update(p, g, s[0], 0.1, 0.9, 0.0, True, 0.0, step),
    "adam": lambda side, p, g, s, step: side.adam_update(p, g, s[0], s[1], 1e-2, 0.9, 0.999, 1e-8, 0.01, False, step),
    "adamw": lambda side, p, g, s, step: side.adam_update(p, g, s[0], s[1], 1e-2, 0.9, 0.999, 1e-8, 0.1, True, step),
    "rmsprop": lambda side, p, g, s, step: side.rmsprop_update(p, g, s[0], 1e-2, 0.99, 1e-8, 0.01, step),
}


@pytest.mark.parametrize("size", [50, 70_001], ids=["small", "large"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rule", sorted(OPTIMIZER_CALLS))
def test_optimizer_updates(backend, rng, rule, dtype, size):
    fused, reference = _pair(backend)
    p0, grads = rng.normal(size=size), [rng.normal(size=size) for _ in range(3)]

    def run(side):
        t = side.dtype(dtype)
        p = side.asarray(p0.copy(), t)  # updated in place; numpy would alias p0
        state = [side.zeros(size, t), side.zeros(size, t)]
        for step, g in enumerate(grads, start=1):
            OPTIMIZER_CALLS[rule](side, p, side.asarray(g, t), state, step)
        return [to_numpy(side, v) for v in (p, *state)]

    for got, want in zip(run(fused), run(reference), strict=True):
        assert relative_error(got, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_buffer_reuse_is_bit_identical_to_fresh_allocations(optimizer):
    """numba's steady-state steps write into reused buffers; results must not change by one bit."""
    reason = __import__("tests.conftest", fromlist=["unavailable_reason"]).unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 12)), rng.integers(0, 4, size=32)

    def train(reuse):
        with toolkit.use_backend("numba") as backend:
            backend.reuse_buffers = reuse
            model = toolkit.Sequential([toolkit.Dense(16, activation="relu", input_dim=12),
                                        toolkit.Dense(16, activation="tanh"),
                                        toolkit.Dense(4, activation="softmax")], dtype="float64")
            model.compile(loss="categorical_crossentropy", optimizer=optimizer)
            model.fit(x, y, epochs=3, batch_size=8, verbose=0)
            return model.get_weights()

    reused, fresh = train(True), train(False)
    for name in fresh:
        np.testing.assert_array_equal(reused[name], fresh[name])
