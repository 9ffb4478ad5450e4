"""fit / evaluate / predict, seeded reproducibility across backends, callbacks, progress, plots."""

import io

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from tests.helpers import build_mlp
from toolkit import Dense, Sequential, TrainingDiverged
from toolkit.callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint, TerminateOnNaN
from toolkit.schedules import StepDecay


def blobs(rng, n=120, classes=3):
    centers = rng.normal(size=(classes, 4)) * 3
    labels = rng.integers(0, classes, size=n)
    return centers[labels] + rng.normal(size=(n, 4)), labels


def classifier(optimizer="adam", dtype="float32", seed=0):
    model = build_mlp([4, 16, 3], ["relu", "softmax"], "categorical_crossentropy", dtype=dtype, seed=seed,
                      optimizer=optimizer)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def test_fit_learns_and_reports(backend, rng):
    x, y = blobs(rng)
    model = classifier(toolkit.Adam(lr=0.01))
    history = model.fit(x, y, epochs=15, batch_size=16, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == 15 and history.epoch == list(range(15))
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    scores = model.evaluate(x, y)
    assert scores["accuracy"] > 0.9
    probabilities = to_numpy(backend, model.predict(x, batch_size=7))
    assert probabilities.shape == (120, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    predicted = probabilities.argmax(axis=1)
    assert np.mean(predicted == y) == pytest.approx(scores["accuracy"])


def test_one_epoch_is_the_same_on_every_backend(backend, rng):
    """Same seed, same shuffling, same weights after an epoch (float64, 1e-10)."""
    x, y = blobs(rng, n=50)

    def train(spec):
        with toolkit.use_backend(spec):
            model = classifier("adam", dtype="float64", seed=3)
            model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=5)
            return model.get_weights()

    ours = train(backend.name if backend.name != "array_api_strict" else "array_api_strict")
    reference = train("numpy")
    for name in reference:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-10, atol=1e-12)


def test_shuffle_false_and_batch_bigger_than_data(numpy_backend, rng):
    x, y = blobs(rng, n=10)
    a, b = classifier("sgd", seed=1), classifier("sgd", seed=1)
    a.fit(x, y, epochs=2, batch_size=100, shuffle=False, verbose=0)
    b.fit(x, y, epochs=2, batch_size=100, shuffle=True, verbose=0)  # one batch: order does not matter
    for name, value in a.get_weights().items():
        np.testing.assert_allclose(value, b.get_weights()[name], rtol=1e-5)


def test_zero_epochs_trains_nothing(numpy_backend, rng):
    x, y = blobs(rng, n=10)
    model = classifier()
    before = model.get_weights()
    assert model.fit(x, y, epochs=0, verbose=0).history == {}
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])


def test_early_stopping_restores_best_weights(numpy_backend, rng):
    x, y = blobs(rng)
    model = classifier(toolkit.SGD(lr=0.5))

    class Snapshots(toolkit.callbacks.Callback):
        def on_train_begin(self):
            self.weights = []

        def on_epoch_end(self, epoch, logs):
            self.weights.append(self.model.get_weights())

    snapshots = Snapshots()
    stopper = EarlyStopping(monitor="loss", patience=1, min_delta=10.0)  # nothing after epoch 1 counts as better
    history = model.fit(x, y, epochs=20, batch_size=16, callbacks=[snapshots, stopper], verbose=0)
    assert len(history["loss"]) == 3 and stopper.stopped_epoch == 2 and stopper.best_epoch == 0
    assert stopper.best == history["loss"][0]
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, snapshots.weights[0][name])
        assert not np.array_equal(value, snapshots.weights[2][name])


def test_learning_rate_scheduler_sets_and_logs_lr(numpy_backend, rng):
    x, y = blobs(rng, n=20)
    model = classifier(toolkit.SGD(lr=1.0))
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[LearningRateScheduler(StepDecay(0.1, 2, 0.5))])
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert model.optimizer.lr == pytest.approx(0.05)


def test_checkpoint_saves_best(numpy_backend, rng, tmp_path):
    x, y = blobs(rng, n=40)
    model = classifier()
    path = tmp_path / "best.safetensors"
    model.fit(x, y, epochs=3, verbose=0, validation_split=0.25,
              callbacks=[ModelCheckpoint(str(path), monitor="val_loss", save_best_only=True)])
    restored = toolkit.load(path)
    assert restored.optimizer.iterations > 0
    assert set(restored.get_weights()) == {"0.W", "0.b", "1.W", "1.b"}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_loss_stops_with_epoch_and_batch_and_keeps_weights(backend, rng):
    x, y = blobs(rng, n=32)
    model = classifier(toolkit.SGD(lr=1e30))  # diverges within a few steps
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch \d+, batch \d+") as caught:
        model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert "weights from before this step are kept" in str(caught.value)
    weights = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights.values())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_terminate_on_nan_stops_quietly(numpy_backend, rng):
    x, y = blobs(rng, n=32)
    model = classifier(toolkit.SGD(lr=1e30))
    with pytest.warns(RuntimeWarning, match="loss became"):
        history = model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[TerminateOnNaN()])
    assert len(history.epoch) < 5


def test_progress_one_line_per_epoch_off_a_terminal(numpy_backend, rng, capsys):
    x, y = blobs(rng, n=20)
    classifier().fit(x, y, epochs=3, verbose=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert len(lines) == 3 and "loss=" in lines[0] and "accuracy=" in lines[0]


def test_progress_silent_with_verbose_0(numpy_backend, rng, capsys):
    x, y = blobs(rng, n=20)
    classifier().fit(x, y, epochs=2, verbose=0)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal(numpy_backend, rng):
    from toolkit.progress import Progress

    stream = FakeTerminal()
    progress = Progress(1, epochs=1, steps_per_epoch=4, stream=stream)
    progress.epoch_begin(0)
    for step in range(4):
        progress.batch_end(lambda step=step: 1.0 / (step + 1))
    progress.epoch_end(0, {"loss": 0.25}, 0.1)
    output = stream.getvalue()
    assert "epoch 1/1" in output and "4/4" in output and "loss=0.25" in output


def test_plot_history(numpy_backend, rng, tmp_path):
    from toolkit.plotting import plot_history

    x, y = blobs(rng, n=30)
    history = classifier().fit(x, y, epochs=2, verbose=0, validation_split=0.2)
    path = plot_history(history, tmp_path / "curves.png")
    with open(path, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"


def test_regression_metrics(backend, rng):
    x = rng.normal(size=(64, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1
    model = Sequential([Dense(1, input_dim=3)], dtype="float64")
    model.compile(loss="mse", optimizer=toolkit.SGD(lr=0.1), metrics=["mae", "mse"])
    history = model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    assert history["mse"][-1] == pytest.approx(history["loss"][-1])
    assert model.evaluate(x, y)["mae"] < 0.01


def test_binary_metrics_hand_worked(numpy_backend):
    from toolkit.metrics import F1, Precision, Recall

    pred = np.array([[0.9], [0.8], [0.2], [0.6], [0.1]])
    y = np.array([[1.0], [0.0], [1.0], [1.0], [0.0]])  # TP=2, FP=1, FN=1
    for metric, expected in ((Precision(), 2 / 3), (Recall(), 2 / 3), (F1(), 2 / 3)):
        metric.update(pred, y, numpy_backend.xp)
        assert metric.result() == pytest.approx(expected)
