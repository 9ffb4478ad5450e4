"""Save/load: one safetensors file, bit-identical across backends, atomic, and every damaged or
mismatched file refused with the model left untouched."""

import os

import numpy as np
import pytest

import toolkit
from toolkit import CheckpointError, Dense, Sequential
from toolkit.callbacks import Callback


def trained_model(optimizer="adam", seed=0):
    model = Sequential([Dense(6, activation="relu", input_dim=4), Dense(3, activation="softmax")], seed=seed)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(32, 4)), rng.integers(0, 3, size=32), epochs=2, verbose=0)
    return model


def test_round_trip_on_every_backend_is_bit_identical(backend, tmp_path):
    path = tmp_path / "model.safetensors"
    with toolkit.use_backend("numpy"):
        original = trained_model()
        toolkit.save(original, path)
    restored = toolkit.load(path)  # on the test's backend
    assert restored.backend.name == backend.name
    for name, value in original.get_weights().items():
        np.testing.assert_array_equal(restored.get_weights()[name], value)
    assert restored.optimizer.name == "adam" and restored.optimizer.iterations == original.optimizer.iterations
    assert [m.name for m in restored.metrics] == ["accuracy"]
    x = np.random.default_rng(1).normal(size=(5, 4))
    np.testing.assert_allclose(restored.backend.to_host(restored.predict(x)),
                               original.backend.to_host(original.predict(x)), rtol=1e-6)


def test_training_resumes_exactly_after_load(numpy_backend, tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(32, 4)), rng.integers(0, 3, size=32)
    model = trained_model()
    toolkit.save(model, tmp_path / "a.safetensors")
    copy = toolkit.load(tmp_path / "a.safetensors")
    model.fit(x, y, epochs=1, verbose=0, seed=9)
    copy.fit(x, y, epochs=1, verbose=0, seed=9)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(copy.get_weights()[name], value)


def test_file_is_not_pickle_and_names_its_architecture(numpy_backend, tmp_path):
    path = tmp_path / "m.safetensors"
    toolkit.save(trained_model(), path)
    header_size = int.from_bytes(path.read_bytes()[:8], "little")
    header = path.read_bytes()[8 : 8 + header_size].decode()
    assert '"class\\": \\"Dense\\"' in header and "toolkit.sha256" in header


@pytest.fixture
def saved(tmp_path):
    with toolkit.use_backend("numpy"):
        path = tmp_path / "good.safetensors"
        toolkit.save(trained_model(), path)
        yield path


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "flipped-byte":
        data[-3] ^= 0xFF
    elif how == "empty":
        data = bytearray()
    elif how == "not-a-checkpoint":
        data = bytearray(b"hello, I am a text file\n" * 10)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how,message", [
    ("truncated", "truncated"),
    ("flipped-byte", "corrupted"),
    ("empty", "not a toolkit checkpoint"),
    ("not-a-checkpoint", "not a toolkit checkpoint"),
])
def test_damaged_files_are_refused_and_the_model_is_untouched(backend, saved, how, message):
    _damage(saved, how)
    with pytest.raises(CheckpointError, match=message):
        toolkit.load(saved)
    model = trained_model(seed=5)
    before = model.get_weights()
    with pytest.raises(CheckpointError, match=message):
        toolkit.load_weights(model, saved)
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        toolkit.load(tmp_path / "nope.safetensors")


def test_other_architecture_is_refused_and_model_untouched(numpy_backend, saved):
    other = Sequential([Dense(7, activation="relu", input_dim=4), Dense(3, activation="softmax")])
    other.compile(loss="categorical_crossentropy", optimizer="adam")
    before = other.get_weights()
    with pytest.raises(CheckpointError, match="different architecture"):
        toolkit.load_weights(other, saved)
    for name, value in other.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


def test_crash_during_save_keeps_the_previous_checkpoint(numpy_backend, saved, monkeypatch):
    good = saved.read_bytes()
    import toolkit_backends.checkpoint_io as checkpoint_io

    def crash(*args, **kwargs):
        raise OSError("simulated crash: disk pulled mid-write")

    monkeypatch.setattr(checkpoint_io.os, "fsync", crash)
    with pytest.raises(CheckpointError, match=f"cannot save to '{saved}': simulated crash"):
        toolkit.save(trained_model(seed=3), saved)
    assert saved.read_bytes() == good
    assert [f for f in os.listdir(saved.parent) if ".tmp-" in f] == []
    toolkit.load(saved)


def test_checkpoint_callback_writes_each_epoch(numpy_backend, tmp_path):
    from toolkit.callbacks import ModelCheckpoint

    rng = np.random.default_rng(0)
    model = trained_model()
    model.fit(rng.normal(size=(16, 4)), rng.integers(0, 3, size=16), epochs=2, verbose=0,
              callbacks=[ModelCheckpoint(str(tmp_path / "e{epoch}.safetensors"))])
    assert sorted(os.listdir(tmp_path)) == ["e1.safetensors", "e2.safetensors"]
    assert isinstance(ModelCheckpoint("x"), Callback)
