"""Time one training step of the LeNet of ``examples/mnist_cnn.py`` (forward, loss, backward, Adam;
float32) for the toolkit and its rivals, in one process, interleaved block by block in shuffled order.

    python benchmarks/conv_step.py                    # batch 64 and 256
    python benchmarks/conv_step.py --batches 64 --rounds 5

Contenders: the toolkit on numpy and numba, PyTorch CPU eager (same threads), a hand-written NumPy
im2col step (the same math, no framework), and the GEMM floor: the forward, dW and dX products of
every layer (no dX for the first) on im2col matrices prepared outside the timed region, as matmuls
into preallocated outputs. Timings are never asserted anywhere: the machine is shared and noisy.

PyTorch and the toolkit on numba are also timed alone, each in a process of its own ("torch alone",
"numba alone"): in one process, OpenBLAS's threads spin after every NumPy product and PyTorch's step
runs up to 2× slower, and PyTorch's and NumPy's spinning threads slow numba's blocked pass (which
spreads its blocks over both cores) by up to 1.5×. Both ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

from mnist_cnn import build  # noqa: E402
from train_step import interleaved_timings  # noqa: E402

import toolkit  # noqa: E402

N_BATCHES = 8


def batches(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.random((n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, size=n)) for _ in range(N_BATCHES)]


def toolkit_step(backend: str, n: int) -> Callable[[], None]:
    with toolkit.use_backend(backend):
        model = build()
    data = [(model.as_input(x), model.prepare_targets(y, n)) for x, y in batches(n)]
    cursor = [0]

    def step() -> None:
        xb, yb = data[cursor[0] % N_BATCHES]
        cursor[0] += 1
        loss, _, commit = model._train_batch(xb, yb)
        commit()

    return step


def torch_lenet() -> Any:  # a torch.nn.Sequential (torch stays an optional import)
    """The LeNet of ``examples/mnist_cnn.py`` in PyTorch (images NCHW)."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10))


def torch_step(n: int) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    net = torch_lenet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    data = [(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)) for x, y in batches(n)]
    cursor = [0]

    def step() -> None:
        xb, yb = data[cursor[0] % N_BATCHES]
        cursor[0] += 1
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()

    return step


def _im2col(x: np.ndarray, k: int) -> np.ndarray:
    n, h, w, c = x.shape
    view = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # (n, h-k+1, w-k+1, c, k, k)
    return np.ascontiguousarray(view.transpose(0, 1, 2, 4, 5, 3)).reshape(n * (h - k + 1) * (w - k + 1), k * k * c)


