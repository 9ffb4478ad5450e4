"""A user's own layer as a first-class citizen: registered, it saves and loads like the built-in ones,
and ``toolkit.testing.check_layer`` runs the built-in layers' checks on it, catching a planted error
in a backward pass on every backend."""

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from toolkit import CheckpointError, Dense, Sequential
from toolkit.layers import Layer, register_layer
from toolkit.testing import check_layer


@register_layer
class FeatureScale(Layer):
    """y = s ∘ x, a learned scale per feature (the README's custom layer)."""

    def param_shapes(self):
        return {"s": (self.input_shape[-1],)}

    def initial_params(self, rng, dtype):
        return {"s": rng.uniform((self.input_shape[-1],), 0.5, 1.5, dtype)}

    def forward(self, params, x, context, scratch):
        return params["s"] * x, (x if context.training else None)

    def backward(self, params, x, dy, scratch, grad_out):
        xp = self.backend.xp
        return dy * params["s"], {"s": xp.sum(xp.reshape(dy * x, (-1, x.shape[-1])), axis=0)}  # ∂J/∂x = dy ∘ s


@register_layer
class WrongInputGradient(FeatureScale):
    def backward(self, params, x, dy, scratch, grad_out):
        dx, grads = super().backward(params, x, dy, scratch, grad_out)
        return dy, grads  # planted: forgets the factor s in ∂J/∂x


@register_layer
class WrongParameterGradient(FeatureScale):
    def backward(self, params, x, dy, scratch, grad_out):
        dx, grads = super().backward(params, x, dy, scratch, grad_out)
        return dx, {"s": 2.0 * grads["s"]}  # planted: twice the gradient of s


def test_a_correct_layer_passes_every_check(backend):
    report = check_layer(FeatureScale(), (3, 4), backends=[backend.name])
    assert set(report) == {"numpy", backend.name}
    assert max(report[backend.name].values()) < 1e-7


@pytest.mark.parametrize("layer,parameter", [(WrongInputGradient, "0.W"), (WrongParameterGradient, "1.s")])
def test_a_planted_error_is_caught_and_named(backend, layer, parameter):
    # The error shows on the numpy reference first; a backend-only error would show on that backend.
    with pytest.raises(AssertionError, match=rf"{layer.__name__}\(\) on backend 'numpy': the gradient of "
                                             rf"{parameter} differs from finite differences"):
        check_layer(layer(), (4,), backends=[backend.name])


def test_a_registered_layer_saves_and_loads(backend, tmp_path, rng):
    model = Sequential([Dense(4, input_dim=3), FeatureScale(), Dense(1)], dtype="float64")
    model.compile(loss="mse", optimizer="adam")
    x = rng.normal(size=(8, 3))
    model.fit(x, rng.normal(size=(8, 1)), epochs=2, verbose=0)
    toolkit.save(model, tmp_path / "custom.safetensors")
    restored = toolkit.load(tmp_path / "custom.safetensors")
    assert isinstance(restored.layers[1], FeatureScale)
    np.testing.assert_array_equal(to_numpy(backend, restored.predict(x)), to_numpy(backend, model.predict(x)))


def test_an_unregistered_layer_is_named_with_the_fix(numpy_backend, tmp_path):
    class Unlisted(FeatureScale):
        pass

    model = Sequential([Dense(4, input_dim=3), Unlisted()])
    toolkit.save(model, tmp_path / "unlisted.safetensors")
    with pytest.raises(CheckpointError, match=r"unknown layer 'Unlisted': a layer class of your own must be registered "
                                              r"before loading \(decorate it with @toolkit.layers.register_layer"):
        toolkit.load(tmp_path / "unlisted.safetensors")
