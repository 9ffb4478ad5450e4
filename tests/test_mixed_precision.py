"""Mixed precision, where the array library has the dtypes (torch, JAX; CuPy float16): float32 master
weights and optimizer state, forward and backward in bfloat16/float16, dynamic loss scaling for float16."""

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from toolkit import Adam, Dense, InputError, Sequential

MIXED = ("torch", "jax", "cupy")


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split((x / 16).astype(np.float32), y, test_size=0.2, random_state=0, stratify=y)


def _mlp(policy, seed=0):
    model = Sequential([Dense(64, activation="relu", input_dim=64), Dense(10, activation="softmax")], dtype=policy,
                       seed=seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(lr=1e-3))
    return model


def _mixed_backend(backend):
    if backend.name not in MIXED:
        pytest.skip(f"backend {backend.name} has no low-precision dtypes (the refusal is tested below)")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_run_ends_within_two_percent_of_float32(backend, policy):
    _mixed_backend(backend)
    if policy == "mixed_bfloat16" and "bfloat16" not in backend.low_precision:
        pytest.skip(f"{backend.name} has no bfloat16")
    pytest.importorskip("sklearn")
    x_train, x_val, y_train, y_val = _digits()
    results = {}
    for name in ("float32", policy):
        model = _mlp(name)
        history = model.fit(x_train[:384], y_train[:384], epochs=6, batch_size=64, validation_data=(x_val, y_val),
                            verbose=0)
        results[name] = history["val_loss"][-1]
    assert abs(results[policy] - results["float32"]) <= 0.02 * results["float32"], results
    assert str(model.flat_params.dtype).endswith("float32")  # the master weights
    assert all(str(state.dtype).endswith("float32") for state in model.optimizer.state.values())


def test_float16_skips_a_step_whose_gradients_overflow_and_halves_the_scale(backend, rng):
    _mixed_backend(backend)
    model = _mlp("mixed_float16")
    assert model.loss_scale == 2.0**16
    model.loss_scale = 1e30  # every float16 gradient overflows
    before = model.get_weights()
    model.train_step(rng.random((8, 64)).astype(np.float32), rng.integers(0, 10, size=8))
    assert model.loss_scale == 5e29 and model.optimizer.iterations == 0
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


def test_the_policy_survives_a_checkpoint(backend, tmp_path, rng):
    _mixed_backend(backend)
    model = _mlp("mixed_float16" if backend.name == "cupy" else "mixed_bfloat16")
    x = rng.random((4, 64)).astype(np.float32)
    toolkit.save(model, tmp_path / "mixed.safetensors")
    restored = toolkit.load(tmp_path / "mixed.safetensors")
    assert restored.policy == model.policy and restored.compute_dtype == model.compute_dtype
    np.testing.assert_array_equal(to_numpy(backend, restored.predict(x)), to_numpy(backend, model.predict(x)))


@pytest.mark.parametrize("name", ["numpy", "numba", "array_api_strict"])
def test_a_mixed_policy_on_a_backend_without_the_dtypes_is_refused(name):
    from tests.conftest import unavailable_reason

    if unavailable_reason(name):
        pytest.skip(unavailable_reason(name))
    with toolkit.use_backend(name):
        with pytest.raises(InputError, match=r"dtype='mixed_bfloat16' needs bfloat16 arithmetic, which backend .* does "
                                             r"not have .*mixed precision runs on"):
            Sequential([Dense(2, input_dim=3)], dtype="mixed_bfloat16")
