"""LSTM and GRU: outputs and gradients equal PyTorch's ``nn.LSTM``/``nn.GRU`` (weights both ways),
every output mode, checkpoints, ONNX, bad input. Finite differences, every backend against numpy and
the ``jax.grad`` oracle run on the stacked model of ``tests.test_deeper`` (kind "rnn"); 2-rank MPI on
``tests.test_distributed`` (kind "rnn")."""

import numpy as np
import pytest

import toolkit
from tests.conftest import selected_backends, to_numpy
from tests.helpers import relative_error
from toolkit import GRU, LSTM, AvgPool1D, Conv1D, Dense, GlobalAveragePooling1D, InputError, MaxPool1D, Sequential, ShapeError


def _torch_recurrent(torch, kind, **settings):
    torch.manual_seed(0)
    return getattr(torch.nn, kind)(3, 5, batch_first=True, **settings).double()


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_outputs_and_gradients_equal_pytorch(backend, rng, kind):
    """Weights from torch (its two biases, non-zero); the whole sequence out, and the gradients of a
    loss on it, against autograd (float64 ≤ 1e-12)."""
    torch = pytest.importorskip("torch")
    net = _torch_recurrent(torch, kind)
    model = Sequential([getattr(toolkit, kind)(5, return_sequences=True, input_shape=(6, 3))], dtype="float64")
    model.compile(loss="mse")
    toolkit.load_torch_weights(model, net)
    x, y = rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 6, 5))
    out, _ = net(torch.tensor(x))
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), out.detach().numpy(), rtol=1e-12, atol=1e-12)
    torch.nn.functional.mse_loss(out, torch.tensor(y)).backward()
    xb = model.as_input(x)
    model.compute_gradients(xb, model.prepare_targets(y, 4))
    grads = {name: to_numpy(backend, g) for name, g in model.named_gradients()}
    assert relative_error(grads["0.W"], net.weight_ih_l0.grad.numpy().T) <= 1e-12
    assert relative_error(grads["0.U"], net.weight_hh_l0.grad.numpy().T) <= 1e-12
    units = 5
    if kind == "LSTM":  # b = b_ih + b_hh: the same gradient as each of them
        assert relative_error(grads["0.b"], net.bias_ih_l0.grad.numpy()) <= 1e-12
    else:
        assert relative_error(grads["0.b"], net.bias_ih_l0.grad.numpy()) <= 1e-12
        assert relative_error(grads["0.b_hn"], net.bias_hh_l0.grad.numpy()[2 * units :]) <= 1e-12


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_last_state_and_stacked_layers_after_training_go_back_to_torch(backend, rng, kind):
    torch = pytest.importorskip("torch")
    first, second = _torch_recurrent(torch, kind), getattr(torch.nn, kind)(5, 4, batch_first=True).double()
    layer = getattr(toolkit, kind)
    model = Sequential([layer(5, return_sequences=True, input_shape=(6, 3)), layer(4), Dense(2)], dtype="float64")
    model.compile(loss="mse", optimizer="adam")
    x = rng.normal(size=(8, 6, 3))
    model.fit(x, rng.normal(size=(8, 2)), epochs=2, batch_size=4, verbose=0)
    head = torch.nn.Linear(4, 2).double()
    toolkit.store_torch_weights(model, torch.nn.ModuleList([first, second, head]))
    hidden, _ = first(torch.tensor(x))
    last = second(hidden)[0][:, -1]
    np.testing.assert_allclose(head(last).detach().numpy(), to_numpy(backend, model.predict(x)), rtol=1e-11, atol=1e-12)


def test_checkpoint_round_trip_and_resumed_training(backend, rng, tmp_path):
    from tests.test_deeper import deep_recurrent

    x, y = rng.normal(size=(8, 6, 3)), rng.integers(0, 3, size=8)
    whole = deep_recurrent()
    whole.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
    first = deep_recurrent()
    first.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    toolkit.save(first, tmp_path / "rnn.safetensors")
    resumed = toolkit.load(tmp_path / "rnn.safetensors")
    resumed.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    for name, value in whole.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[name], value)


