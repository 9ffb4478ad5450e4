"""An independent oracle: ``jax.grad`` of the toolkit's own forward pass and loss equals the
toolkit's explicit backpropagation (the δ terms), on random networks of every layer and
activation the toolkit has, float64 ≤ 1e-10."""

import numpy as np
import pytest

import toolkit
from tests.conftest import selected_backends, unavailable_reason
from tests.helpers import relative_error
from toolkit import Activation, Dense, Sequential
from toolkit.engine import forward_pass
from toolkit.ops.activations import ACTIVATIONS

HEADS = {  # output activation, loss, target kind
    "softmax-ce": ("softmax", "categorical_crossentropy", "labels"),
    "sigmoid-bce": ("sigmoid", "binary_crossentropy", "binary"),
    "linear-mse": (None, "mse", "real"),
    "logits-ce": (None, "softmax_cross_entropy", "labels"),
    "logits-bce": (None, "bce_from_logits", "binary"),
    "tanh-mse": ("tanh", "mse", "real"),
    "softmax-mse": ("softmax", "mse", "real"),
}


def _random_network(rng, head):
    output_activation, loss, kind = HEADS[head]
    depth = int(rng.integers(1, 4))
    widths = [int(rng.integers(2, 7)) for _ in range(depth)]
    outputs = 1 if kind == "binary" else int(rng.integers(2, 5))
    layers = [Dense(widths[1] if depth > 1 else outputs, activation=str(rng.choice(sorted(ACTIVATIONS))),
                    input_dim=widths[0])]
    for i in range(1, depth - 1):
        layers.append(Dense(widths[i + 1], activation=str(rng.choice(sorted(ACTIVATIONS)))))
        if rng.random() < 0.5:
            layers.append(Activation(str(rng.choice(["tanh", "sigmoid", "relu", "leaky_relu", "softmax"]))))
    if depth > 1:
        layers.append(Dense(outputs, activation=output_activation))
    else:
        layers = [Dense(outputs, activation=output_activation, input_dim=widths[0])]
    n = int(rng.integers(1, 6))
    x = rng.normal(size=(n, widths[0])) + 0.01
    y = {"labels": lambda: rng.integers(0, outputs, size=n),
         "binary": lambda: rng.integers(0, 2, size=(n, 1)).astype(float),
         "real": lambda: rng.normal(size=(n, outputs))}[kind]()
    return layers, loss, x, y


def _in_the_jax_session():
    if "jax" not in selected_backends():
        pytest.skip("runs in the jax session (TOOLKIT_TEST_BACKENDS does not list jax)")
    reason = unavailable_reason("jax")
    if reason:
        pytest.skip(reason)


def test_jax_grad_equals_explicit_backprop_through_every_image_layer():
    """Conv2D (padded, strided), both poolings, Flatten, Reshape, global pooling, a fused output."""
    _in_the_jax_session()
    from tests.test_conv import every_image_layer, lenet_like

    rng = np.random.default_rng(9)
    for build, shape in ((lenet_like, (8, 7, 2)), (every_image_layer, (60,))):
        with toolkit.use_backend("jax"):
            model = build()
        model.compile(loss="categorical_crossentropy")
        _assert_oracle(model, rng.normal(size=(3, *shape)), rng.integers(0, 3, size=3))


def test_jax_grad_equals_explicit_backprop_through_dropout_normalisation_and_residual_blocks():
    _in_the_jax_session()
    from tests.test_deeper import DEEP, _problem

    rng = np.random.default_rng(4)
    for kind in sorted(DEEP):
        make, x, y = _problem(kind, rng)
        with toolkit.use_backend("jax"):
            model = make()
        model.random_step = 4
        _assert_oracle(model, x, y)


def _assert_oracle(model, x, y):
    import jax
    import jax.numpy as jnp

    xb = model.as_input(x)
    yb = model.prepare_targets(y, xb.shape[0])
    context = model.training_context()  # training mode: the same dropout masks, the batch's statistics
    model._gradients(xb, yb, context)
    explicit = np.asarray(model.flat_grads)

    def loss_of(flat):
        params = model.table.views_with(model.state_table, flat, model.flat_state, jnp)
        output, _ = forward_pass(model.layers, params, xb, context, [None] * len(model.layers))
        return model.loss.value(output, yb, jnp)

    automatic = np.asarray(jax.jit(jax.grad(loss_of))(model.flat_params))  # one compile beats op-by-op dispatch
    assert relative_error(explicit, automatic) <= 1e-10


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_jax_grad_equals_explicit_backprop(head, seed):
    _in_the_jax_session()
    rng = np.random.default_rng(1000 * seed + len(head))
    layers, loss, x, y = _random_network(rng, head)
    with toolkit.use_backend("jax"):
        model = Sequential(layers, dtype="float64", seed=seed)
    model.compile(loss=loss)
    # Biases off zero keep every ReLU off its kink, where the derivative does not exist.
    model.set_weights({name: value + (0.05 if name.endswith(".b") else 0.0) for name, value in model.get_weights().items()})
    _assert_oracle(model, x, y)
