"""The character-level GPT of ``examples/char_transformer.py`` against the same model in PyTorch eager.

    python benchmarks/char_transformer.py                    # 3 seeds of both, then the step times
    python benchmarks/char_transformer.py --seeds 0 --steps 300 --rounds 3

Quality: for each seed the toolkit (numba) and PyTorch train the same model from the same initial
weights (copied across with ``store_torch_weights``) on the same batches, with the same Adam, and
report validation bits per character and wall time. PyTorch runs in a process of its own (in one
process with NumPy, OpenBLAS's spinning threads slow it down to 2×), with the same thread count.

Speed: one training step at the example's size, timed in rounds that alternate the toolkit on each
backend with PyTorch (own process; the toolkit on torch and on JAX in processes of their own too),
and the matrix-product floor of that step: every product of the forward and backward pass
(projections, scores, weighted values, feed-forward, head) as NumPy matmuls on arrays prepared
outside the timed region. Nothing is asserted: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

import char_transformer as example  # noqa: E402
import own_process  # noqa: E402

import toolkit  # noqa: E402

OWN_PROCESS_BACKENDS = ("torch", "jax")


def torch_model(vocab: int):
    """``example.build`` in PyTorch: modules registered in the toolkit's layer order, so the weights map."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(example.WIDTH)
            self.attention = nn.MultiheadAttention(example.WIDTH, example.HEADS, batch_first=True)
            self.norm2 = nn.LayerNorm(example.WIDTH)
            self.up, self.down = nn.Linear(example.WIDTH, 4 * example.WIDTH), nn.Linear(4 * example.WIDTH, example.WIDTH)

        def forward(self, h, mask):
            a = self.norm1(h)
            h = h + self.attention(a, a, a, attn_mask=mask, need_weights=False)[0]
            return h + self.down(nn.functional.gelu(self.up(self.norm2(h)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens, self.positions = nn.Embedding(vocab, example.WIDTH), nn.Embedding(example.CONTEXT, example.WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(example.BLOCKS))
            self.norm, self.head = nn.LayerNorm(example.WIDTH), nn.Linear(example.WIDTH, vocab)
            self.register_buffer("mask", torch.triu(torch.ones(example.CONTEXT, example.CONTEXT, dtype=torch.bool), 1))

        def forward(self, ids):
            h = self.tokens(ids) + self.positions.weight
            for block in self.blocks:
                h = block(h, self.mask)
            return self.head(self.norm(h))  # logits; cross_entropy applies the softmax

    return GPT()


def torch_run(seed: int, steps: int, evaluations: int, threads: int) -> dict[str, float]:
    """Train the PyTorch model from the toolkit model's initial weights; bits per char and seconds."""
    import torch

    torch.set_num_threads(threads)
    _, train_ids, val_ids, alphabet = example.load_text()
    net = torch_model(len(alphabet))
    with toolkit.use_backend("numpy"):
        toolkit.store_torch_weights(example.build(len(alphabet), seed), net)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x_val, y_val = (torch.tensor(a) for a in example.validation_windows(val_ids))
    per_epoch = max(1, steps // evaluations)
    started = time.perf_counter()
    for x, y in example.random_batches(train_ids, per_epoch * evaluations, seed):
        loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)).flatten(0, 1), torch.tensor(y).flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        total = sum(float(torch.nn.functional.cross_entropy(net(x_val[i : i + 256]).flatten(0, 1),
                                                            y_val[i : i + 256].flatten(), reduction="sum"))
                    for i in range(0, len(x_val), 256))
    return {"bits": total / y_val.numel() / math.log(2), "seconds": seconds}


def toolkit_run(seed: int, steps: int, evaluations: int, backend: str) -> dict[str, float]:
    _, train_ids, val_ids, alphabet = example.load_text()
    with toolkit.use_backend(backend):
        model = example.build(len(alphabet), seed)
    per_epoch = max(1, steps // evaluations)
    started = time.perf_counter()
    model.fit(example.random_batches(train_ids, per_epoch * evaluations, seed), epochs=evaluations,
              steps_per_epoch=per_epoch, verbose=0)
    seconds = time.perf_counter() - started
    x_val, y_val = example.validation_windows(val_ids)
    return {"bits": model.evaluate(x_val, y_val)["loss"] / math.log(2), "seconds": seconds}


def toolkit_step(backend: str) -> Callable[[], None]:
    _, train_ids, _, alphabet = example.load_text()
    with toolkit.use_backend(backend):
        model = example.build(len(alphabet))
    data = [(model.as_input(x), model.prepare_targets(y, x.shape[0])) for x, y in example.random_batches(train_ids, 8, 0)]
    cursor = [0]

    def step() -> None:
        xb, yb = data[cursor[0] % len(data)]
        cursor[0] += 1
        loss, _, commit = model._train_batch(xb, yb)
        commit()
        model.backend.synchronize()

    return step


def torch_step_seconds(threads: int, seconds: float) -> float:
    """Per-step seconds of the PyTorch step, measured for about ``seconds`` after a warm-up."""
    import torch

    torch.set_num_threads(threads)
    _, train_ids, _, alphabet = example.load_text()
    net = torch_model(len(alphabet))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    data = [(torch.tensor(x), torch.tensor(y)) for x, y in example.random_batches(train_ids, 8, 0)]

    def step(i: int) -> None:
        x, y = data[i % len(data)]
        loss = torch.nn.functional.cross_entropy(net(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return own_process.seconds_per_call(step, seconds)


def gemm_floor(vocab: int) -> Callable[[], None]:
    """Only the step's matrix products (float32), forward and backward, as NumPy matmuls."""
    n, t, d, h, k = example.BATCH, example.CONTEXT, example.WIDTH, example.HEADS, example.WIDTH // example.HEADS
    rng = np.random.default_rng(0)

    def array(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    rows = n * t
    products: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(example.BLOCKS):
        x, q, s, v = array(rows, d), array(n, h, t, k), array(n, h, t, t), array(n, h, t, k)
        w_qkv, w_o, w_up, w_down = array(d, 3 * d), array(d, d), array(d, 4 * d), array(4 * d, d)
        hidden, up = array(rows, 4 * d), array(rows, d)
        # forward: QKV, scores, weighted values, output projection, feed-forward up and down
        products += [(x, w_qkv), (q, np.swapaxes(v, -1, -2)), (s, v), (x, w_o), (up, w_up), (hidden, w_down)]
        # backward: per product, the gradient of each operand (two products of the same size)
        products += [(x.T, array(rows, 3 * d)), (array(rows, 3 * d), w_qkv.T), (s, v), (s, v), (s, v), (s, v),
                     (x.T, up), (up, w_o.T), (up.T, hidden), (hidden, w_up.T), (hidden.T, up), (up, w_down.T)]
    head_in, w_head = array(rows, d), array(d, vocab)
    products += [(head_in, w_head), (head_in.T, array(rows, vocab)), (array(rows, vocab), w_head.T)]
    outputs = [np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), np.float32)
               for a, b in products]

    def step() -> None:
        for (a, b), out in zip(products, outputs, strict=True):
            np.matmul(a, b, out=out)

    return step


def timed(step: Callable[[], None], seconds: float) -> float:
    return own_process.seconds_per_call(lambda _: step(), seconds)


def in_own_process(part: str, **arguments: object) -> dict[str, float]:
    return own_process.in_own_process(__file__, part, **arguments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--evaluations", type=int, default=10)
    parser.add_argument("--backends", nargs="+", default=["numba", "numpy", "torch", "jax"], help="step timings")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # a measurement (PyTorch, or the toolkit on torch or JAX) in this process of its own
        arguments = json.loads(args.arguments)
        if args.part == "train":
            result = torch_run(**arguments)
        elif args.part == "toolkit-step":
            result = {"step": timed(toolkit_step(arguments["backend"]), arguments["seconds"])}
        else:
            result = {"step": torch_step_seconds(**arguments)}
        print(json.dumps(result))
        return

    print(f"threads: {args.threads}; model: context {example.CONTEXT}, width {example.WIDTH}, {example.BLOCKS} blocks "
          f"of {example.HEADS} heads, batch {example.BATCH}")
    if not args.skip_quality:
        print(f"{'seed':>4}  {'toolkit (numba) bits/char':>26}  {'time':>7}  {'PyTorch eager bits/char':>24}  {'time':>7}")
        ours, theirs = [], []
        for seed in args.seeds:
            mine = toolkit_run(seed, args.steps, args.evaluations, "numba")
            other = in_own_process("train", seed=seed, steps=args.steps, evaluations=args.evaluations,
                                   threads=args.threads)
            ours.append(mine["bits"])
            theirs.append(other["bits"])
            print(f"{seed:>4}  {mine['bits']:>26.4f}  {mine['seconds']:>6.1f}s  {other['bits']:>24.4f}  "
                  f"{other['seconds']:>6.1f}s", flush=True)
        print(f"mean  {statistics.mean(ours):>26.4f}  {'':>7}  {statistics.mean(theirs):>24.4f}   "
              f"(difference {statistics.mean(ours) - statistics.mean(theirs):+.4f})")

    vocab = len(example.load_text()[3])
    # The toolkit on torch and on JAX runs in a process of its own, as PyTorch does: their thread
    # pools and NumPy's OpenBLAS threads slowed each other (numba 0.80× PyTorch alone, 0.96× with them).
    apart = [name for name in args.backends if name in OWN_PROCESS_BACKENDS]
    steps = {name: toolkit_step(name) for name in args.backends if name not in apart}
    steps["GEMM floor"] = gemm_floor(vocab)
    samples: dict[str, list[float]] = {name: [] for name in [*args.backends, "GEMM floor", "PyTorch eager"]}
    for _ in range(args.rounds):
        for name, step in steps.items():
            samples[name].append(timed(step, args.block_seconds))
        for name in apart:
            samples[name].append(in_own_process("toolkit-step", backend=name, seconds=args.block_seconds)["step"])
        samples["PyTorch eager"].append(in_own_process("step", threads=args.threads, seconds=args.block_seconds)["step"])
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"\n{'step (median of rounds)':<24} {'ms':>8} {'÷ PyTorch':>10} {'÷ floor':>8}")
    for name, value in medians.items():
        print(f"{name:<24} {value * 1e3:>8.2f} {value / medians['PyTorch eager']:>9.2f}× "
              f"{value / medians['GEMM floor']:>7.2f}×")


if __name__ == "__main__":
    main()
