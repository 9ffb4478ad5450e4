"""Interop: PyTorch ``nn.Sequential`` weights in and out (outputs equal), and ONNX export by running
the model's own forward pass on ndonnx (onnxruntime's outputs equal ``predict``)."""

import numpy as np
import pytest

import toolkit
from tests.conftest import selected_backends, to_numpy
from toolkit import Activation, Dense, Sequential, ShapeError, ToolkitError
from toolkit.layers import Layer
from toolkit.ops.activations import ACTIVATIONS


def _torch_pair(dtype="float64"):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    net = net.double() if dtype == "float64" else net
    model = Sequential([Dense(7, activation="tanh", input_dim=5), Dense(4, activation="relu"),
                        Dense(3, activation="softmax")], dtype=dtype, seed=4)
    return torch, net, model


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_weights_in_give_the_same_outputs(backend, dtype):
    torch, net, model = _torch_pair(dtype)
    toolkit.load_torch_weights(model, net)
    x = np.random.default_rng(0).normal(size=(9, 5))
    expected = net(torch.tensor(x, dtype=getattr(torch, dtype))).detach().numpy()
    tolerance = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(model.get_weights()["0.W"], net[0].weight.detach().numpy().T)


def test_toolkit_weights_out_after_training(backend):
    torch, net, model = _torch_pair()
    rng = np.random.default_rng(1)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.fit(rng.normal(size=(32, 5)), rng.integers(0, 3, size=32), epochs=2, verbose=0)
    toolkit.store_torch_weights(model, net)
    x = rng.normal(size=(6, 5))
    np.testing.assert_allclose(net(torch.tensor(x)).detach().numpy(), to_numpy(backend, model.predict(x)), rtol=1e-12)


def test_torch_module_of_another_shape_is_refused(numpy_backend):
    torch = pytest.importorskip("torch")
    model = Sequential([Dense(4, input_dim=3), Dense(2)])
    before = model.get_weights()
    with pytest.raises(ShapeError,
                       match=r"layer 1, Dense\(2, activation='identity'\), does not match the torch Linear\(.*\): "
                             r"the layer is 4→2"):
        toolkit.load_torch_weights(model, torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5)))
    with pytest.raises(ShapeError, match=r"2 layers with weights \(Dense, Dense\) but the torch module has 1 \(Linear\)"):
        toolkit.load_torch_weights(model, torch.nn.Sequential(torch.nn.Linear(3, 4)))
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


# -- ONNX ---------------------------------------------------------------------------------------
HEADS = {"softmax": "categorical_crossentropy", "sigmoid": "binary_crossentropy", None: "mse"}


def _in_the_numpy_session():
    """The exports themselves do not depend on the active backend: run them once, in the numpy session."""
    if "numpy" not in selected_backends():
        pytest.skip("ONNX export tests run in the numpy session")


def _session(path):
    onnxruntime = pytest.importorskip("onnxruntime")
    return onnxruntime.InferenceSession(str(path))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("head", sorted(HEADS, key=str))
def test_onnx_export_equals_predict(numpy_backend, tmp_path, head, dtype):
    """Every activation (one Dense layer each), the Activation layer, and each output kind."""
    _in_the_numpy_session()
    pytest.importorskip("ndonnx")
    outputs = 1 if head == "sigmoid" else 3
    hidden = [Dense(6, activation=name) for name in sorted(ACTIVATIONS)]
    model = Sequential([Dense(6, activation="relu", input_dim=4), *hidden, Activation("tanh"), Activation("softmax"),
                        Dense(outputs, activation=head)], dtype=dtype, seed=2)
    path = tmp_path / "model.onnx"
    model.export_onnx(str(path))
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_inputs()[0].shape[0] == "N"
    rng = np.random.default_rng(3)
    for rows in (1, 7, 64):
        x = (rng.normal(size=(rows, 4)) * 3).astype(dtype)
        served = session.run(None, {"input": x})[0]
        assert served.dtype == np.dtype(dtype)
        tolerance = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(served, to_numpy(numpy_backend, model.predict(x)), rtol=tolerance, atol=tolerance)


