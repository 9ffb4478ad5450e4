"""The cases an independent check (PyTorch autograd and a new user's inputs) found giving wrong
numbers silently, or refusing, crashing or misreporting: one test per case, on every backend.
Each of these failed before the fix it names."""

import os
import stat
import threading

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from toolkit import Adam, CheckpointError, Dense, InputError, Sequential, ToolkitError, gradcheck
from toolkit.callbacks import LearningRateScheduler


def _softmax_model(loss="categorical_crossentropy", dtype="float64"):
    model = Sequential([Dense(3, activation="softmax", input_dim=4)], dtype=dtype, seed=1)
    model.compile(loss=loss, optimizer="sgd")
    return model


# 1. Cross-entropy targets whose rows do not sum to 1 ------------------------------------------
@pytest.mark.parametrize("loss", ["categorical_crossentropy", "softmax_cross_entropy"])
@pytest.mark.parametrize("targets", ["unnormalised", "multi-hot", "label-smoothing"])
def test_cross_entropy_gradient_is_exact_for_any_target_rows(backend, rng, loss, targets):
    x = rng.normal(size=(6, 4))
    y = {"unnormalised": np.abs(rng.normal(size=(6, 3))),
         "multi-hot": np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 0, 0]], dtype=float),
         "label-smoothing": np.eye(3)[rng.integers(0, 3, size=6)] * 0.9 + 0.1 / 3}[targets]
    if loss == "categorical_crossentropy":
        model = _softmax_model(loss)
    else:  # logits: a linear output layer
        model = Sequential([Dense(3, input_dim=4)], dtype="float64", seed=1)
        model.compile(loss=loss)
    assert max(gradcheck(model, x, y).values()) < 1e-7


# 2. Probability-form losses where the clip is active ------------------------------------------
@pytest.mark.parametrize("case", ["softmax-then-bce", "sigmoid-then-cce"])
def test_gradient_is_the_gradient_of_the_reported_clipped_loss(backend, rng, case):
    activation, loss = {"softmax-then-bce": ("softmax", "binary_crossentropy"),
                        "sigmoid-then-cce": ("sigmoid", "categorical_crossentropy")}[case]
    model = Sequential([Dense(3, activation=activation, input_dim=4)], dtype="float64", seed=2)
    model.compile(loss=loss)
    # Large weights saturate outputs past the clip at 1e-7 / 1 − 1e-7 (for sigmoid + CE, every row's
    # target: the clipped loss is then flat, and its gradient 0, where the unclipped one is not).
    scale = 12 if case == "softmax-then-bce" else 60
    model.set_weights({"0.W": rng.normal(size=(4, 3)) * scale, "0.b": np.zeros(3)})
    x = rng.normal(size=(40, 4))
    probabilities = to_numpy(backend, model.predict(x))
    x, probabilities = x[probabilities.min(axis=1) < 1e-7][:5], probabilities[probabilities.min(axis=1) < 1e-7][:5]
    # Targets on each row's least likely class: where the loss's log meets the clip.
    y = np.eye(3)[np.argmin(probabilities, axis=1)]
    assert len(x) == 5 and np.all(probabilities.min(axis=1) < 1e-7)  # the clip really acts
    errors = gradcheck(model, x, y)
    # Near the clip the loss curves steeply (1/p with p ≈ 1e-6), so central differences carry
    # ~1e-6 of their own; the unclipped gradient of before was off by ~100 %.
    assert max(errors.values()) < 1e-4, errors


# 3. One optimizer instance shared by two models ------------------------------------------------
def test_an_optimizer_trains_one_model(backend):
    shared = Adam(lr=0.01)
    first = Sequential([Dense(2, input_dim=3)])
    first.compile(loss="mse", optimizer=shared)
    second = Sequential([Dense(2, input_dim=3)])
    with pytest.raises(InputError, match=r"this Adam already trains another model.*give each model its own"):
        second.compile(loss="mse", optimizer=shared)
    assert second.optimizer is None  # the failed compile changed nothing
    first.compile(loss="mse", optimizer=shared)  # the same model again is fine


# 4. (outputs that stay valid: tests/test_engine.py::test_outputs_handed_to_the_caller_stay_valid)


# 5. Threads -------------------------------------------------------------------------------------
def test_predict_in_one_thread_never_disturbs_fit_in_another(backend, rng):
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)
    model = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3, activation="softmax")], seed=0)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.predict(x)  # build everything once before the threads start
    done, failures = threading.Event(), []

    def keep_predicting():
        while not done.is_set():
            try:
                assert model.predict(x[:5]).shape == (5, 3)
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(error)
                return

    reader = threading.Thread(target=keep_predicting)
    reader.start()
    try:
        history = model.fit(x, y, epochs=6, batch_size=4, verbose=0)
    finally:
        done.set()
        reader.join()
    assert not failures and len(history["loss"]) == 6


def test_two_threads_training_one_model_get_an_error_never_a_wrong_loss(backend, rng):
    model = Sequential([Dense(16, activation="tanh", input_dim=8), Dense(1, activation="sigmoid")], dtype="float64")
    model.compile(loss="binary_crossentropy")
    batches = [(model.as_input(rng.normal(size=(16, 8))), model.prepare_targets(rng.integers(0, 2, size=(16, 1)), 16))
               for _ in range(2)]
    expected = [float(model.compute_gradients(x, y)) for x, y in batches]
    wrong, refused, barrier = [], [], threading.Barrier(2)

    def train(index):
        x, y = batches[index]
        barrier.wait()
        for _ in range(200):
            try:
                loss = float(model.compute_gradients(x, y))
            except ToolkitError as error:
                refused.append(error)
                continue
            if abs(loss - expected[index]) > 1e-12 * abs(expected[index]):
                wrong.append(loss)

    threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
    assert all("another thread" in str(error) for error in refused)


