"""Data that is not an array in memory: ``toolkit.data.Dataset`` (memory-mapped arrays read batch by
batch), generators, lists of batches, PyTorch DataLoaders; prefetching; bad batches mid-epoch."""

import threading

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from toolkit import BatchNorm, Dense, Dropout, InputError, Sequential, ShapeError
from toolkit.data import Dataset


def make_model(seed=1):
    model = Sequential([Dense(8, activation="tanh", input_dim=6), BatchNorm(), Dropout(0.2),
                        Dense(3, activation="softmax")], dtype="float64", seed=seed)
    model.compile(loss="categorical_crossentropy", optimizer=toolkit.Adam(lr=0.01), metrics=["accuracy"])
    return model


@pytest.fixture
def problem():
    rng = np.random.default_rng(12)
    return rng.normal(size=(70, 6)), rng.integers(0, 3, size=70)


def _same_weights(a, b):
    for name, value in a.get_weights().items():
        np.testing.assert_array_equal(b.get_weights()[name], value)
    for name, value in a.get_state().items():
        np.testing.assert_array_equal(b.get_state()[name], value)


def _unprefetched_threads():
    return [t for t in threading.enumerate() if t.name == "toolkit-prefetch"]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_memory_mapped_dataset_trains_exactly_as_the_arrays_in_memory(backend, problem, tmp_path, prefetch):
    x, y = problem
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    on_disk = Dataset(np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r"))
    in_memory, streamed = make_model(), make_model()
    in_memory.fit(x, y, epochs=2, batch_size=16, seed=5, verbose=0)
    streamed.fit(on_disk, epochs=2, batch_size=16, seed=5, verbose=0, prefetch=prefetch)
    _same_weights(in_memory, streamed)
    assert not _unprefetched_threads()


def test_lists_generators_and_dataloaders_equal_unshuffled_arrays(backend, problem):
    x, y = problem
    reference = make_model()
    reference.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 70, 16)]

    def generator():
        yield from batches

    listed = make_model()
    listed.fit(batches, epochs=2, verbose=0)
    _same_weights(reference, listed)
    endless = make_model()
    endless.fit((batch for _ in range(2) for batch in generator()), epochs=2, steps_per_epoch=5, verbose=0)
    _same_weights(reference, endless)
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16, shuffle=False)
    loaded = make_model()
    history = loaded.fit(loader, epochs=2, verbose=0)
    _same_weights(reference, loaded)
    assert len(history["loss"]) == 2


def test_cpu_tensors_reach_numpy_without_a_copy():
    torch = pytest.importorskip("torch")
    model = Sequential([Dense(2, input_dim=3)], dtype="float64", backend="numpy")
    tensor = torch.ones((4, 3), dtype=torch.float64)
    assert np.shares_memory(model.as_input(tensor), tensor.numpy())


def test_evaluate_and_predict_take_datasets_and_streams(backend, problem):
    x, y = problem
    model = make_model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    expected = model.evaluate(x, y)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 70, 16)]
    assert model.evaluate(Dataset(x, y), batch_size=9) == pytest.approx(expected, rel=1e-12)
    assert model.evaluate(iter(batches)) == pytest.approx(expected, rel=1e-12)
    predicted = to_numpy(backend, model.predict(x))
    np.testing.assert_allclose(to_numpy(backend, model.predict(Dataset(x), batch_size=20)), predicted, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(backend, model.predict(b[0] for b in batches)), predicted, rtol=1e-12)
    history = model.fit(Dataset(x, y), epochs=1, validation_data=iter(batches), verbose=0)
    assert "val_loss" in history.history


def test_steps_per_epoch_draws_exactly_that_many_batches_from_an_endless_stream(problem):
    x, y = problem
    drawn = []

    def endless():
        while True:
            drawn.append(len(drawn))
            yield x[:10], y[:10]

    model = make_model()
    model.compile(loss="categorical_crossentropy", optimizer="sgd")
    history = model.fit(endless(), epochs=3, steps_per_epoch=4, verbose=0)
    assert len(history["loss"]) == 3 and len(drawn) == 12 and model.random_step == 12


# -- bad data mid-epoch ------------------------------------------------------------------------


def _after_first_batch(x, y):
    model = make_model()
    model.fit([(x[:16], y[:16])], epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("second,error,message", [
    (lambda x, y: (x[16:32, :5], y[16:32]), ShapeError, "batch 2 of epoch 1: inputs have 5 features"),
    (lambda x, y: (x[16:32].astype(np.int64), y[16:32]), InputError, "batch 2 of epoch 1: inputs have dtype int64"),
    (lambda x, y: (x[16:32], y[16:30]), ShapeError, "batch 2 of epoch 1: .*14 labels for 16 predictions"),
    (lambda x, y: (np.full((16, 6), np.nan), y[16:32]), InputError, "batch 2 of epoch 1: inputs contain 96 NaN"),
])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_bad_batch_names_its_index_and_keeps_the_weights_from_before_it(backend, problem, second, error, message,
                                                                           prefetch):
    x, y = problem
    model = make_model()
    with pytest.raises(error, match=message):
        model.fit(iter([(x[:16], y[:16]), second(x, y), (x[32:48], y[32:48])]), epochs=1, verbose=0, prefetch=prefetch)
    _same_weights(_after_first_batch(x, y), model)
    assert not _unprefetched_threads()


def test_a_stream_that_raises_keeps_the_weights_and_says_where(problem):
    x, y = problem

    def failing():
        yield x[:16], y[:16]
        raise OSError("the disk went away")

    model = make_model()
    with pytest.raises(OSError, match="the disk went away") as caught:
        model.fit(failing(), epochs=1, verbose=0)
    assert "batch 2 of epoch 1" in " ".join(caught.value.__notes__)
    _same_weights(_after_first_batch(x, y), model)


def test_empty_and_exhausted_streams_and_misuse(problem):
    x, y = problem
    model = make_model()
    with pytest.raises(InputError, match="no batches in epoch 1"):
        model.fit(iter([]), verbose=0)
    with pytest.raises(InputError, match="a generator can be read once"):
        model.fit(((x[i : i + 16], y[i : i + 16]) for i in range(0, 70, 16)), epochs=2, verbose=0)
    with pytest.raises(InputError, match="brings its own targets"):
        model.fit(Dataset(x, y), y)
    with pytest.raises(InputError, match="validation_split needs arrays"):
        model.fit(Dataset(x, y), validation_split=0.2)
    with pytest.raises(InputError, match="steps_per_epoch applies to streams"):
        model.fit(x, y, steps_per_epoch=3)
    with pytest.raises(ShapeError, match="x has 70 rows but y has 69"):
        Dataset(x, y[:-1])
    with pytest.raises(InputError, match="predict got no batches"):
        model.predict(iter([]))
