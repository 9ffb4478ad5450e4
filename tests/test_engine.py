"""The engine: compiled runners (``Backend.compile_pass``: numba's whole-pass kernel, JAX's jit)
against the engine's layer-by-layer pass (``fused=False``), the models a runner must leave
alone, and state that belongs to the model (scratch freed with it, outputs that stay valid)."""

import gc
import tracemalloc

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy, unavailable_reason
from tests.helpers import TOLERANCE, assert_fit_follows_reference, relative_error
from toolkit import Activation, Dense, Sequential
from toolkit.context import INFERENCE
from toolkit.losses import BinaryCrossEntropy

ARCHITECTURES = {
    "relu-tanh-softmax": ((6, 9, 7, 4), ("relu", "tanh", "softmax"), "categorical_crossentropy"),
    "sigmoid-bce": ((6, 5, 3), ("sigmoid", "sigmoid"), "binary_crossentropy"),
    "leaky-linear-mse": ((6, 8, 8, 2), ("leaky_relu", None, None), "mse"),
    "logistic-regression": ((6, 1), ("sigmoid",), "binary_crossentropy"),
    "tanh-64-32-1": ((64, 32, 1), ("tanh", "sigmoid"), "binary_crossentropy"),
    # every other arm of the runner's per-activation branch
    "gelu-silu-elu-softplus": ((6, 7, 6, 5, 4, 3), ("gelu", "silu", "elu", "softplus", "sigmoid"), "binary_crossentropy"),
}
NUMBA_ONLY = {"gelu-silu-elu-softplus"}


def _targets(rng, loss, n, width):
    if loss == "categorical_crossentropy":
        return rng.integers(0, width, size=n)
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, size=(n, width)).astype(float)
    return rng.normal(size=(n, width))


def _spec(backend):
    return backend.name if backend.name != "array_api_strict" else "array_api_strict"


def _model(spec, widths, activations, loss, dtype, fused):
    with toolkit.use_backend(spec, fused=fused):
        layers = [Dense(w, activation=a) for w, a in zip(widths[1:], activations, strict=True)]
        model = Sequential(layers, input_dim=widths[0], dtype=dtype, seed=3)
    model.compile(loss=loss, optimizer="sgd")
    return model


def _runner(model):
    return model._engine_for_training().runner


def _pass(model, x, y):
    """Loss, flat gradients and the output after one gradient pass, on the host."""
    backend = model.backend
    xb = model.as_input(x)
    loss, output, _ = model._gradients(xb, model.prepare_targets(y, xb.shape[0]))
    return float(loss), to_numpy(backend, model.flat_grads).copy(), to_numpy(backend, output).copy()


@pytest.mark.parametrize("rows", [1, 7, 33])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_compiled_pass_matches_layer_by_layer(backend, rng, arch, dtype, rows):
    if arch in NUMBA_ONLY and backend.name != "numba":
        pytest.skip(f"{arch} covers arms of numba's runner; the other backends run these activations in test_activations")
    widths, activations, loss = ARCHITECTURES[arch]
    x = rng.normal(size=(rows, widths[0])) * 2
    y = _targets(rng, loss, rows, widths[-1])
    fast = _model(_spec(backend), widths, activations, loss, dtype, fused=True)
    reference = _model(_spec(backend), widths, activations, loss, dtype, fused=False)
    assert _runner(reference) is None  # the reference is always the engine's own loop
    if backend.name in ("numba", "jax"):
        assert _runner(fast) is not None

    loss_fast, grads_fast, output_fast = _pass(fast, x, y)
    loss_ref, grads_ref, output_ref = _pass(reference, x, y)
    assert loss_fast == pytest.approx(loss_ref, rel=TOLERANCE[dtype])
    assert relative_error(grads_fast, grads_ref) <= TOLERANCE[dtype]
    assert relative_error(output_fast, output_ref) <= TOLERANCE[dtype]


def test_training_through_the_runner_follows_the_reference(backend, rng):
    """Three epochs of fit (shuffled, a short last batch, Adam): same weights either way."""
    widths, activations, loss = ARCHITECTURES["relu-tanh-softmax"]
    x, y = rng.normal(size=(45, 6)), rng.integers(0, 4, size=45)
    assert_fit_follows_reference(lambda fused: _model(_spec(backend), widths, activations, loss, "float64", fused), loss,
                                 x, y, epochs=3)


