"""MSE regression on scikit-learn's diabetes set: a small MLP against LinearRegression (R²).

    python examples/regression.py [--epochs N]
"""

from __future__ import annotations

import argparse

import numpy as np
from _datasets import load
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import toolkit
from toolkit import Adam, Dense, Sequential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training data (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=0,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load("diabetes")
    mean, std = y_train.mean(), y_train.std()  # regress on standardised targets, report R² in the original units
    model = Sequential([Dense(8, activation="tanh", input_dim=x_train.shape[1]), Dense(1)], seed=0)
    model.compile(loss="mse", optimizer=Adam(lr=1e-3), metrics=["mae"])
    model.fit(x_train, (y_train - mean) / std, epochs=args.epochs, batch_size=32, verbose=args.verbose)
    predicted = np.asarray(model.backend.to_host(model.predict(x_test))).ravel() * std + mean
    baseline = LinearRegression().fit(x_train, y_train).predict(x_test)
    print(f"backend: {toolkit.get_backend().name}")
    print(f"test R²: toolkit MLP {r2_score(y_test, predicted):.4f}  vs  LinearRegression {r2_score(y_test, baseline):.4f}")


if __name__ == "__main__":
    main()
