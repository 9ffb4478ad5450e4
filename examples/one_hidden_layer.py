"""The textbook's 1-hidden-layer network on real data: "is this handwritten digit an 8?".

    python examples/one_hidden_layer.py                 # fit() with a progress bar
    python examples/one_hidden_layer.py --manual        # the explicit forward/loss/backward/update loop
    TOOLKIT_BACKEND=numba python examples/one_hidden_layer.py

64 pixel features → 32 tanh units → 1 sigmoid unit, binary cross-entropy, mini-batch SGD.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _datasets import load

import toolkit
from toolkit import SGD, Dense, Sequential


def build(seed: int) -> Sequential:
    model = Sequential([Dense(32, activation="tanh", input_dim=64), Dense(1, activation="sigmoid")], seed=seed)
    model.compile(loss="binary_crossentropy", optimizer=SGD(lr=0.1, momentum=0.9), metrics=["accuracy", "f1"])
    return model


def manual_training(model: Sequential, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int) -> None:
    """Mini-batch gradient descent written out: forward, loss, backward (δ terms), update."""
    xp = model.backend.xp
    x, y = model.as_input(x), model.prepare_targets(y, x.shape[0])
    order = np.random.default_rng(0)
    for epoch in range(epochs):
        rows = model.backend.asarray(order.permutation(x.shape[0]))
        total = 0.0
        for start in range(0, x.shape[0], batch_size):
            batch = rows[start : min(start + batch_size, x.shape[0])]  # the standard leaves overshooting slices undefined
            xb, yb = xp.take(x, batch, axis=0), xp.take(y, batch, axis=0)
            model.forward(xb, training=True)        # Z[l] = a[l-1] W[l] + b[l],  a[l] = σ(Z[l])
            loss = model.backward(yb)               # δ[2] = ŷ − y,  δ[1] = (δ[2] W[2]ᵀ) ∘ σ'(Z[1]) → dW, db
            model.apply_gradients()                 # W ← W − η dW (one optimizer step over the flat buffer)
            total += float(loss) * xb.shape[0]
        print(f"epoch {epoch + 1}/{epochs}  loss={total / x.shape[0]:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15, help="passes over the training data (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per gradient step (default: %(default)s)")
    parser.add_argument("--manual", action="store_true", help="use the hand-written training loop")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffling (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load("digits", target=lambda digit: (digit == 8).astype(np.float64))
    model = build(args.seed)
    print(f"backend: {toolkit.get_backend().name}; {x_train.shape[0]} training images, "
          f"{int(y_train.sum())} of them eights")
    started = time.perf_counter()
    if args.manual:
        manual_training(model, x_train, y_train, args.epochs, args.batch_size)
    else:
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose,
                  validation_split=0.1)
    seconds = time.perf_counter() - started
    scores = model.evaluate(x_test, y_test)
    print(f"test accuracy: {scores['accuracy']:.4f}  test F1: {scores['f1']:.4f}  "
          f"(trained in {seconds:.2f}s)")


if __name__ == "__main__":
    main()
