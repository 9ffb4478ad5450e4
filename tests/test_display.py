"""What a user sees at the prompt: reprs that read like the code, a summary table, the epoch timer."""

import numpy as np
import pytest

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


_BAR_RUN = """
import numpy as np, toolkit
from toolkit import Dense, Sequential
rng = np.random.default_rng(0)
x, y = rng.normal(size=(736, 64)), rng.integers(0, 10, size=736)
model = Sequential([Dense(32, activation="relu", input_dim=64), Dense(10, activation="softmax")])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x, y, epochs=12, batch_size=32, validation_data=(x[:100], y[:100]))
"""


def _run_in_terminal(columns):
    """Run a fit with verbose=1 in a pseudo-terminal ``columns`` wide; the screen's final lines."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    # The terminal's width, not an inherited COLUMNS (pytest-xdist's workers set one), must decide the bar's.
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([sys.executable, "-c", _BAR_RUN], stdin=slave, stdout=slave, stderr=slave,
                               close_fds=True, env={**env, "TOOLKIT_BACKEND": "numpy"})
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert process.wait() == 0, output.decode(errors="replace")
    return [line.split("\r")[-1] for line in output.decode().split("\r\n") if line.strip()]


@pytest.mark.parametrize("columns", [60, 110])
def test_the_bar_keeps_its_width_and_the_metrics_get_their_own_line(numpy_backend, columns):
    lines = _run_in_terminal(columns)
    bars = [line for line in lines if line.startswith("epoch ")]
    metrics = [line for line in lines if line.startswith("  loss=")]
    continued = [line for line in lines if line.startswith("    ")]  # wrapped between metrics, never inside one
    assert len(bars) == 12 and len(metrics) == 12
    assert all(len(line) <= columns for line in metrics + continued)
    if continued:
        metrics = [" ".join(block.split("\n")) for block in "\n".join(
            line for line in lines if line.startswith(("  loss=", "    "))).replace("\n  loss=", "\x00  loss=").split("\x00")]
    for bar in bars:
        assert len(bar) <= columns
        assert bar.count("█") >= 20  # a full bar, not squeezed to one character
        assert "23/23" in bar and "<00:00" in bar  # count and ETA stay visible
    assert bars[-1].startswith("epoch 12/12 100%|")
    for line in metrics:
        assert all(key in line for key in ("loss=", "accuracy=", "val_loss=", "val_accuracy="))


def test_predict_on_zero_rows_returns_an_empty_batch(backend):
    model = Sequential([Dense(4, activation="relu", input_dim=3), Dense(2, activation="softmax")])
    model.compile(loss="categorical_crossentropy")
    empty = model.predict(np.zeros((0, 3)))
    assert tuple(empty.shape) == (0, 2) and empty.dtype == model.dtype
    assert tuple(model.predict(np.zeros((0, 3)), batch_size=8).shape) == (0, 2)
    with pytest.raises(toolkit.InputError, match="empty batch"):
        model.evaluate(np.zeros((0, 3)), np.zeros((0, 2)))
    with pytest.raises(toolkit.ShapeError, match="4 features"):
        model.predict(np.zeros((0, 4)))


def test_a_diverging_fit_raises_without_floating_point_warnings(backend):
    import warnings

    model = Sequential([Dense(16, activation="relu", input_dim=4), Dense(1)], seed=0)
    model.compile(loss="mse", optimizer=toolkit.SGD(lr=1e6))
    x = np.random.default_rng(0).normal(size=(64, 4)) * 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(toolkit.TrainingDiverged):
            model.fit(x, x[:, :1] * 1e3, epochs=50, batch_size=8, verbose=0)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    with pytest.warns(RuntimeWarning, match="overflow"):  # the user's own arithmetic still warns
        np.float64(1e308) * np.float64(10.0)
