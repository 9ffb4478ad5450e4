"""Convolutions, pooling and reshaping on every backend: forward values worked out independently
here (loops over pixels), backward against float64 finite differences, every backend against numpy,
odd sizes, bad inputs, checkpoints."""

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from tests.helpers import TOLERANCE, relative_error
from toolkit import (
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    GlobalAveragePooling2D,
    InputError,
    MaxPool2D,
    Reshape,
    Sequential,
    ShapeError,
    gradcheck,
)
from toolkit.ops import conv


def naive_conv(x, w, b, stride, pads):
    """Cross-correlation by loops over output pixels (what Keras and PyTorch call convolution)."""
    (top, bottom), (left, right) = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, _, f = w.shape
    ho, wo = (xp.shape[1] - kh) // stride[0] + 1, (xp.shape[2] - kw) // stride[1] + 1
    out = np.zeros((x.shape[0], ho, wo, f))
    for n in range(x.shape[0]):
        for y in range(ho):
            for z in range(wo):
                window = xp[n, y * stride[0] : y * stride[0] + kh, z * stride[1] : z * stride[1] + kw, :]
                out[n, y, z] = np.tensordot(window, w, axes=3) + b
    return out


def naive_pool(x, size, stride, reduce):
    ho, wo = (x.shape[1] - size[0]) // stride[0] + 1, (x.shape[2] - size[1]) // stride[1] + 1
    out = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for y in range(ho):
        for z in range(wo):
            out[:, y, z] = reduce(x[:, y * stride[0] : y * stride[0] + size[0], z * stride[1] : z * stride[1] + size[1]],
                                  axis=(1, 2))
    return out


def test_hand_worked_4x4_image_3x3_kernel_stride_2_same(backend):
    """A 4×4 image, a 3×3 kernel of ones, stride 2, "same": 2×2 outputs, padding (0, 1) each way
    (Keras puts the extra row and column at the end)."""
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    model = Sequential([Conv2D(1, 3, strides=2, padding="same", input_shape=(4, 4, 1))], dtype="float64")
    model.set_weights({"0.W": np.ones((3, 3, 1, 1)), "0.b": np.array([0.5])})
    # Windows: rows 0-2 / cols 0-2 → 0+1+2+4+5+6+8+9+10 = 45; rows 0-2 / cols 2-4 (col 4 is padding) → 2+3+6+7+10+11 = 39;
    # rows 2-4 / cols 0-2 → 8+9+10+12+13+14 = 66; rows 2-4 / cols 2-4 → 10+11+14+15 = 50.
    expected = np.array([45.0, 39.0, 66.0, 50.0]).reshape(1, 2, 2, 1) + 0.5
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-14)


@pytest.mark.parametrize("case", [
    ((5, 7, 2), 3, 3, 1, "valid"), ((6, 6, 3), 2, (3, 2), (2, 1), "same"), ((4, 5, 1), 4, 1, 1, 0),
    ((5, 5, 2), 3, 2, 3, 1), ((7, 4, 3), 2, (2, 3), 2, "same"),
], ids=["valid", "same-stride-2x1", "kernel-1x1", "stride-larger-than-kernel", "h-ne-w-same"])
def test_conv_forward_against_loops(backend, rng, case):
    shape, filters, kernel, stride, padding = case
    layer = Conv2D(filters, kernel, strides=stride, padding=padding, activation="tanh", input_shape=shape)
    model = Sequential([layer], dtype="float64", seed=1)
    x = rng.normal(size=(2, *shape))
    weights = model.get_weights()
    expected = np.tanh(naive_conv(x, weights["0.W"], weights["0.b"] + 0.1, layer.strides, layer.pads))
    model.set_weights({"0.W": weights["0.W"], "0.b": weights["0.b"] + 0.1})
    assert model.layers[0].output_shape == expected.shape[1:]
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer,reduce", [(lambda: MaxPool2D(2), np.max), (lambda: MaxPool2D(3, strides=2), np.max),
                                          (lambda: AvgPool2D((2, 3)), np.mean), (lambda: AvgPool2D(2, strides=3), np.mean)],
                         ids=["max2", "max3s2", "avg2x3", "avg2s3"])
def test_pooling_forward_against_loops(backend, rng, layer, reduce):
    pool = layer()
    model = Sequential([pool], dtype="float64", input_shape=(7, 8, 2))
    x = rng.normal(size=(3, 7, 8, 2))
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)),
                               naive_pool(x, pool.pool_size, pool.strides, reduce), rtol=1e-14)


