"""The digits MLP (64-128-64-10 ReLU, Adam 1e-3, batch 64, 30 epochs) trained by the toolkit,
scikit-learn's MLPClassifier and a plain PyTorch CPU loop, in one process, interleaved over
several rounds; prints test accuracy and median training seconds for each.

    python benchmarks/digits_training.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples")]

from _datasets import load  # noqa: E402
from digits_mlp import build  # noqa: E402

import toolkit  # noqa: E402

EPOCHS, BATCH, LR = 30, 64, 1e-3


def train_toolkit(backend, x_train, y_train, x_test, y_test):
    with toolkit.use_backend(backend):
        model = build()
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    seconds = time.perf_counter() - started
    return seconds, model.evaluate(x_test, y_test)["accuracy"]


def train_sklearn(x_train, y_train, x_test, y_test):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(128, 64), activation="relu", solver="adam", learning_rate_init=LR,
                        batch_size=BATCH, max_iter=EPOCHS, n_iter_no_change=EPOCHS + 1, tol=0.0, random_state=0)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    return seconds, clf.score(x_test, y_test)


def train_torch(x_train, y_train, x_test, y_test):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(x_train.astype(np.float32)), torch.from_numpy(y_train).long()
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], BATCH):
            rows = order[start : start + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x[rows]), y[rows]).backward()
            opt.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(x_test.astype(np.float32))).argmax(1).numpy() == y_test).mean()
    return seconds, float(accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    x_train, x_test, y_train, y_test = load("digits")
    data = (x_train, y_train, x_test, y_test)
    contenders = {
        "toolkit numpy": lambda: train_toolkit("numpy", *data),
        "toolkit numba": lambda: train_toolkit("numba", *data),
        "scikit-learn MLPClassifier": lambda: train_sklearn(*data),
    }
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        contenders["PyTorch CPU loop"] = lambda: train_torch(*data)
    except ImportError:
        print("PyTorch not installed (pip install torch==2.13.0): its row is left out")
    train_toolkit("numba", *data)  # compile or load numba's cached kernels outside the timing
    results: dict[str, list] = {name: [] for name in contenders}
    order = list(contenders)
    for round_ in range(args.rounds):
        random.Random(round_).shuffle(order)
        for name in order:
            results[name].append(contenders[name]())
    print(f"digits 64-128-64-10 ReLU, Adam {LR}, batch {BATCH}, {EPOCHS} epochs, median of {args.rounds} rounds")
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        print(f"  {name:28s} {seconds:6.3f} s   test accuracy {statistics.median(r[1] for r in runs):.4f}")


if __name__ == "__main__":
    main()
