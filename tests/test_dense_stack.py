"""The whole-pass kernels for plain Dense stacks (``Backend.dense_stack_kernel``) against the
layer-by-layer reference pass (``fused=False``), and the models they must leave alone."""

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy, unavailable_reason
from tests.helpers import TOLERANCE, relative_error
from toolkit import Activation, Dense, Sequential
from toolkit.losses import BinaryCrossEntropy

ARCHITECTURES = {
    "relu-tanh-softmax": ((6, 9, 7, 4), ("relu", "tanh", "softmax"), "categorical_crossentropy"),
    "sigmoid-bce": ((6, 5, 3), ("sigmoid", "sigmoid"), "binary_crossentropy"),
    "leaky-linear-mse": ((6, 8, 8, 2), ("leaky_relu", None, None), "mse"),
    "logistic-regression": ((6, 1), ("sigmoid",), "binary_crossentropy"),
    "tanh-64-32-1": ((64, 32, 1), ("tanh", "sigmoid"), "binary_crossentropy"),
}


def _targets(rng, loss, n, width):
    if loss == "categorical_crossentropy":
        return rng.integers(0, width, size=n)
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, size=(n, width)).astype(float)
    return rng.normal(size=(n, width))


def _model(spec, widths, activations, loss, dtype, fused):
    with toolkit.use_backend(spec, fused=fused):
        layers = [Dense(w, activation=a) for w, a in zip(widths[1:], activations, strict=True)]
        model = Sequential(layers, input_dim=widths[0], dtype=dtype, seed=3)
    model.compile(loss=loss, optimizer="sgd")
    return model


def _pass(model, x, y):
    """Loss, flat gradients and every layer's (Z, A) after one gradient pass, on the host."""
    backend = model.backend
    xb = model.as_input(x)
    loss = float(model.compute_gradients(xb, model.prepare_targets(y, xb.shape[0])))
    outputs = [to_numpy(backend, v) for layer in model.layers for v in layer.cached_output]
    return loss, to_numpy(backend, model.flat_grads).copy(), outputs


@pytest.mark.parametrize("rows", [1, 7, 33])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_whole_pass_matches_layer_by_layer(backend, rng, arch, dtype, rows):
    widths, activations, loss = ARCHITECTURES[arch]
    spec = backend.name if backend.name != "array_api_strict" else "array_api_strict"
    x = rng.normal(size=(rows, widths[0])) * 2
    y = _targets(rng, loss, rows, widths[-1])
    fast = _model(spec, widths, activations, loss, dtype, fused=True)
    reference = _model(spec, widths, activations, loss, dtype, fused=False)
    assert reference._stack_kernel() is None  # the reference is always the layer-by-layer pass
    if backend.name == "numba":
        assert fast._stack_kernel() is not None

    loss_fast, grads_fast, outputs_fast = _pass(fast, x, y)
    loss_ref, grads_ref, outputs_ref = _pass(reference, x, y)
    assert loss_fast == pytest.approx(loss_ref, rel=TOLERANCE[dtype])
    assert relative_error(grads_fast, grads_ref) <= TOLERANCE[dtype]
    for got, want in zip(outputs_fast, outputs_ref, strict=True):
        assert relative_error(got, want) <= TOLERANCE[dtype]


def test_training_through_the_kernel_follows_the_reference(backend, rng):
    """Three epochs of fit (shuffled, a short last batch, Adam): same weights either way."""
    spec = backend.name if backend.name != "array_api_strict" else "array_api_strict"
    widths, activations, loss = ARCHITECTURES["relu-tanh-softmax"]
    x, y = rng.normal(size=(45, 6)), rng.integers(0, 4, size=45)
    weights = []
    for fused in (True, False):
        model = _model(spec, widths, activations, loss, "float64", fused)
        model.compile(loss=loss, optimizer="adam", metrics=["accuracy"])
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=1)
        weights.append((model.get_weights(), history.history["accuracy"]))
    (fast, fast_accuracy), (reference, reference_accuracy) = weights
    assert fast_accuracy == reference_accuracy
    for name in reference:
        assert relative_error(fast[name], reference[name]) <= 1e-10