def test_onnx_export_unrolls_the_steps(numpy_backend, rng, tmp_path):
    if "numpy" not in selected_backends():
        pytest.skip("backend-independent: runs in the numpy session")
    pytest.importorskip("ndonnx")
    import onnxruntime

    from tests.test_deeper import deep_recurrent

    model = deep_recurrent()
    model.fit(rng.normal(size=(8, 6, 3)), rng.integers(0, 3, size=8), epochs=1, verbose=0)
    model.export_onnx(str(tmp_path / "rnn.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "rnn.onnx"))
    for rows in (1, 5):
        x = rng.normal(size=(rows, 6, 3))
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict(x), rtol=1e-12, atol=1e-12)


# -- bad input ----------------------------------------------------------------------------------

def test_a_flat_batch_is_refused_with_the_fix(backend):
    with pytest.raises(ShapeError, match=r"LSTM\(4\) takes sequences \(N, T, features\); got samples of shape "
                                         r"\(6,\) — add a time axis"):
        Sequential([LSTM(4), Dense(1)]).predict(np.ones((2, 6)))


@pytest.mark.parametrize("settings,message", [
    ({"num_layers": 2}, r"num_layers=2: stack one toolkit layer per torch layer"),
    ({"bidirectional": True}, r"bidirectional=True: the toolkit's recurrent layers run forward in time only"),
    ({"proj_size": 2}, r"proj_size=2: the toolkit's LSTM has no projection"),
])
def test_torch_layers_that_compute_something_else_are_refused(numpy_backend, settings, message):
    torch = pytest.importorskip("torch")
    model = Sequential([LSTM(5, input_shape=(6, 3))], dtype="float64")
    before = model.get_weights()
    with pytest.raises(ShapeError, match=message):
        toolkit.load_torch_weights(model, _torch_recurrent(torch, "LSTM", **settings))
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("make,error,message", [
    (lambda: LSTM(0), InputError, r"units must be an integer ≥ 1"),
    (lambda: GRU(4, input_shape=(0, 3)), InputError, r"input_shape must be an integer ≥ 1; got 0"),
    (lambda: GRU(4, return_sequences="yes"), InputError, r"return_sequences must be True or False"),
])
def test_bad_settings(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_nan_in_a_sequence_is_refused_before_training(numpy_backend):
    model = Sequential([GRU(3, input_shape=(4, 2)), Dense(1)])
    model.compile(loss="mse")
    before = model.get_weights()
    x = np.ones((3, 4, 2))
    x[1, 2, 0] = np.nan
    with pytest.raises(InputError, match=r"NaN or inf"):
        model.fit(x, np.ones((3, 1)), verbose=0)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


# -- Conv1D and 1-D pooling -------------------------------------------------------------------------

@pytest.mark.parametrize("dilation", [1, 3])
@pytest.mark.parametrize("padding", ["valid", "same", 2])
def test_conv1d_equals_torch_both_ways(backend, rng, padding, dilation):
    """Outputs and gradients against ``torch.nn.Conv1d`` (autograd), weights loaded from and stored to it."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    stride = 2 if padding != "same" else 1  # torch has no "same" with strides
    net = torch.nn.Conv1d(3, 4, 3, stride=stride, padding=padding, dilation=dilation).double()
    model = Sequential([Conv1D(4, 3, strides=stride, padding=padding, dilation=dilation, input_shape=(9, 3))],
                       dtype="float64")
    model.compile(loss="mse")
    toolkit.load_torch_weights(model, net)
    x = rng.normal(size=(2, 9, 3))  # channels last here, (N, C, T) in torch
    out = net(torch.tensor(x.transpose(0, 2, 1)))
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), out.detach().numpy().transpose(0, 2, 1),
                               rtol=1e-12, atol=1e-12)
    y = rng.normal(size=tuple(out.shape))
    torch.nn.functional.mse_loss(out, torch.tensor(y)).backward()
    model.compute_gradients(model.as_input(x), model.prepare_targets(y.transpose(0, 2, 1), 2))
    grads = {name: to_numpy(backend, g) for name, g in model.named_gradients()}
    assert relative_error(grads["0.W"], net.weight.grad.numpy().transpose(2, 1, 0)) <= 1e-12
    assert relative_error(grads["0.b"], net.bias.grad.numpy()) <= 1e-12
    model.set_weights({name: 2.0 * value for name, value in model.get_weights().items()})
    toolkit.store_torch_weights(model, net)
    expected = net(torch.tensor(x.transpose(0, 2, 1))).detach().numpy().transpose(0, 2, 1)
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-12)


def test_a_dilated_window_reads_every_dth_step(numpy_backend):
    """By hand: taps at t, t + 2, t + 4 of a 1-channel sequence, weights 1, 10, 100."""
    model = Sequential([Conv1D(1, 3, dilation=2, input_shape=(7, 1))], dtype="float64")
    model.set_weights({"0.W": np.array([1.0, 10.0, 100.0]).reshape(3, 1, 1), "0.b": np.zeros(1)})
    x = np.arange(1.0, 8.0).reshape(1, 7, 1)
    expected = [x[0, t, 0] + 10 * x[0, t + 2, 0] + 100 * x[0, t + 4, 0] for t in range(3)]
    np.testing.assert_allclose(np.asarray(model.predict(x)).ravel(), expected, rtol=1e-15)


def test_one_dimensional_pooling_values(backend):
    x = np.array([[[1.0, -1.0], [3.0, 0.0], [2.0, 5.0], [0.0, 4.0], [7.0, 1.0]]])
    assert to_numpy(backend, Sequential([MaxPool1D(2)], input_shape=(5, 2)).predict(x)).tolist() == [[[3.0, 0.0],
                                                                                                       [2.0, 5.0]]]
    np.testing.assert_allclose(to_numpy(backend, Sequential([AvgPool1D(3, strides=2)], input_shape=(5, 2)).predict(x)),
                               [[[2.0, 4.0 / 3.0], [3.0, 10.0 / 3.0]]], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(backend, Sequential([GlobalAveragePooling1D()], input_shape=(5, 2)).predict(x)),
                               x.mean(axis=1), rtol=1e-6)


def test_conv1d_bad_settings():
    with pytest.raises(InputError, match=r"dilation"):
        Conv1D(4, 3, dilation=0)
    with pytest.raises(ShapeError, match=r"takes sequences \(N, T, channels\); got samples of shape \(8,\) — add a "
                                         r"channel axis"):
        Sequential([Conv1D(2, 3)], input_shape=(8,))