def test_batches_too_large_for_one_thread_run_layer_by_layer(rng):
    """The numba runner declines batches whose products OpenBLAS would thread; results agree anyway."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    widths, activations, loss = ARCHITECTURES["tanh-64-32-1"]
    fast = _model("numba", widths, activations, loss, "float64", fused=True)
    reference = _model("numba", widths, activations, loss, "float64", fused=False)
    runner = _runner(fast)
    assert runner.max_rows == 4 * 65536 // (64 * 32)
    for rows in (runner.max_rows, runner.max_rows + 1):
        x, y = rng.normal(size=(rows, 64)), _targets(rng, loss, rows, 1)
        xb = fast.as_input(x)
        declined = runner(fast.flat_params, fast.flat_grads, fast.flat_state, xb, fast.prepare_targets(y, rows),
                          fast.training_context()) is None
        assert declined == (rows > runner.max_rows)
        (loss_fast, grads_fast, _), (loss_ref, grads_ref, _) = _pass(fast, x, y), _pass(reference, x, y)
        assert loss_fast == pytest.approx(loss_ref, rel=1e-12)
        assert relative_error(grads_fast, grads_ref) <= 1e-12


@pytest.mark.parametrize("build", [
    lambda: (Sequential([Dense(4, input_dim=3), Activation("relu"), Dense(2, activation="softmax")]),
             "categorical_crossentropy"),
    lambda: (Sequential([Dense(4, activation="softmax", input_dim=3), Dense(2, activation="softmax")]),
             "categorical_crossentropy"),
    lambda: (Sequential([Dense(4, activation="relu", input_dim=3), Dense(1)]), BinaryCrossEntropy(from_logits=True)),
    lambda: (Sequential([Dense(4, activation="relu", input_dim=3), Dense(1, activation="sigmoid")]), "mse"),
], ids=["activation-layer", "hidden-softmax", "bce-from-logits", "sigmoid-mse"])
def test_other_models_run_layer_by_layer(build, rng):
    """What the numba runner does not cover must take the engine's loop, and still train."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    with toolkit.use_backend("numba"):
        model, loss = build()
    model.compile(loss=loss, optimizer="sgd")
    assert _runner(model) is None
    y = rng.integers(0, 2, size=(5, model.output_dim)).astype(float) if model.output_dim == 1 \
        else rng.integers(0, 2, size=5)
    assert np.isfinite(float(model.train_step(rng.normal(size=(5, 3)), y)))


def test_backends_without_a_runner_say_none(numpy_backend):
    model = _model("numpy", (3, 2), ("softmax",), "categorical_crossentropy", "float64", fused=True)
    assert _runner(model) is None