def test_a_step_in_progress_refuses_a_second_one(backend):
    model = Sequential([Dense(1, input_dim=2)])
    model.compile(loss="mse")
    with model._exclusive("test"), pytest.raises(ToolkitError, match="running a training step in another thread"):
        model.train_step(np.ones((2, 2)), np.ones((2, 1)))


# 6. NumPy scalars from argparse, configs and sweeps ---------------------------------------------
def test_numpy_scalars_are_numbers(backend):
    model = Sequential([Dense(np.int64(4), activation="relu", input_dim=np.int64(3)), Dense(np.int32(1))])
    model.compile(loss="mse", optimizer=toolkit.SGD(lr=np.float32(0.01), momentum=np.float64(0.9)))
    history = model.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=np.int64(2), batch_size=np.int64(4), verbose=0)
    assert len(history["loss"]) == 2
    with pytest.raises(InputError, match=r"batch_size must be an integer ≥ 1; got True"):
        model.fit(np.ones((8, 3)), np.ones((8, 1)), batch_size=True, verbose=0)
    with pytest.raises(InputError, match=r"epochs must be an integer ≥ 0; got 1.5"):
        model.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=1.5, verbose=0)


# 7. Seeds and schedules --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["abc", -1, 1.5])
def test_a_bad_seed_is_named(backend, seed):
    with pytest.raises(InputError, match=r"seed must be None or an integer ≥ 0; got"):
        Sequential([Dense(1, input_dim=2)], seed=seed)
    model = Sequential([Dense(1, input_dim=2)])
    model.compile(loss="mse")
    with pytest.raises(InputError, match=r"seed must be None or an integer ≥ 0; got"):
        model.fit(np.ones((2, 2)), np.ones((2, 1)), seed=seed, verbose=0)


def test_a_schedule_returning_none_is_named(backend):
    model = Sequential([Dense(1, input_dim=2)])
    model.compile(loss="mse")
    with pytest.raises(InputError, match=r"LearningRateScheduler: the schedule gave None at epoch 0"):
        model.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0, callbacks=[LearningRateScheduler(lambda epoch: None)])


# 8. Values that overflow the model's dtype -------------------------------------------------------
def test_values_too_large_for_float32_are_named_not_called_nan(backend):
    model = Sequential([Dense(1, input_dim=2)])  # float32
    model.compile(loss="mse")
    x = np.array([[1e39, 0.0], [1.0, 2.0]])
    for action in (lambda: model.fit(x, np.ones((2, 1)), verbose=0), lambda: model.predict(x)):
        with pytest.raises(InputError, match=r"1 finite value\(s\) too large for the model's float32"):
            action()


# 9. Ragged lists and tensors that require grad ---------------------------------------------------
def test_a_ragged_list_is_a_clear_error(backend):
    model = Sequential([Dense(1, input_dim=2)])
    with pytest.raises(InputError, match=r"nested list cannot be an array .*give every row the same length"):
        model.predict([[1.0, 2.0], [3.0]])


def test_a_torch_tensor_that_requires_grad_is_a_clear_error(backend):
    torch = pytest.importorskip("torch")
    model = Sequential([Dense(1, input_dim=2)])
    with pytest.raises(InputError, match=r"torch tensor that requires grad.*tensor.detach\(\)"):
        model.predict(torch.ones((2, 2), requires_grad=True))


# 10. Initialisers do not change what weights mean ------------------------------------------------
def test_load_weights_ignores_how_weights_were_first_drawn(backend, tmp_path):
    path = tmp_path / "m.safetensors"
    source = Sequential([Dense(3, activation="relu", kernel_initializer="he_normal", input_dim=2)])
    toolkit.save(source, path)
    target = Sequential([Dense(3, activation="relu", kernel_initializer="uniform", input_dim=2)])
    toolkit.load_weights(target, path)
    for name, value in source.get_weights().items():
        np.testing.assert_array_equal(target.get_weights()[name], value)
    other = Sequential([Dense(3, activation="tanh", input_dim=2)])  # what the weights compute differs
    with pytest.raises(CheckpointError, match="different architecture"):
        toolkit.load_weights(other, path)


# 11. File permissions of checkpoints --------------------------------------------------------------
def test_checkpoints_honour_the_umask_and_refuse_read_only_files(numpy_backend, tmp_path):
    model = Sequential([Dense(1, input_dim=2)])
    path = tmp_path / "m.safetensors"
    previous = os.umask(0o022)
    try:
        toolkit.save(model, path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="exists and is read-only"):
        toolkit.save(model, path)
    assert path.read_bytes() == before


def test_saving_into_a_missing_directory_names_it(numpy_backend, tmp_path):
    with pytest.raises(CheckpointError, match=r"the directory .*no_such_dir.* does not exist"):
        toolkit.save(Sequential([Dense(1, input_dim=2)]), tmp_path / "no_such_dir" / "m.safetensors")


