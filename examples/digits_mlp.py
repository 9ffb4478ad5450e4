"""A 64-128-64-10 ReLU network on the 10-class digits set, trained with Adam; saves a
checkpoint and a loss-curve PNG next to this script (examples/output/).

    python examples/digits_mlp.py [--epochs 30] [--out examples/output]
    mpiexec -n 2 python examples/digits_mlp.py       # data-parallel, the same script
"""

from __future__ import annotations

import argparse
import pathlib
import time

from _datasets import load

import toolkit
from toolkit import Adam, Dense, Sequential
from toolkit.distributed import auto
from toolkit.plotting import plot_history


def build(seed: int = 0) -> Sequential:
    model = Sequential([
        Dense(128, activation="relu", input_dim=64),
        Dense(64, activation="relu"),
        Dense(10, activation="softmax"),
    ], seed=seed)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=1e-3), metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training data (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output",
                        help="folder for the checkpoint and plots (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load("digits")
    model = build()
    parallel = auto()  # several ranks under mpiexec, else None
    started = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=args.verbose,
                        validation_data=(x_test, y_test), distributed=parallel)
    seconds = time.perf_counter() - started
    scores = model.evaluate(x_test, y_test)
    if not model.is_main:
        return  # only rank 0 reports and writes files
    args.out.mkdir(parents=True, exist_ok=True)
    toolkit.save(model, args.out / "digits_mlp.safetensors")
    plot_history(history, args.out / "digits_mlp_curves.png")
    ranks = f" on {parallel.size} ranks" if parallel else ""
    print(f"backend: {toolkit.get_backend().name}; trained {args.epochs} epochs in {seconds:.2f}s{ranks}")
    print(f"test accuracy: {scores['accuracy']:.4f}; saved {args.out / 'digits_mlp.safetensors'} "
          f"and {args.out / 'digits_mlp_curves.png'}")


if __name__ == "__main__":
    main()
