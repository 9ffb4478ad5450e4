"""The recurrent layers of ``examples/sequential_mnist.py`` against PyTorch's ``nn.LSTM``/``nn.GRU``.

    python benchmarks/recurrent_step.py                       # steps at batch 64 and 256, then accuracy
    python benchmarks/recurrent_step.py --skip-accuracy --rounds 5

Speed: one training step (recurrent layer of 128 units over 28 rows of 28 pixels, Dense(10), softmax
cross-entropy, Adam; float32) of the toolkit on numba and of PyTorch (CPU, same threads, a process of
its own: in one process with NumPy, OpenBLAS's spinning threads slow it), alternating in rounds.
PyTorch's CPU LSTM and GRU are fused ATen kernels; the toolkit runs one matrix product for every
step's input part, then per step one product h U and one fused cell kernel.

Accuracy: the example's recipe (15 epochs, batch 64, Adam 1e-3, stratified 80/20 split) for each
seed, in the toolkit (numba) and in PyTorch, test accuracy and wall time. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

import own_process  # noqa: E402
from mnist_cnn import load_mnist  # noqa: E402
from sequential_mnist import build  # noqa: E402

import toolkit  # noqa: E402


def toolkit_step_seconds(cell: str, batch: int, seconds: float) -> float:
    with toolkit.use_backend("numba"):
        model = build(cell)
    rng = np.random.default_rng(0)
    data = [(model.as_input(rng.random((batch, 28, 28)).astype(np.float32)),
             model.prepare_targets(rng.integers(0, 10, size=batch), batch)) for _ in range(4)]

    def step(i: int) -> None:
        loss, _, commit = model._train_batch(*data[i % len(data)])
        commit()

    return own_process.seconds_per_call(step, seconds)


def _torch_net(cell: str):
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.recurrent = getattr(torch.nn, cell.upper())(28, 128, batch_first=True)
            self.head = torch.nn.Linear(128, 10)

        def forward(self, x):
            return self.head(self.recurrent(x)[0][:, -1])

    return Net()


def torch_step_seconds(cell: str, batch: int, seconds: float, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    net = _torch_net(cell)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    data = [(torch.tensor(rng.random((batch, 28, 28)).astype(np.float32)), torch.tensor(rng.integers(0, 10, size=batch)))
            for _ in range(4)]

    def step(i: int) -> None:
        x, y = data[i % len(data)]
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return own_process.seconds_per_call(step, seconds)


def torch_accuracy(cell: str, seed: int, epochs: int, threads: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_mnist()
    x_train, x_test = torch.tensor(x_train[..., 0]), torch.tensor(x_test[..., 0])
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    net = _torch_net(cell)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), 64):
            rows = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(net(x_train[rows]), y_train[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(dim=1) == y_test).double().mean())
    return {"accuracy": accuracy, "seconds": seconds}


def toolkit_accuracy(cell: str, seed: int, epochs: int) -> dict[str, float]:
    x_train, x_test, y_train, y_test = load_mnist()
    with toolkit.use_backend("numba"):
        model = build(cell, seed=seed)
    started = time.perf_counter()
    model.fit(x_train[..., 0], y_train, epochs=epochs, batch_size=64, seed=seed, verbose=0)
    seconds = time.perf_counter() - started
    return {"accuracy": model.evaluate(x_test[..., 0], y_test)["accuracy"], "seconds": seconds}


def in_own_process(part: str, **arguments: object) -> dict[str, float]:
    return own_process.in_own_process(__file__, part, **arguments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block-seconds", type=float, default=3.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        arguments = json.loads(args.arguments)
        result = ({"step": torch_step_seconds(**arguments)} if args.part == "step" else torch_accuracy(**arguments))
        print(json.dumps(result))
        return

    print(f"threads: {args.threads}; 128 units over 28 steps of 28 features, Dense(10), Adam, float32")
    print(f"{'cell':<5} {'batch':>5} {'toolkit numba ms':>17} {'PyTorch ms':>11} {'ratio':>7}")
    for cell in args.cells:
        for batch in args.batches:
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(toolkit_step_seconds(cell, batch, args.block_seconds))
                theirs.append(in_own_process("step", cell=cell, batch=batch, seconds=args.block_seconds,
                                             threads=args.threads)["step"])
            mine, other = statistics.median(ours), statistics.median(theirs)
            print(f"{cell:<5} {batch:>5} {mine * 1e3:>17.2f} {other * 1e3:>11.2f} {mine / other:>6.2f}×", flush=True)
    if args.skip_accuracy:
        return
    print(f"\n{'cell':<5} {'seed':>4} {'toolkit accuracy':>17} {'time':>7} {'PyTorch accuracy':>17} {'time':>7}")
    for cell in args.cells:
        ours, theirs = [], []
        for seed in args.seeds:
            mine = toolkit_accuracy(cell, seed, args.epochs)
            other = in_own_process("accuracy", cell=cell, seed=seed, epochs=args.epochs, threads=args.threads)
            ours.append(mine["accuracy"])
            theirs.append(other["accuracy"])
            print(f"{cell:<5} {seed:>4} {mine['accuracy']:>17.4f} {mine['seconds']:>6.1f}s {other['accuracy']:>17.4f} "
                  f"{other['seconds']:>6.1f}s", flush=True)
        print(f"{cell:<5} {'mean':>4} {statistics.mean(ours):>17.4f} {'':>7} {statistics.mean(theirs):>17.4f}")


if __name__ == "__main__":
    main()
