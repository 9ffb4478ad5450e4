"""What a Keras user types first works, and does what Keras does: ``Sequential().add``,
``model.save``/``toolkit.load``, ``save_weights``/``load_weights``, ``input_shape=`` on any first
layer, ``metrics="accuracy"``, ``fit(initial_epoch, class_weight, sample_weight)``,
``evaluate(return_dict=False)``; and the messages that say what happened (binary metrics,
a validation split holding unseen classes, EarlyStopping, 80 columns)."""

from __future__ import annotations

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from toolkit import SGD, Dense, Dropout, Flatten, InputError, LayerNorm, Sequential
from toolkit.callbacks import EarlyStopping
from toolkit.layers.base import layer_record

RNG = np.random.default_rng(20261201)
X = RNG.normal(size=(12, 4))
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 1, 0])


def _classifier(dtype="float64", seed=3):
    return Sequential([Dense(3, activation="softmax", input_shape=(4,))], dtype=dtype, seed=seed)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _weighted_sgd_step(weights, bias, weights_per_row, lr):
    """One SGD step of softmax regression on the weighted loss (1/N) Σᵢ wᵢ lᵢ, by hand."""
    p = _softmax(X @ weights + bias)
    delta = weights_per_row[:, None] * (p - np.eye(3)[LABELS]) / len(X)
    return weights - lr * X.T @ delta, bias - lr * delta.sum(axis=0)


@pytest.mark.parametrize("how", ["sample_weight", "class_weight"])
def test_weights_scale_each_sample_loss_as_keras_does(backend, how):
    model = _classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer=SGD(0.5))
    start = model.get_weights()
    class_weight = {0: 0.5, 1: 2.0}  # class 2 left out: weight 1
    per_row = np.array([class_weight.get(int(c), 1.0) for c in LABELS]) if how == "class_weight" else RNG.uniform(0, 3, 12)
    given = {"class_weight": class_weight} if how == "class_weight" else {"sample_weight": per_row}
    history = model.fit(X, LABELS, epochs=1, batch_size=12, shuffle=False, verbose=0, **given)
    expected_w, expected_b = _weighted_sgd_step(start["0.W"], start["0.b"], per_row, 0.5)
    after = model.get_weights()
    np.testing.assert_allclose(after["0.W"], expected_w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(after["0.b"], expected_b, rtol=1e-10, atol=1e-12)
    p = _softmax(X @ start["0.W"] + start["0.b"])
    expected_loss = np.mean(per_row * -np.log(p[np.arange(12), LABELS]))
    assert history["loss"][0] == pytest.approx(expected_loss, rel=1e-10)


def test_weight_zero_rows_are_skipped_by_accuracy_and_ignored_by_the_loss(numpy_backend):
    model = _classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer=SGD(0.1), metrics="accuracy")
    weights = np.ones(12)
    weights[:6] = 0.0
    p = _softmax(X @ model.get_weights()["0.W"] + model.get_weights()["0.b"])
    history = model.fit(X, LABELS, epochs=1, batch_size=12, verbose=0, sample_weight=weights)
    counted = p[6:].argmax(axis=1) == LABELS[6:]
    assert history["accuracy"][0] == pytest.approx(counted.mean())
    assert history["loss"][0] == pytest.approx(np.mean(weights * -np.log(p[np.arange(12), LABELS])), rel=1e-10)


