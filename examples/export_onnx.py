"""Train the digits MLP, export it to ONNX from its own forward pass, and serve one prediction
with onnxruntime alone (no toolkit, no NumPy model code at serving time).

    pip install -e ".[examples,onnx]"
    python examples/export_onnx.py                  # writes examples/output/digits.onnx
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from _datasets import load

import toolkit
from toolkit import Adam, Dense, Sequential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=0,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "output"),
                        help="folder for digits.onnx (default: %(default)s)")
    args = parser.parse_args()

    x_train, x_test, y_train, y_test = load("digits")
    model = Sequential([Dense(128, activation="relu", input_dim=64), Dense(64, activation="relu"),
                        Dense(10, activation="softmax")], seed=0)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=1e-3), metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=args.verbose)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "digits.onnx")
    toolkit.export_onnx(model, path)
    print(f"backend: {model.backend.name}; exported {path}")

    import onnxruntime  # serving: only the ONNX file and onnxruntime

    session = onnxruntime.InferenceSession(path)
    probabilities = session.run(None, {"input": x_test[:1].astype(np.float32)})[0]
    served_all = session.run(None, {"input": x_test.astype(np.float32)})[0]
    difference = float(np.max(np.abs(served_all - model.backend.to_host(model.predict(x_test)))))
    print(f"onnxruntime predicts {int(probabilities.argmax())} for the first test digit (label {int(y_test[0])}); "
          f"test accuracy served: {float(np.mean(served_all.argmax(axis=1) == y_test)):.4f}; "
          f"largest difference from predict: {difference:.2e}")


if __name__ == "__main__":
    main()