def test_onnx_export_from_any_backend(backend, tmp_path):
    pytest.importorskip("ndonnx")
    model = Sequential([Dense(4, activation="relu", input_dim=3), Dense(2, activation="softmax")], seed=1)
    toolkit.export_onnx(model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    served = _session(tmp_path / "m.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(served, to_numpy(backend, model.predict(x)), rtol=1e-5, atol=1e-6)


class Peek(Layer):
    """A layer whose forward needs a concrete value, which a traced graph has not."""

    def forward(self, params, x, training, scratch):
        return x * float(x[0, 0]), None


def test_a_layer_that_cannot_be_exported_is_named(numpy_backend, tmp_path):
    _in_the_numpy_session()
    pytest.importorskip("ndonnx")
    model = Sequential([Dense(3, input_dim=2), Peek()])
    with pytest.raises(ToolkitError, match=r"layer 1, Peek\(\), cannot be exported to ONNX"):
        model.export_onnx(str(tmp_path / "m.onnx"))
    assert model.predict(np.ones((2, 2))).shape == (2, 3)  # the model itself is untouched


def test_torch_cnn_weights_in_and_out(backend):
    """Conv2d (channels-first) and the Linear after Flatten (C, H, W order) map onto the toolkit's layout."""
    torch = pytest.importorskip("torch")
    from toolkit import Conv2D, Flatten, MaxPool2D

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(4, 5, (2, 3), stride=(1, 2)), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(5 * 3 * 1, 3)).double()
    model = Sequential([Conv2D(4, 3, padding=1, activation="relu", input_shape=(8, 6, 2)), MaxPool2D(2),
                        Conv2D(5, (2, 3), strides=(1, 2), activation="tanh"), Flatten(), Dense(3)], dtype="float64")
    toolkit.load_torch_weights(model, net)
    x = np.random.default_rng(0).normal(size=(4, 8, 6, 2))  # channels-last here
    expected = net(torch.tensor(x.transpose(0, 3, 1, 2))).detach().numpy()  # channels-first there
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)
    model.set_weights({name: value * 1.5 for name, value in model.get_weights().items()})
    toolkit.store_torch_weights(model, net)
    expected = net(torch.tensor(x.transpose(0, 3, 1, 2))).detach().numpy()
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_export_of_every_image_layer(numpy_backend, tmp_path, dtype):
    _in_the_numpy_session()
    pytest.importorskip("ndonnx")
    from toolkit import AvgPool2D, Conv2D, Flatten, GlobalAveragePooling2D, MaxPool2D, Reshape

    model = Sequential([Reshape((8, 8, 1), input_dim=64), Conv2D(3, 3, padding="same", activation="relu"),
                        MaxPool2D(2), Conv2D(4, 2, strides=(1, 2), padding=1, activation="tanh"), AvgPool2D((2, 1)),
                        Flatten(), Reshape((2, 3, 4)), GlobalAveragePooling2D(), Dense(3, activation="softmax")],
                       dtype=dtype, seed=5)
    model.export_onnx(str(tmp_path / "cnn.onnx"))
    session = _session(tmp_path / "cnn.onnx")
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for rows in (1, 7, 64):
        x = np.random.default_rng(rows).normal(size=(rows, 64)).astype(dtype)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], to_numpy(numpy_backend, model.predict(x)),
                                   rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_onnx_export_of_dropout_normalisation_and_residual_blocks(numpy_backend, tmp_path, kind):
    """Inference mode is what is exported: dropout off, BatchNorm with its running statistics."""
    _in_the_numpy_session()
    pytest.importorskip("ndonnx")
    from tests.test_deeper import _problem

    rng = np.random.default_rng(8)
    make, x, y = _problem(kind, rng)
    model = make()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)  # running statistics away from (0, 1)
    model.export_onnx(str(tmp_path / "deep.onnx"))
    served = _session(tmp_path / "deep.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(served, to_numpy(numpy_backend, model.predict(x)), rtol=1e-12, atol=1e-12)