@pytest.mark.parametrize("bad,message", [
    ({"sample_weight": np.ones(5)}, r"sample_weight has shape \(5,\); give one weight per sample, shape \(12,\)"),
    ({"sample_weight": -np.ones(12)}, r"sample_weight must hold finite numbers ≥ 0"),
    ({"class_weight": {7: 2.0}}, r"class_weight has the key 7, which is not a class label of this model"),
    ({"class_weight": {0: float("nan")}}, r"class_weight\[0\] = nan; weights must be finite numbers ≥ 0"),
])
def test_bad_weights_are_clear_errors_and_leave_the_model_untouched(numpy_backend, bad, message):
    model = _classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    before = model.get_weights()
    with pytest.raises((InputError, toolkit.ShapeError), match=message):
        model.fit(X, LABELS, verbose=0, **bad)
    assert all(np.array_equal(before[k], v) for k, v in model.get_weights().items())


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
def test_weights_on_losses_not_linear_in_their_targets(backend, loss):
    """MSE and BCE carry [y, w] targets: one SGD step and the loss equal the hand computation of
    (1/N) Σᵢ wᵢ lᵢ, metrics count each sample of weight > 0 once, and class_weight on one sigmoid output
    weighs classes 0 and 1."""
    yes = (LABELS == 1).astype(float)
    activation = "sigmoid" if loss == "binary_crossentropy" else None
    model = Sequential([Dense(1, activation=activation, input_shape=(4,))], dtype="float64", seed=4)
    model.compile(loss=loss, optimizer=SGD(0.3), metrics=["accuracy"] if activation else ["mae"])
    start = model.get_weights()
    per_row = RNG.uniform(0, 2, 12)
    per_row[0] = 0.0
    history = model.fit(X, yes, epochs=1, batch_size=12, shuffle=False, verbose=0, sample_weight=per_row)
    z = X @ start["0.W"][:, 0] + start["0.b"][0]
    if activation:
        p = 1 / (1 + np.exp(-z))
        per_sample_loss, delta = -(yes * np.log(p) + (1 - yes) * np.log(1 - p)), per_row * (p - yes) / 12
        counted = (p >= 0.5) == (yes >= 0.5)
        np.testing.assert_allclose(history["accuracy"][0], counted[1:].mean())  # the weight-0 sample skipped
    else:
        per_sample_loss, delta = (z - yes) ** 2, 2 * per_row * (z - yes) / 12
        np.testing.assert_allclose(history["mae"][0], np.abs(z - yes).mean())
    np.testing.assert_allclose(model.get_weights()["0.W"][:, 0], start["0.W"][:, 0] - 0.3 * X.T @ delta, rtol=1e-10)
    assert history["loss"][0] == pytest.approx(np.mean(per_row * per_sample_loss), rel=1e-10)
    if activation:
        again = Sequential([Dense(1, activation="sigmoid", input_shape=(4,))], dtype="float64", seed=4)
        again.compile(loss=loss, optimizer=SGD(0.3))
        again.fit(X, yes, epochs=1, batch_size=12, shuffle=False, verbose=0, class_weight={1: 3.0})
        by_class = np.where(yes == 1, 3.0, 1.0) * (p - yes) / 12
        np.testing.assert_allclose(again.get_weights()["0.W"][:, 0], start["0.W"][:, 0] - 0.3 * X.T @ by_class,
                                   rtol=1e-10)


def test_a_loss_of_your_own_without_weights_says_how_to_add_them(numpy_backend):
    from toolkit.losses import MeanSquaredError

    class Mine(MeanSquaredError):
        name = "mine"

        def weight_targets(self, y, weights, xp):
            return toolkit.Loss.weight_targets(self, y, weights, xp)

    model = Sequential([Dense(1, input_shape=(4,))])
    model.compile(loss=Mine(), optimizer="sgd")
    with pytest.raises(InputError, match=r"the loss mine cannot take sample_weight or class_weight: a loss of your "
                                         r"own takes them by defining weight_targets"):
        model.fit(X, X[:, 0], sample_weight=np.ones(12), verbose=0)


def test_sequential_add_builds_the_same_model_as_the_list(backend):
    listed = Sequential([Dense(5, activation="relu", input_shape=(4,)), Dense(3, activation="softmax")], seed=11)
    added = Sequential(seed=11)
    added.add(Dense(5, activation="relu", input_shape=(4,)))
    added.add(Dense(3, activation="softmax"))
    for name, value in listed.get_weights().items():
        np.testing.assert_array_equal(added.get_weights()[name], value)
    np.testing.assert_array_equal(to_numpy(backend, added.predict(X)), to_numpy(backend, listed.predict(X)))


def test_add_to_a_built_model_keeps_the_earlier_weights_and_refuses_after_training(numpy_backend):
    model = Sequential([Dense(5, input_shape=(4,))], seed=2)
    first = model.get_weights()["0.W"].copy()
    model.add(Dense(2, activation="softmax"))
    np.testing.assert_array_equal(model.get_weights()["0.W"], first)
    assert model.output_shape == (2,)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    model.fit(X, LABELS % 2, verbose=0)
    with pytest.raises(InputError, match="this model has trained already"):
        model.add(Dense(2))
    assert len(model.layers) == 2
    with pytest.raises(InputError, match="has no layers yet"):
        Sequential().build((3,))


def test_save_and_load_as_keras_names_them(numpy_backend, tmp_path):
    model = _classifier(seed=5)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics="accuracy")
    model.fit(X, LABELS, epochs=2, verbose=0)
    model.save(tmp_path / "model.safetensors")
    again = toolkit.load(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert again.evaluate(X, LABELS) == model.evaluate(X, LABELS)
    model.save_weights(tmp_path / "weights.safetensors")
    other = _classifier(seed=99)
    other.load_weights(tmp_path / "weights.safetensors")
    np.testing.assert_array_equal(other.predict(X), model.predict(X))


@pytest.mark.parametrize("first,shape", [
    (lambda: Flatten(input_shape=(2, 2)), (2, 2)),
    (lambda: Dropout(0.2, input_shape=(4,)), (4,)),
    (lambda: LayerNorm(input_shape=4), (4,)),
])
def test_any_first_layer_takes_input_shape_and_a_checkpoint_keeps_it(numpy_backend, tmp_path, first, shape):
    model = Sequential([first(), Dense(3)])
    assert model.built and model.input_shape == shape
    assert layer_record(model.layers[0])["config"]["input_shape"] == list(shape)
    model.save(tmp_path / "m.safetensors")
    assert toolkit.load(tmp_path / "m.safetensors").input_shape == shape
    with pytest.raises(InputError, match="input_shape must be an integer ≥ 1"):
        Dropout(0.1, input_shape=(0,))


def test_metrics_as_a_string_and_evaluate_in_keras_form(numpy_backend):
    model = _classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics="accuracy")
    assert [m.name for m in model.metrics] == ["accuracy"]
    as_dict = model.evaluate(X, LABELS)
    assert model.evaluate(X, LABELS, return_dict=False) == [as_dict["loss"], as_dict["accuracy"]]
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    assert model.evaluate(X, LABELS, return_dict=False) == as_dict["loss"]


