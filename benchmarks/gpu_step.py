"""One float32 training step on a GPU, at sizes where a GPU is the right tool: the MLP of
``train_step.py``'s config b (784-256-256-10) at batch 4096 and the LeNet of
``examples/mnist_cnn.py`` at batch 1024, Adam. Contenders: the toolkit on cupy, torch:cuda and
jax:gpu, PyTorch CUDA eager, ``torch.compile`` where it works, and the MLP's matrix-product floor
(its forward, dW and dX products as cuBLAS calls through CuPy into preallocated outputs). Every
timed step ends with a device synchronisation, so asynchronous launches are not flattered.

    python benchmarks/gpu_step.py                  # on a machine with an NVIDIA GPU (gpu/check.sh runs it)
    python benchmarks/gpu_step.py --dry-run        # the same plumbing on the CPU, small batches: the toolkit
                                                   # on numpy and torch, PyTorch eager on the CPU
                                                   # (tests/test_gpu_check.py; JAX is left out there: the
                                                   # same code path as torch's, slower to start)

Prints ms per step, samples/s and the ratios to PyTorch eager and to the floor; writes JSON
(``--out``). A contender that cannot start (no GPU, no library) is listed with the reason.
Timings are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

from conv_step import torch_lenet  # noqa: E402
from mnist_cnn import build  # noqa: E402
from train_step import CONFIGS, gemm_floor, interleaved_timings  # noqa: E402

import toolkit  # noqa: E402
from toolkit import Adam, Dense, Sequential  # noqa: E402

MLP = CONFIGS["b"]
SIZES = {"mlp": 4096, "lenet": 1024}
DRY_SIZES = {"mlp": 64, "lenet": 16}


def _mlp_data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(rows, MLP.widths[0])).astype(np.float32),
            rng.integers(0, MLP.widths[-1], size=rows))


def _lenet_data(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((rows, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, size=rows)


def toolkit_step(backend: str, net: str, rows: int) -> Callable[[], None]:
    with toolkit.use_backend(backend):
        if net == "mlp":
            model = Sequential([Dense(256, activation="relu"), Dense(256, activation="relu"),
                                Dense(10, activation="softmax")], input_dim=MLP.widths[0])
            model.compile(loss="categorical_crossentropy", optimizer=Adam(1e-3))
            x, y = _mlp_data(rows)
        else:
            model = build()
            x, y = _lenet_data(rows)
    xb, yb = model.as_input(x), model.prepare_targets(y, rows)
    synchronize = model.backend.synchronize

    def step() -> None:
        _, _, commit = model._train_batch(xb, yb)
        commit()
        synchronize()

    return step


def torch_step(device: str, net: str, rows: int, compiled: bool) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    if net == "mlp":
        module = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                     torch.nn.ReLU(), torch.nn.Linear(256, 10))
        x, y = _mlp_data(rows)
    else:
        module = torch_lenet()
        x, y = _lenet_data(rows)
        x = x.transpose(0, 3, 1, 2).copy()
    module = module.to(device)
    forward = torch.compile(module) if compiled else module
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(forward(xt), yt).backward()
        opt.step()
        synchronize()

    return step


def floor_step(xp: Any, rows: int) -> Callable[[], None]:
    """The MLP's products only (``train_step.gemm_floor``), on NumPy or, synchronised, on CuPy."""
    device = getattr(getattr(xp, "cuda", None), "Device", None)  # CuPy's; NumPy computes synchronously
    return gemm_floor(dataclasses.replace(MLP, batch=rows), xp, None if device is None else device().synchronize)


def contenders(dry_run: bool) -> tuple[dict[str, dict[str, Callable[[], None]]], dict[str, str]]:
    """Per network, the steps that could start; and why the others could not."""
    sizes = DRY_SIZES if dry_run else SIZES
    backends = ["numpy", "torch"] if dry_run else ["cupy", "torch:cuda", "jax:gpu"]
    device = "cpu" if dry_run else "cuda"
    found: dict[str, dict[str, Callable[[], None]]] = {"mlp": {}, "lenet": {}}
    missing: dict[str, str] = {}

    def attempt(net: str, name: str, make: Callable[[], Callable[[], None]]) -> None:
        try:
            step = make()
            step()  # the first step compiles: a contender that fails there fails here
            found[net][name] = step
        except Exception as error:  # noqa: BLE001 - reported, and the others still run
            missing[f"{net}/{name}"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"

    for net, rows in sizes.items():
        for backend in backends:
            attempt(net, f"toolkit-{backend}", lambda b=backend, n=net, r=rows: toolkit_step(b, n, r))
        attempt(net, f"torch-{device}-eager", lambda n=net, r=rows: torch_step(device, n, r, compiled=False))
        if not dry_run:
            attempt(net, f"torch-{device}-compile", lambda n=net, r=rows: torch_step(device, n, r, compiled=True))
    if dry_run:
        found["mlp"]["floor"] = floor_step(np, sizes["mlp"])
    else:
        attempt("mlp", "floor", lambda: floor_step(__import__("cupy"), sizes["mlp"]))
    return found, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU forms of every contender, small batches")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 5; 1 in a dry run)")
    parser.add_argument("--block-seconds", type=float, default=None, help="time per block (default: 0.5; 0.02 dry)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu_step.json"))
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.dry_run else 5)
    block = args.block_seconds or (0.02 if args.dry_run else 0.5)
    sizes = DRY_SIZES if args.dry_run else SIZES

    found, missing = contenders(args.dry_run)
    results: dict[str, Any] = {"dry_run": args.dry_run, "sizes": sizes, "could_not_start": missing, "ms": {}}
    for net, steps in found.items():
        if not steps:
            continue
        samples = interleaved_timings(steps, rounds, block)
        medians = {name: statistics.median(s) * 1e3 for name, s in samples.items()}
        results["ms"][net] = medians
        eager = next((ms for name, ms in medians.items() if name.startswith("torch") and name.endswith("eager")), None)
        floor = medians.get("floor")
        for name, ms in sorted(medians.items(), key=lambda item: item[1]):
            ratios = [f"÷ torch eager {ms / eager:5.2f}" if eager else "", f"÷ floor {ms / floor:5.2f}" if floor else ""]
            print(f"{net:5s} {name:24s} {ms:9.3f} ms  {sizes[net] / ms * 1e3:12,.0f} samples/s  {'  '.join(ratios)}")
    for name, reason in missing.items():
        print(f"could not start {name}: {reason}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as stream:
        json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