def test_runner_is_rebuilt_when_the_model_is_recompiled(rng):
    """compile() can change the output pair, so the plan and its runner are made again."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    model = _model("numba", (3, 2), ("sigmoid",), "binary_crossentropy", "float64", fused=True)
    assert _runner(model) is not None
    model.compile(loss="mse")  # sigmoid + MSE has no fused pair
    assert _runner(model) is None
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    xb = model.as_input(x)
    loss = float(model.compute_gradients(xb, model.prepare_targets(y, 4)))
    prediction = to_numpy(model.backend, model.predict(x))
    assert loss == pytest.approx(np.mean((prediction - y) ** 2), rel=1e-12)


def test_scratch_is_reused_per_batch_size_and_owned_by_the_model():
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    model = _model("numba", (3, 4, 2), ("relu", "softmax"), "categorical_crossentropy", "float32", fused=True)
    rng = np.random.default_rng(0)

    def output_for(rows):
        xb = model.as_input(rng.normal(size=(rows, 3)))
        return model._gradients(xb, model.prepare_targets(rng.integers(0, 2, size=rows), rows))[1]

    first, short, again = output_for(8), output_for(3), output_for(8)
    assert np.shares_memory(again, first) and not np.shares_memory(short, first) and short.shape == (3, 2)
    assert not hasattr(model.backend, "_workspace")  # nothing kept on the process-wide backend


def test_outputs_handed_to_the_caller_stay_valid(backend, rng):
    """A training forward's output is the caller's: the next training pass does not overwrite it."""
    model = _model(_spec(backend), (3, 4, 2), ("relu", "softmax"), "categorical_crossentropy", "float64", True)
    x1, x2 = model.as_input(rng.normal(size=(8, 3))), model.as_input(rng.normal(size=(8, 3)))
    first = model.forward(x1, training=True)
    kept = to_numpy(backend, first).copy()
    model.backward(model.prepare_targets(rng.integers(0, 2, size=8), 8))
    model.train_step(x2, rng.integers(0, 2, size=8))
    model.forward(x2, training=True)
    np.testing.assert_array_equal(to_numpy(backend, first), kept)


def test_memory_stays_flat_over_many_models():
    """Scratch belongs to the model: building and fitting 300 models leaves nothing behind."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(512, 64)).astype(np.float32), rng.integers(0, 10, size=512)

    def one_model():  # on the one active backend, as a hyper-parameter search would run
        model = Sequential([Dense(256, activation="relu", input_dim=64), Dense(10, activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer="adam")
        model.fit(x, y, epochs=1, batch_size=256, verbose=0)

    with toolkit.use_backend("numba"):
        for _ in range(20):  # warm up: compiled kernels, caches of the libraries
            one_model()
        gc.collect()
        tracemalloc.start()
        try:
            one_model()
            gc.collect()
            baseline = tracemalloc.get_traced_memory()[0]
            for _ in range(300):
                one_model()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
    assert grown < 500_000, f"{grown / 1e6:.1f} MB left behind by 300 models"


def _compiled_kernel_function(name):
    """``z ↦ f(z)`` element by element over a float32 array, f the numba kernels' compiled-only
    function ``name`` (callable from numba code alone); skips where numba is not installed."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    import numba

    from toolkit_backends import numba_kernels

    function = getattr(numba_kernels, name)

    @numba.njit
    def apply(z, out):
        for i in range(z.shape[0]):
            out[i] = function(z[i])

    def run(z):
        out = np.empty_like(z)
        apply(z, out)
        return out

    return run


def test_float32_tanh_of_the_kernels_is_within_7_ulp():
    """numba's vectorisable float32 tanh (a rational approximation) against float64 tanh."""
    apply = _compiled_kernel_function("tanh")
    rng = np.random.default_rng(0)
    z = np.concatenate([np.linspace(-12, 12, 400_001), rng.uniform(-1, 1, 200_000), rng.uniform(-1e-3, 1e-3, 50_000),
                        [0.0, -0.0, 1e-30, 3.4e38, -3.4e38]]).astype(np.float32)
    got = apply(z)
    exact = np.tanh(z.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / ulp) <= 7
    np.testing.assert_array_equal(got[z > 9.1], 1.0)  # float32 tanh is 1 from 13 ln 2 ≈ 9.01 on
    np.testing.assert_array_equal(apply(-z), -got)  # odd, bit for bit


def test_float32_exp_of_the_kernels_is_within_1_ulp_and_keeps_the_edges():
    """numba's vectorisable float32 exp (Cephes' polynomial) against float64 exp: over the whole
    range, in the subnormal results, and at overflow, ±inf and NaN."""
    apply = _compiled_kernel_function("exp")
    rng = np.random.default_rng(0)
    z = np.concatenate([np.linspace(-110, 95, 1_000_001), rng.uniform(-1, 1, 100_000)]).astype(np.float32)
    got = apply(z)
    exact = np.exp(z.astype(np.float64))
    normal = (exact >= np.finfo(np.float32).tiny) & (exact <= np.finfo(np.float32).max)
    ulp = np.spacing(exact[normal].astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[normal] - exact[normal]) / ulp) <= 1
    subnormal = (exact < np.finfo(np.float32).tiny) & ~normal
    smallest = np.float32(2.0**-149)
    assert np.max(np.abs(got[subnormal] - exact[subnormal])) <= smallest
    assert np.all(np.isinf(got[exact > np.finfo(np.float32).max]))
    edges = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.72283, 88.7229, -104.0], np.float32)
    got_edges = apply(edges)
    np.testing.assert_array_equal(got_edges[:5], [np.inf, 0.0, np.nan, 1.0, 1.0])
    assert np.isfinite(got_edges[5]) and np.isinf(got_edges[6]) and got_edges[7] == 0.0


def test_float32_tanh_is_the_same_in_the_runner_and_the_layers(rng):
    """Both numba paths use one tanh, so a batch-size switch between them changes no activation."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    widths, activations, loss = ARCHITECTURES["tanh-64-32-1"]
    model = _model("numba", widths, activations, loss, "float32", fused=True)
    xb = model.as_input(rng.normal(size=(16, 64)) * 3)
    model._gradients(xb, model.prepare_targets(_targets(rng, loss, 16, 1), 16))
    hidden_runner = to_numpy(model.backend, _runner(model)._scratch[16][0][16 * 32 : 2 * 16 * 32]).reshape(16, 32)
    params = model._views()[0]
    hidden_layer, _ = model.layers[0].forward(params[0], xb, INFERENCE, None)
    np.testing.assert_array_equal(hidden_runner, hidden_layer)