def test_max_pool_routes_each_gradient_to_one_winner(backend):
    """Ties: the first maximum of the window (row-major) takes the whole gradient."""
    x = np.array([[1.0, 3.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)  # two maxima, (0, 1) first
    model = Sequential([MaxPool2D(2, input_shape=(2, 2, 1)), Flatten(), Dense(1)], dtype="float64")
    model.compile(loss="mse")
    model.set_weights({"2.W": np.array([[1.0]]), "2.b": np.array([0.0])})
    params = model._views()[0]
    output, tape = toolkit.engine.forward_pass(model.layers, params, model.as_input(x), model.training_context(), [None] * 3)
    grad, _ = model.layers[0].backward({}, tape[0], model.backend.asarray(np.ones((1, 1, 1, 1))), None, {})
    np.testing.assert_array_equal(to_numpy(backend, grad).reshape(2, 2), [[0.0, 1.0], [0.0, 0.0]])


def test_global_average_pooling_and_flatten_order(backend, rng):
    x = rng.normal(size=(2, 3, 4, 5))
    gap = Sequential([GlobalAveragePooling2D()], dtype="float64", input_shape=(3, 4, 5))
    np.testing.assert_allclose(to_numpy(backend, gap.predict(x)), x.mean(axis=(1, 2)), rtol=1e-14)
    flat = Sequential([Flatten()], dtype="float64", input_shape=(3, 4, 5))
    np.testing.assert_array_equal(to_numpy(backend, flat.predict(x)), x.reshape(2, -1))  # row-major (H, W, C)
    back = Sequential([Reshape((3, 4, 5), input_dim=60)], dtype="float64")
    np.testing.assert_array_equal(to_numpy(backend, back.predict(x.reshape(2, -1))), x)


def test_col2im_is_the_adjoint_of_im2col(rng):
    """⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩: col2im is exactly the backward of taking windows."""
    import array_api_compat.numpy as xp

    for window, strides in (((3, 3), (1, 1)), ((2, 3), (2, 1)), ((2, 2), (3, 3))):
        x = rng.normal(size=(2, 7, 8, 3))
        out_hw = ((7 - window[0]) // strides[0] + 1, (8 - window[1]) // strides[1] + 1)
        cols = rng.normal(size=(2, *out_hw, window[0] * window[1], 3))
        left = np.sum(conv.im2col(x, window, strides, out_hw, xp) * cols)
        right = np.sum(x * conv.col2im(cols, (7, 8), window, strides, xp))
        assert left == pytest.approx(right, rel=1e-12)


def lenet_like(dtype="float64", seed=0):
    return Sequential([
        Conv2D(3, 3, padding="same", activation="relu", input_shape=(8, 7, 2)),
        MaxPool2D(2),
        Conv2D(4, (2, 1), strides=(1, 2), activation="tanh"),
        AvgPool2D((1, 2), strides=1),
        Flatten(),
        Dense(5, activation="sigmoid"),
        Dense(3, activation="softmax"),
    ], dtype=dtype, seed=seed)


def every_image_layer(dtype="float64", seed=0):
    """Reshape, Conv2D (strided, int padding), AvgPool2D, MaxPool2D, Flatten, GlobalAveragePooling2D."""
    return Sequential([
        Reshape((6, 5, 2), input_dim=60),
        Conv2D(3, 3, strides=(1, 2), padding=1, activation="tanh"),
        AvgPool2D((2, 1)),
        MaxPool2D((1, 2), strides=1),
        Flatten(),
        Reshape((3, 2, 3)),
        GlobalAveragePooling2D(),
        Dense(3, activation="softmax"),
    ], dtype=dtype, seed=seed)


ARCHITECTURES = {"lenet-like": (lenet_like, (8, 7, 2)), "every-image-layer": (every_image_layer, (60,))}


def test_cnn_gradients_against_finite_differences(backend, rng):
    model = lenet_like()
    model.compile(loss="categorical_crossentropy")
    x, y = rng.normal(size=(3, 8, 7, 2)), rng.integers(0, 3, size=3)
    errors = gradcheck(model, x, y)
    assert max(errors.values()) < 1e-6, errors


def test_every_image_layer_gradients_against_finite_differences(backend, rng):
    model = every_image_layer()
    model.compile(loss="categorical_crossentropy")
    errors = gradcheck(model, rng.normal(size=(3, 60)), rng.integers(0, 3, size=3))
    assert max(errors.values()) < 1e-6, errors


def test_global_pool_and_strided_conv_gradients(backend, rng):
    model = Sequential([Conv2D(2, 3, strides=2, padding=1, activation="sigmoid", input_shape=(5, 6, 1)),
                        GlobalAveragePooling2D(), Dense(1)], dtype="float64")
    model.compile(loss="mse")
    assert max(gradcheck(model, rng.normal(size=(2, 5, 6, 1)), rng.normal(size=(2, 1))).values()) < 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_cnn_backend_matches_numpy(backend, dtype, rows, arch):
    build, shape = ARCHITECTURES[arch]
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(rows, *shape)), rng.integers(0, 3, size=rows)

    def gradients(spec):
        with toolkit.use_backend(spec):
            model = build(dtype)
        model.compile(loss="categorical_crossentropy")
        xb = model.as_input(x)
        loss = model.compute_gradients(xb, model.prepare_targets(y, rows))
        return float(loss), to_numpy(model.backend, model.flat_grads).copy()

    spec = backend.name if backend.name != "array_api_strict" else f"array_api_strict:{str(backend.device).split(chr(39))[1]}"
    (loss, grads), (loss_ref, grads_ref) = gradients(spec), gradients("numpy")
    assert loss == pytest.approx(loss_ref, rel=TOLERANCE[dtype])
    assert relative_error(grads, grads_ref) <= TOLERANCE[dtype]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_cnn_trains_and_checkpoints_load_bit_identically(backend, tmp_path, arch):
    build, shape = ARCHITECTURES[arch]
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(24, *shape)), rng.integers(0, 3, size=24)
    with toolkit.use_backend("numpy"):
        source = build("float32")
        source.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        history = source.fit(x, y, epochs=3, batch_size=8, verbose=0)
        toolkit.save(source, tmp_path / "cnn.safetensors")
    assert history["loss"][-1] < history["loss"][0]
    restored = toolkit.load(tmp_path / "cnn.safetensors")
    assert restored.backend.name == backend.name
    for name, value in source.get_weights().items():
        np.testing.assert_array_equal(restored.get_weights()[name], value)
    np.testing.assert_allclose(to_numpy(backend, restored.predict(x)), source.predict(x), rtol=1e-5, atol=1e-6)


def _per_pixel_dense():
    """A Dense layer after a convolution acts on every pixel's channels (as in Keras): a valid model whose
    output is (N, 4, 4, 3), so one label per image is the mistake, caught at the loss."""
    model = Sequential([Conv2D(2, 3, input_shape=(6, 6, 1)), Dense(3, activation="softmax")])
    assert model.output_shape == (4, 4, 3)
    model.compile(loss="categorical_crossentropy")
    return model


@pytest.mark.parametrize("action,error,message", [
    (lambda: lenet_like().predict(np.ones((2, 8, 7))), ShapeError, r"inputs must be a batch of shape \(N, 8, 7, 2\)"),
    (lambda: lenet_like().predict(np.ones((2, 8, 7, 3))), ShapeError,
     r"inputs have samples of shape \(8, 7, 3\) but the first layer, Conv2D\(3, .*\), expects \(8, 7, 2\)"),
    (lambda: Sequential([Conv2D(2, 5, input_shape=(4, 4, 1))]), ShapeError, r"the 5×5 kernel is larger than the padded 4×4"),
    (lambda: Conv2D(2, 3, strides=0), InputError, r"strides must be an integer ≥ 1; got 0"),
    (lambda: _per_pixel_dense().fit(np.ones((2, 6, 6, 1)), [0, 1], verbose=0), ShapeError,
     r"2 labels for 32 predictions .* add Flatten or GlobalAveragePooling2D before the last Dense layer"),
    (lambda: Conv2D(2, 3, padding="full"), InputError, r"padding must be 'valid', 'same', an int ≥ 0 or a pair"),
], ids=["wrong-rank", "wrong-channels", "kernel-too-large", "zero-stride", "dense-without-flatten", "bad-padding"])
def test_bad_image_inputs(backend, action, error, message):
    with pytest.raises(error, match=message):
        action()
