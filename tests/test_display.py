"""What a user sees at the prompt: reprs that read like the code, a summary table, the epoch timer."""

import numpy as np

import toolkit
from toolkit import Adam, Conv2D, Dense, Flatten, MaxPool2D, Sequential


def test_summary_table_lists_shapes_counts_and_totals(backend):
    model = Sequential([Conv2D(6, 5, padding="same", activation="relu", input_shape=(28, 28, 1)), MaxPool2D(2),
                        Flatten(), Dense(10, activation="softmax")])
    printed = []
    text = model.summary(print_fn=printed.append)
    assert printed == [text.rstrip("\n")]
    assert f'backend "{backend.name}", dtype float32' in text
    rows = {line.split()[0]: line for line in text.splitlines() if line[:2] in ("0:", "1:", "2:", "3:")}
    assert "(None, 28, 28, 6)" in rows["0:"] and rows["0:"].endswith("156")  # 5·5·1·6 + 6
    assert "(None, 14, 14, 6)" in rows["1:"] and rows["1:"].endswith(" 0")
    assert "(None, 1176)" in rows["2:"]
    assert "(None, 10)" in rows["3:"] and rows["3:"].endswith("11,770")  # 1176·10 + 10
    assert "Total params: 11,926 (trainable: 11,926, non-trainable: 0)" in text


def test_reprs_read_like_the_code(numpy_backend):
    model = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3, activation="softmax")])
    assert repr(model.layers[0]) == "Dense(8, activation='relu')"
    assert repr(model).splitlines() == ["Sequential(backend='numpy', dtype='float32') [",
                                        "  (0) Dense(8, activation='relu')", "  (1) Dense(3, activation='softmax')", "]"]
    assert repr(Adam(lr=0.01)) == "Adam(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0)"
    assert repr(toolkit.losses.get_loss("softmax_cross_entropy")) == "CategoricalCrossEntropy(from_logits=True)"
    assert repr(numpy_backend) == "Backend('numpy', device='cpu', fused=True)"


def test_short_epochs_show_milliseconds(numpy_backend, capsys):
    model = Sequential([Dense(1, input_dim=2)])
    model.compile(loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=2)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith(" ms)") and "0.00s" not in line