def test_initial_epoch_resumes_the_epoch_count(numpy_backend):
    model = _classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    history = model.fit(X, LABELS, epochs=5, initial_epoch=3, verbose=0)
    assert history.epoch == [3, 4] and len(history["loss"]) == 2
    assert model.optimizer.iterations == 2  # one batch of 12 per epoch, two epochs
    with pytest.raises(InputError, match="initial_epoch"):
        model.fit(X, LABELS, initial_epoch=-1, verbose=0)


def test_binary_metrics_on_several_outputs_are_refused_at_compile_or_before_the_first_step(numpy_backend):
    model = _classifier()
    with pytest.raises(InputError, match=r"precision, recall count yes/no predictions"):
        model.compile(loss="sparse_categorical_crossentropy", metrics=["precision", "recall"])
    unbuilt = Sequential([Dense(3, activation="softmax")])
    unbuilt.compile(loss="sparse_categorical_crossentropy", metrics=["f1"])
    with pytest.raises(InputError, match=r"f1 counts yes/no predictions"):
        unbuilt.fit(X, LABELS, verbose=0)
    assert unbuilt.optimizer.iterations == 0


def test_a_validation_split_with_unseen_classes_warns(numpy_backend):
    order = np.argsort(LABELS, kind="stable")
    model = _classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    with pytest.warns(UserWarning, match=r"contain classes \[2\] that no training row has"):
        model.fit(X[order], LABELS[order], validation_split=1 / 3, verbose=0)  # the last 4 rows: the four 2s
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, LABELS, validation_split=0.25, verbose=0)  # every class on both sides


def test_early_stopping_says_when_it_stopped_and_which_weights_it_kept(numpy_backend, capsys):
    model = _classifier()
    model.compile(loss="sparse_categorical_crossentropy", optimizer=SGD(5.0))
    flat = np.zeros(12, dtype=int)  # nothing to learn on the validation rows: val_loss soon rises
    model.fit(X, LABELS, epochs=40, validation_data=(X, flat), callbacks=[EarlyStopping(patience=1)], verbose=0)
    out = capsys.readouterr().out
    assert "EarlyStopping: stopped after epoch" in out and "restored the weights of epoch" in out


def test_unknown_names_are_one_exception_type(numpy_backend):
    for make in (lambda: Dense(2, activation="relux"), lambda: Dense(2, kernel_initializer="gloriot"),
                 lambda: _classifier().compile(loss="msee"), lambda: _classifier().compile(loss="mse", optimizer="adamm"),
                 lambda: _classifier().compile(loss="mse", metrics=["acuracy"])):
        with pytest.raises(InputError, match="unknown .* choose one of"):
            make()


def test_summary_fits_80_columns(numpy_backend):
    from toolkit import Embedding, MultiHeadAttention, PositionEmbedding, Residual

    model = Sequential([Embedding(65, 32, input_length=16), PositionEmbedding(16),
                        Residual([LayerNorm(), MultiHeadAttention(4, 8, causal=True, dropout=0.1)]),
                        Dense(65, activation="softmax")])
    text = model.summary(print_fn=None)
    assert max(map(len, text.splitlines())) <= 80
    assert "MultiHeadAttention(4, 8, causal=True," in text and "dropout=0.1)" in text  # wrapped, whole


def test_torch_weights_with_other_activations_load_with_a_warning(numpy_backend):
    torch = pytest.importorskip("torch")
    from toolkit.interop import load_torch_weights

    logits = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model = Sequential([Dense(8, activation="relu", input_shape=(4,)), Dense(3, activation="softmax")])
    with pytest.warns(UserWarning, match=r"the activations differ: the toolkit model applies \['relu', 'softmax'\], "
                                         r"the torch module \['relu'\]"):
        load_torch_weights(model, logits)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_torch_weights(model, torch.nn.Sequential(*logits, torch.nn.Softmax(dim=1)))
    with pytest.raises(toolkit.ShapeError, match=r"BatchNorm1d\(.*\) with weights, which the toolkit cannot map; "
                                                 r"load_torch_weights maps Linear, Conv2d"):
        load_torch_weights(model, torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                                      torch.nn.Linear(8, 3)))
