"""Property-based tests: hypothesis draws layer widths, batch sizes (1 included), activations,
dtypes and seeds. Forward shapes are right, float64 gradients match finite differences, and
every backend matches numpy.

CI runs the short ``ci`` profile; a long run: ``HYPOTHESIS_PROFILE=long pytest tests/test_properties.py``.
"""

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolkit
from tests.conftest import selected_backends, unavailable_reason
from tests.helpers import TOLERANCE, build_mlp, gradients_on, relative_error

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HIDDEN = ["relu", "tanh", "sigmoid", "leaky_relu", None]
HEADS = {  # output activation, loss, target kind
    "softmax-ce": ("softmax", "categorical_crossentropy", "labels"),
    "sigmoid-bce": ("sigmoid", "binary_crossentropy", "binary"),
    "linear-mse": (None, "mse", "real"),
    "logits-ce": (None, "softmax_cross_entropy", "labels"),
}
BACKENDS = [b for b in selected_backends() if b != "numpy" and not unavailable_reason(b)]


@st.composite
def problems(draw):
    depth = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 6)) for _ in range(depth)]
    head = draw(st.sampled_from(sorted(HEADS)))
    output_activation, loss, kind = HEADS[head]
    outputs = 1 if kind == "binary" else draw(st.integers(2, 4))
    activations = [draw(st.sampled_from(HIDDEN)) for _ in range(depth - 1)] + [output_activation]
    batch = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, widths[0])) + 0.01  # off the ReLU kinks at 0
    y = {"labels": lambda: rng.integers(0, outputs, size=batch),
         "binary": lambda: rng.integers(0, 2, size=(batch, 1)).astype(float),
         "real": lambda: rng.normal(size=(batch, outputs))}[kind]()
    return [*widths, outputs], activations, loss, x, y, seed


@given(problems(), st.sampled_from(["float32", "float64"]))
def test_forward_shape(problem, dtype):
    widths, activations, loss, x, _, seed = problem
    with toolkit.use_backend("numpy"):
        prediction = build_mlp(widths, activations, loss, dtype=dtype, seed=seed).predict(x)
    assert prediction.shape == (x.shape[0], widths[-1])
    assert prediction.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(prediction))


@given(problems())
def test_gradients_match_finite_differences(problem):
    widths, activations, loss, x, y, seed = problem
    with toolkit.use_backend("numpy"):
        model = build_mlp(widths, activations, loss, seed=seed)
        # Zero biases put a dead ReLU's successor exactly on the kink z = 0, where the derivative
        # does not exist and central differences see slope 1/2: nudge them off it.
        rng = np.random.default_rng(seed)
        model.set_weights({name: value + (rng.uniform(0.05, 0.1, value.shape) if name.endswith(".b") else 0)
                           for name, value in model.get_weights().items()})
        errors = toolkit.gradcheck(model, x, y)
        scales = {name: float(np.max(np.abs(g))) for name, g in model.named_gradients()}
    # Relative to the largest gradient of the model: finite differences carry an absolute error of
    # about ε_machine·J/h ≈ 1e-10, which is large next to a parameter whose gradient is 1e-6.
    worst = max(errors[name] * scales[name] for name in errors) / max(max(scales.values()), 1e-12)
    assert worst < 1e-6, (errors, scales)


@given(problems(), st.sampled_from(["float32", "float64"]), st.sampled_from(BACKENDS or ["numpy"]))
def test_every_backend_matches_numpy(problem, dtype, backend):
    widths, activations, loss, x, y, seed = problem
    ours = gradients_on(backend, widths, activations, loss, x, y, dtype=dtype, seed=seed)
    reference = gradients_on("numpy", widths, activations, loss, x, y, dtype=dtype, seed=seed)
    # Relative to the whole gradient vector: a tiny bias gradient that is a cancelling sum over the
    # batch (1e-6 out of terms of 1e-3) differs in float32 with the summation order alone.
    names = sorted(reference)
    whole = relative_error(np.concatenate([ours[n].ravel() for n in names]),
                           np.concatenate([reference[n].ravel() for n in names]))
    assert whole <= TOLERANCE[dtype]