def test_batches_too_large_for_one_thread_run_layer_by_layer(rng):
    """The numba kernel declines batches whose products OpenBLAS would thread; results agree anyway."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    widths, activations, loss = ARCHITECTURES["tanh-64-32-1"]
    fast = _model("numba", widths, activations, loss, "float64", fused=True)
    reference = _model("numba", widths, activations, loss, "float64", fused=False)
    kernel = fast._stack_kernel()
    assert kernel.max_rows == 4 * 65536 // (64 * 32)
    for rows in (kernel.max_rows, kernel.max_rows + 1):
        x, y = rng.normal(size=(rows, 64)), _targets(rng, loss, rows, 1)
        xb = fast.as_input(x)
        assert (kernel(xb, fast.prepare_targets(y, rows)) is None) == (rows > kernel.max_rows)
        (loss_fast, grads_fast, _), (loss_ref, grads_ref, _) = _pass(fast, x, y), _pass(reference, x, y)
        assert loss_fast == pytest.approx(loss_ref, rel=1e-12)
        assert relative_error(grads_fast, grads_ref) <= 1e-12


def _unused(model):
    return model._stack_kernel() is None


@pytest.mark.parametrize("build", [
    lambda: (Sequential([Dense(4, input_dim=3), Activation("relu"), Dense(2, activation="softmax")]),
             "categorical_crossentropy"),
    lambda: (Sequential([Dense(4, activation="softmax", input_dim=3), Dense(2, activation="softmax")]),
             "categorical_crossentropy"),
    lambda: (Sequential([Dense(4, activation="relu", input_dim=3), Dense(1)]), BinaryCrossEntropy(from_logits=True)),
    lambda: (Sequential([Dense(4, activation="relu", input_dim=3), Dense(1, activation="sigmoid")]), "mse"),
], ids=["activation-layer", "hidden-softmax", "bce-from-logits", "sigmoid-mse"])
def test_other_models_run_layer_by_layer(build, rng):
    """What the kernel does not describe must take the reference path, and still train."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    with toolkit.use_backend("numba"):
        model, loss = build()
    model.compile(loss=loss, optimizer="sgd")
    assert _unused(model)
    y = rng.integers(0, 2, size=(5, model.output_dim)).astype(float) if model.output_dim == 1 \
        else rng.integers(0, 2, size=5)
    assert np.isfinite(float(model.train_step(rng.normal(size=(5, 3)), y)))


def test_backends_without_a_kernel_say_none(numpy_backend):
    model = _model("numpy", (3, 2), ("softmax",), "categorical_crossentropy", "float64", fused=True)
    assert _unused(model)


def test_kernel_is_rebuilt_when_the_model_is_recompiled(rng):
    """compile() can change the output pair, so the kernel is looked up again."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    model = _model("numba", (3, 2), ("sigmoid",), "binary_crossentropy", "float64", fused=True)
    assert not _unused(model)
    model.compile(loss="mse")  # sigmoid + MSE has no fused pair
    assert _unused(model)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    xb = model.as_input(x)
    loss = float(model.compute_gradients(xb, model.prepare_targets(y, 4)))
    prediction = to_numpy(model.backend, model.predict(x))
    assert loss == pytest.approx(np.mean((prediction - y) ** 2), rel=1e-12)


def test_scratch_is_reused_per_batch_size():
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    model = _model("numba", (3, 4, 2), ("relu", "softmax"), "categorical_crossentropy", "float32", fused=True)
    rng = np.random.default_rng(0)

    def outputs_for(rows):
        xb = model.as_input(rng.normal(size=(rows, 3)))
        model.compute_gradients(xb, model.prepare_targets(rng.integers(0, 2, size=rows), rows))
        return model.layers[-1].cached_output[1]

    first, short, again = outputs_for(8), outputs_for(3), outputs_for(8)
    assert again is first and short is not first and short.shape == (3, 2)
    model.backend.reuse_buffers = False
    try:
        assert outputs_for(8) is not first
    finally:
        model.backend.reuse_buffers = True


def test_float32_tanh_of_the_kernel_is_within_7_ulp():
    """The kernel's vectorisable float32 tanh (a rational approximation) against float64 tanh."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    import numba

    from backends.numba_kernels import tanh

    @numba.njit
    def apply(z, out):
        for i in range(z.shape[0]):
            out[i] = tanh(z[i])

    rng = np.random.default_rng(0)
    z = np.concatenate([np.linspace(-12, 12, 400_001), rng.uniform(-1, 1, 200_000), rng.uniform(-1e-3, 1e-3, 50_000),
                        [0.0, -0.0, 1e-30, 3.4e38, -3.4e38]]).astype(np.float32)
    got = np.empty_like(z)
    apply(z, got)
    exact = np.tanh(z.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / ulp) <= 7
    np.testing.assert_array_equal(got[z > 9.1], 1.0)  # float32 tanh is 1 from 13 ln 2 ≈ 9.01 on
    mirrored = np.empty_like(z)
    apply(-z, mirrored)
    np.testing.assert_array_equal(mirrored, -got)  # odd, bit for bit
