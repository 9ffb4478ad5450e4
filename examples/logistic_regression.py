"""The textbook's "is this a cat?" as one neuron: ŷ = σ(wᵀx + b) with binary cross-entropy,
on scikit-learn's breast-cancer set (malignant or benign).

    python examples/logistic_regression.py [--epochs N]
"""

from __future__ import annotations

import argparse

from _datasets import load

import toolkit
from toolkit import SGD, Dense, Sequential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50, help="passes over the training data (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load("breast_cancer")
    neuron = Sequential([Dense(1, activation="sigmoid", input_dim=x_train.shape[1])], seed=0)
    neuron.compile(loss="binary_crossentropy", optimizer=SGD(lr=0.1), metrics=["accuracy", "precision", "recall"])
    neuron.fit(x_train, y_train.astype("float64"), epochs=args.epochs, batch_size=32, verbose=args.verbose)
    scores = neuron.evaluate(x_test, y_test.astype("float64"))
    print(f"backend: {toolkit.get_backend().name}")
    print(f"test accuracy: {scores['accuracy']:.4f}  precision: {scores['precision']:.4f}  recall: {scores['recall']:.4f}")


if __name__ == "__main__":
    main()