def _col2im(dcols: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    n, h, w, c = shape
    ho, wo = h - k + 1, w - k + 1
    cols = dcols.reshape(n, ho, wo, k, k, c)
    out = np.zeros(shape, np.float32)
    for i in range(k):
        for j in range(k):
            out[:, i : i + ho, j : j + wo, :] += cols[:, :, :, i, j, :]
    return out


def _pool(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, h, w, c = a.shape
    windows = a.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    return windows.max(axis=-1), windows.argmax(axis=-1)


def _unpool(g: np.ndarray, winners: np.ndarray) -> np.ndarray:
    n, ho, wo, c = g.shape
    routed = (winners[..., None] == np.arange(4)) * g[..., None]  # (n, ho, wo, c, 4)
    return routed.reshape(n, ho, wo, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, ho * 2, wo * 2, c)


def numpy_step(n: int) -> Callable[[], None]:
    """The LeNet step written out in NumPy: im2col convolutions, max-pool by reshape, Adam."""
    rng = np.random.default_rng(0)
    shapes = [(25, 6), (6,), (150, 16), (16,), (400, 120), (120,), (120, 84), (84,), (84, 10), (10,)]
    params = [(rng.normal(size=s) * np.sqrt(2 / s[0])).astype(np.float32) if len(s) == 2 else np.zeros(s, np.float32)
              for s in shapes]
    m, v, t = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params], [0]
    data = batches(n)
    cursor = [0]

    def step() -> None:
        x, labels = data[cursor[0] % N_BATCHES]
        cursor[0] += 1
        w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = params
        xp = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        c1 = _im2col(xp, 5)
        z1 = c1 @ w1 + b1
        a1 = np.maximum(z1, 0).reshape(n, 28, 28, 6)
        p1, arg1 = _pool(a1)
        c2 = _im2col(p1, 5)
        z2 = c2 @ w2 + b2
        a2 = np.maximum(z2, 0).reshape(n, 10, 10, 16)
        p2, arg2 = _pool(a2)
        f = p2.reshape(n, 400)
        z3 = f @ w3 + b3
        a3 = np.maximum(z3, 0)
        z4 = a3 @ w4 + b4
        a4 = np.maximum(z4, 0)
        z5 = a4 @ w5 + b5
        e = np.exp(z5 - z5.max(axis=1, keepdims=True))
        probabilities = e / e.sum(axis=1, keepdims=True)
        d5 = probabilities.copy()
        d5[np.arange(n), labels] -= 1
        d5 /= n
        grads = [None] * 10
        grads[8], grads[9] = a4.T @ d5, d5.sum(axis=0)
        d4 = (d5 @ w5.T) * (z4 > 0)
        grads[6], grads[7] = a3.T @ d4, d4.sum(axis=0)
        d3 = (d4 @ w4.T) * (z3 > 0)
        grads[4], grads[5] = f.T @ d3, d3.sum(axis=0)
        dp2 = (d3 @ w3.T).reshape(n, 5, 5, 16)
        d2 = (_unpool(dp2, arg2).reshape(-1, 16)) * (z2 > 0)
        grads[2], grads[3] = c2.T @ d2, d2.sum(axis=0)
        dp1 = _col2im(d2 @ w2.T, (n, 14, 14, 6), 5)
        d1 = (_unpool(dp1, arg1).reshape(-1, 6)) * (z1 > 0)
        grads[0], grads[1] = c1.T @ d1, d1.sum(axis=0)
        t[0] += 1
        step_size, correction = 1e-3 / (1 - 0.9 ** t[0]), np.sqrt(1 - 0.999 ** t[0])
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            p -= step_size * m[k] / (np.sqrt(v[k]) / correction + 1e-8)

    return step


def gemm_floor(n: int) -> Callable[[], None]:
    """Only the products of a step, on im2col matrices prepared beforehand, into preallocated outputs."""
    rng = np.random.default_rng(0)
    layers = [(n * 784, 25, 6, False), (n * 100, 150, 16, True), (n, 400, 120, True), (n, 120, 84, True), (n, 84, 10, True)]
    arrays = []
    for rows, fan_in, fan_out, needs_dx in layers:
        cols = rng.random((rows, fan_in)).astype(np.float32)
        w = rng.random((fan_in, fan_out)).astype(np.float32)
        arrays.append((cols, w, np.empty((rows, fan_out), np.float32), np.empty_like(w),
                       np.empty((rows, fan_in), np.float32) if needs_dx else None))

    def step() -> None:
        for cols, w, z, _, _ in arrays:
            np.matmul(cols, w, out=z)
        for cols, w, z, dw, dx in reversed(arrays):
            np.matmul(cols.T, z, out=dw)
            if dx is not None:
                np.matmul(z, w.T, out=dx)

    return step


def alone(contender: str, n: int, rounds: int, block_seconds: float) -> float:
    """Median ms per step of ``contender`` ("torch" or "toolkit-numba"), timed in a fresh process with
    nothing else loaded."""
    command = [sys.executable, os.path.abspath(__file__), "--alone-worker", contender, "--batches", str(n),
               "--rounds", str(rounds), "--block-seconds", str(block_seconds)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256], help="batch sizes (default: 64 256)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--block-seconds", type=float, default=0.3, help="time per block (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "conv_step.json"),
                        help="where the JSON report goes (default: %(default)s)")
    parser.add_argument("--alone-worker", choices=["torch", "toolkit-numba"],
                        help="internal: time only this contender's step at the first batch size, print ms")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        torch = None
    if args.alone_worker:
        n = args.batches[0]
        step = torch_step(n) if args.alone_worker == "torch" else toolkit_step("numba", n)
        samples = interleaved_timings({args.alone_worker: step}, args.rounds, args.block_seconds)
        print(statistics.median(samples[args.alone_worker]) * 1e3)
        return
    report = {}
    for n in args.batches:
        steps = {"toolkit-numpy": toolkit_step("numpy", n)}
        if toolkit.available_backends().get("numba") is None:
            steps["toolkit-numba"] = toolkit_step("numba", n)
        if torch is not None:
            steps["torch"] = torch_step(n)
        steps["numpy-hand"] = numpy_step(n)
        steps["gemm-floor"] = gemm_floor(n)
        samples = interleaved_timings(steps, args.rounds, args.block_seconds)
        medians = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
        if torch is not None:
            medians["torch alone"] = alone("torch", n, args.rounds, args.block_seconds)
        if "toolkit-numba" in medians:
            medians["numba alone"] = alone("toolkit-numba", n, args.rounds, args.block_seconds)
        report[n] = medians
        print(f"\nLeNet step, batch {n} (float32): ms/step, ÷torch, ÷floor")
        for name, ms in medians.items():
            vs_torch = f"{ms / medians['torch']:.2f}" if "torch" in medians else "-"
            print(f"  {name:16s} {ms:8.2f}  {vs_torch:>6s}  {ms / medians['gemm-floor']:6.2f}")
        if "toolkit-numpy" in medians:
            print(f"  numpy backend ÷ hand NumPy: {medians['toolkit-numpy'] / medians['numpy-hand']:.2f}")
        if "torch alone" in medians and "numba alone" in medians:
            print(f"  numba alone ÷ torch alone: {medians['numba alone'] / medians['torch alone']:.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as stream:
        json.dump({"ms_per_step": report}, stream, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
