"""Time one training step (forward + loss + backward + update) of the toolkit and its rivals,
interleaved block by block in shuffled order over several rounds, one process per array library.

    python benchmarks/train_step.py                  # every config, every contender
    python benchmarks/train_step.py --configs a c --rounds 5

Contenders: the toolkit on numpy, numba, JAX and torch (SGD and Adam; on JAX each step is one
jit-compiled XLA program of the toolkit's own forward, δ terms and update; on torch the toolkit's
layer code runs on PyTorch's own kernels), PyTorch CPU eager (same threads), a hand-written
``jax.jit`` step (``jax.value_and_grad`` of the same model, the same Adam, buffers donated; and 16
such steps in a ``lax.scan``, against the toolkit's ``compile(steps_per_execution=16)``), a
hand-written NumPy step (the same math, no framework), the GEMM floor (only the matrix products a
step needs, into preallocated outputs) and scikit-learn's MLPClassifier.partial_fit.

Each library is timed in a process of its own: NumPy's (numpy, numba, hand NumPy, the floor,
scikit-learn) here, PyTorch's and JAX's in a child each (``benchmarks/own_process.py``). In one
process, OpenBLAS's threads spin after every NumPy product and PyTorch's step ran 2× slower beside
them (config b: toolkit on torch 13.2 vs 8.6 ms alone), which made every ratio to PyTorch false.
Prints ms/step (median and spread), samples/s, ratio to PyTorch and to the floor; writes JSON
to benchmarks/results/. Timings are never asserted anywhere: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import own_process  # noqa: E402

import toolkit  # noqa: E402
from toolkit import SGD, Adam, Dense, Sequential  # noqa: E402


@dataclass(frozen=True)
class Config:
    widths: tuple[int, ...]
    hidden: str
    task: str  # "softmax_ce", "sigmoid_bce" or "mse"
    batch: int


CONFIGS = {
    "a": Config((784, 256, 256, 10), "relu", "softmax_ce", 128),
    "b": Config((784, 256, 256, 10), "relu", "softmax_ce", 1024),
    "c": Config((64, 32, 1), "tanh", "sigmoid_bce", 64),
    "d": Config((1024, 4096, 4096, 1024), "relu", "mse", 256),
}
LR = 1e-3
N_BATCHES = 16  # steps cycle through these, so gradients never vanish into denormals on one memorised batch
GROUP = 16  # steps per call of the JAX contenders that run several steps as one program


def make_batches(config: Config) -> list:
    return [make_data(config, seed) for seed in range(N_BATCHES)]


def make_data(config: Config, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(config.batch, config.widths[0])).astype(np.float32)
    if config.task == "softmax_ce":
        labels = rng.integers(0, config.widths[-1], size=config.batch)
        return x, labels, np.eye(config.widths[-1], dtype=np.float32)[labels]
    if config.task == "sigmoid_bce":
        y = rng.integers(0, 2, size=(config.batch, 1)).astype(np.float32)
        return x, y, y
    y = rng.normal(size=(config.batch, config.widths[-1])).astype(np.float32)
    return x, y, y


# -- the toolkit ------------------------------------------------------------------------------
def toolkit_step(config: Config, backend: str, optimizer: str, steps_per_execution: int = 1) -> Callable[[], None]:
    """One step per call, or with ``steps_per_execution=k`` (JAX) k steps per call as ``fit`` runs
    them (one program; the step's ``steps`` attribute says how many)."""
    output = {"softmax_ce": "softmax", "sigmoid_bce": "sigmoid", "mse": None}[config.task]
    loss = {"softmax_ce": "categorical_crossentropy", "sigmoid_bce": "binary_crossentropy", "mse": "mse"}[config.task]
    with toolkit.use_backend(backend):
        layers = [Dense(w, activation=config.hidden) for w in config.widths[1:-1]]
        model = Sequential([*layers, Dense(config.widths[-1], activation=output)], input_dim=config.widths[0])
    model.compile(loss=loss, optimizer=SGD(lr=LR) if optimizer == "sgd" else Adam(lr=LR),
                  steps_per_execution=steps_per_execution)
    batches = [(model.as_input(x), model.prepare_targets(y, config.batch)) for x, y, _ in make_batches(config)]
    cursor = [0]

    def step() -> None:
        xb, yb = batches[cursor[0] % N_BATCHES]
        cursor[0] += 1
        loss, _, commit = model._train_batch(xb, yb, with_output=False)  # what fit without metrics runs per step
        commit()
        if hasattr(loss, "block_until_ready"):  # JAX dispatches asynchronously: time the finished step
            loss.block_until_ready()

    if steps_per_execution == 1:
        return step
    assert model._steps_per_program() == steps_per_execution, f"{backend} runs one step per program"
    xp = model.backend.xp
    stacked = (xp.stack([x for x, _ in batches[:steps_per_execution]]), xp.stack([y for _, y in batches[:steps_per_execution]]))

    def steps() -> None:
        losses, _, commit = model._train_steps(*stacked, with_output=False)  # what fit runs per group
        commit()
        losses.block_until_ready()

    steps.steps = steps_per_execution  # type: ignore[attr-defined]
    return steps


# -- PyTorch eager ----------------------------------------------------------------------------
def torch_step(config: Config, optimizer: str) -> Callable[[], None]:
    import torch

    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[config.hidden]
    modules: list = []
    for i in range(len(config.widths) - 1):
        modules.append(torch.nn.Linear(config.widths[i], config.widths[i + 1]))
        if i < len(config.widths) - 2:
            modules.append(act())
    net = torch.nn.Sequential(*modules)
    loss_fn = {"softmax_ce": torch.nn.CrossEntropyLoss(), "sigmoid_bce": torch.nn.BCEWithLogitsLoss(),
               "mse": torch.nn.MSELoss()}[config.task]
    opt = torch.optim.SGD(net.parameters(), lr=LR) if optimizer == "sgd" else torch.optim.Adam(net.parameters(), lr=LR)
    batches = [(torch.from_numpy(x), torch.from_numpy(labels).long() if config.task == "softmax_ce" else torch.from_numpy(y))
               for x, labels, y in make_batches(config)]
    cursor = [0]

    def step() -> None:
        xt, yt = batches[cursor[0] % N_BATCHES]
        cursor[0] += 1
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xt), yt).backward()
        opt.step()

    return step


# -- hand-written jax.jit -----------------------------------------------------------------------
def jax_step(config: Config, optimizer: str, steps_per_call: int = 1) -> Callable[[], None]:
    """What a JAX user writes: ``jax.value_and_grad`` of the model as a pytree of (W, b), the update
    as a tree map (PyTorch's Adam arithmetic), one jitted step with its buffers donated; with
    ``steps_per_call=k``, k such steps in a ``lax.scan`` over k stacked batches per call."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    pairs = list(zip(config.widths, config.widths[1:], strict=False))
    params = [(jnp.asarray((rng.normal(size=(a, b)) * np.sqrt(2 / a)).astype(np.float32)), jnp.zeros(b, jnp.float32))
              for a, b in pairs]
    hidden = jax.nn.relu if config.hidden == "relu" else jnp.tanh

    def loss_fn(params, x, target):
        a = x
        for w, b in params[:-1]:
            a = hidden(a @ w + b)
        z = a @ params[-1][0] + params[-1][1]
        if config.task == "softmax_ce":
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), target[:, None], axis=1))
        if config.task == "sigmoid_bce":
            return jnp.mean(jnp.maximum(z, 0) - z * target + jnp.log1p(jnp.exp(-jnp.abs(z))))
        return jnp.mean((z - target) ** 2)

    def sgd(params, state, x, target):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, target)
        return loss, jax.tree.map(lambda p, g: p - LR * g, params, grads), state

    def adam(params, state, x, target):
        m, v, t = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x, target)
        t = t + 1
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        step_size, correction2 = LR / (1 - 0.9**t), jnp.sqrt(1 - 0.999**t)
        params = jax.tree.map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / correction2 + 1e-8), params, m, v)
        return loss, params, (m, v, t)

    zeros = jax.tree.map(jnp.zeros_like, params)
    state = (zeros, jax.tree.map(jnp.zeros_like, params), jnp.float32(0)) if optimizer == "adam" else ()
    one_step = adam if optimizer == "adam" else sgd
    batches = [(jnp.asarray(x), jnp.asarray(labels if config.task == "softmax_ce" else y))
               for x, labels, y in make_batches(config)]
    if steps_per_call > 1:
        def scanned(params, state, xs, targets):
            def body(carry, batch):
                loss, *carry = one_step(*carry, *batch)
                return tuple(carry), loss

            (params, state), losses = jax.lax.scan(body, (params, state), (xs, targets))
            return losses[-1], params, state

        compiled = jax.jit(scanned, donate_argnums=(0, 1))
        batches = [(jnp.stack([x for x, _ in batches[:steps_per_call]]),
                    jnp.stack([t for _, t in batches[:steps_per_call]]))]
    else:
        compiled = jax.jit(one_step, donate_argnums=(0, 1))
    carried = [params, state]
    cursor = [0]

    def step() -> None:
        x, target = batches[cursor[0] % len(batches)]
        cursor[0] += 1
        loss, carried[0], carried[1] = compiled(carried[0], carried[1], x, target)
        loss.block_until_ready()

    step.steps = steps_per_call  # type: ignore[attr-defined]
    return step


# -- hand-written NumPy -----------------------------------------------------------------------
def numpy_step(config: Config, optimizer: str) -> Callable[[], None]:
    batches = make_batches(config)
    cursor = [0]
    rng = np.random.default_rng(0)
    pairs = list(zip(config.widths, config.widths[1:], strict=False))
    weights = [(rng.normal(size=(a, b)) * np.sqrt(2 / a)).astype(np.float32) for a, b in pairs]
    biases = [np.zeros(b, np.float32) for b in config.widths[1:]]
    params = [p for pair in zip(weights, biases, strict=False) for p in pair]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]
    n = config.batch

    def hidden(z):
        return np.maximum(z, 0) if config.hidden == "relu" else np.tanh(z)

    def hidden_grad(da, z, a):
        return da * (z > 0) if config.hidden == "relu" else da * (1 - a * a)

    def step() -> None:
        x, labels, y = batches[cursor[0] % N_BATCHES]
        cursor[0] += 1
        activations, pre = [x], []
        for i, (w, b) in enumerate(zip(weights, biases, strict=False)):
            z = activations[-1] @ w + b
            pre.append(z)
            if i < len(weights) - 1:
                activations.append(hidden(z))
            elif config.task == "softmax_ce":
                e = np.exp(z - z.max(axis=1, keepdims=True))
                activations.append(e / e.sum(axis=1, keepdims=True))
            elif config.task == "sigmoid_bce":
                activations.append(1 / (1 + np.exp(-z)))
            else:
                activations.append(z)
        out = activations[-1]
        if config.task == "softmax_ce":  # the loss itself, as the other contenders compute it
            shifted = pre[-1] - pre[-1].max(axis=1, keepdims=True)
            loss = -np.mean(shifted[np.arange(n), labels] - np.log(np.exp(shifted).sum(axis=1)))
        elif config.task == "sigmoid_bce":
            z = pre[-1]
            loss = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
        else:
            loss = np.mean((out - y) ** 2)
        del loss
        delta = (out - y) / (n if config.task != "mse" else out.size / 2)
        grads = []
        for i in reversed(range(len(weights))):
            grads.append(delta.sum(axis=0))
            grads.append(activations[i].T @ delta)
            if i:
                delta = hidden_grad(delta @ weights[i].T, pre[i - 1], activations[i])
        grads = grads[::-1]  # [dW0, db0, dW1, ...]
        t[0] += 1
        for k, (p, g) in enumerate(zip(params, grads, strict=False)):
            if optimizer == "sgd":
                p -= LR * g
            else:
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g * g
                p -= LR * (m[k] / (1 - 0.9 ** t[0])) / (np.sqrt(v[k] / (1 - 0.999 ** t[0])) + 1e-8)

    return step


# -- the GEMM floor ---------------------------------------------------------------------------
def gemm_floor(config: Config, xp=np, synchronize: Callable[[], None] | None = None) -> Callable[[], None]:
    """Only the products a step must do: a W per layer, dW = aᵀδ per layer, dX = δWᵀ past the first
    (``xp``: NumPy, or CuPy for the GPU floor, with its ``synchronize`` after each step)."""
    x = xp.asarray(make_data(config)[0])
    rng = np.random.default_rng(0)
    widths, n = config.widths, config.batch
    weights = [xp.asarray(rng.normal(size=(a, b)).astype(np.float32) * 0.01)
               for a, b in zip(widths, widths[1:], strict=False)]
    outs = [xp.empty((n, b), dtype=xp.float32) for b in widths[1:]]
    grads_w = [xp.empty_like(w) for w in weights]
    grads_x = [xp.empty((n, a), dtype=xp.float32) for a in widths[:-1]]

    def step() -> None:
        a = x
        for w, out in zip(weights, outs, strict=False):
            xp.matmul(a, w, out=out)
            a = out
        for i in reversed(range(len(weights))):
            inputs = x if i == 0 else outs[i - 1]
            xp.matmul(inputs.T, outs[i], out=grads_w[i])
            if i:
                xp.matmul(outs[i], weights[i].T, out=grads_x[i])
        if synchronize is not None:
            synchronize()

    return step


def sklearn_step(config: Config) -> Callable[[], None]:
    from sklearn.neural_network import MLPClassifier

    x, labels, y = make_data(config)  # partial_fit on one batch: it has no per-step batch API
    classes = np.arange(config.widths[-1]) if config.task == "softmax_ce" else np.array([0, 1])
    targets = labels if config.task == "softmax_ce" else y.ravel().astype(int)
    clf = MLPClassifier(hidden_layer_sizes=config.widths[1:-1], activation=config.hidden, solver="sgd",
                        learning_rate_init=LR, batch_size=config.batch, momentum=0.0)
    clf.partial_fit(x, targets, classes=classes)

    def step() -> None:
        clf.partial_fit(x, targets)

    return step


def contenders(config_name: str, with_numba: bool) -> dict[str, Callable[[], None]]:
    """The contenders of NumPy's process (the toolkit on numpy and numba, hand NumPy, the floor, sklearn)."""
    config = CONFIGS[config_name]
    found: dict[str, Callable[[], None]] = {}
    for opt in ("sgd", "adam"):
        found[f"toolkit-numpy-{opt}"] = toolkit_step(config, "numpy", opt)
        if with_numba:
            found[f"toolkit-numba-{opt}"] = toolkit_step(config, "numba", opt)
        found[f"numpy-hand-{opt}"] = numpy_step(config, opt)
    found["gemm-floor"] = gemm_floor(config)
    if config_name in ("a", "c"):
        try:
            found["sklearn-partial_fit"] = sklearn_step(config)
        except ImportError:
            pass
    return found


def library_contenders(library: str, config_name: str) -> dict[str, Callable[[], None]]:
    """The contenders timed in a process of their own: PyTorch's, or JAX's."""
    config = CONFIGS[config_name]
    found: dict[str, Callable[[], None]] = {}
    for opt in ("sgd", "adam"):
        if library == "torch":
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
            found[f"toolkit-torch-{opt}"] = toolkit_step(config, "torch", opt)  # the toolkit's layers on torch's kernels
            found[f"torch-{opt}"] = torch_step(config, opt)
        else:
            found[f"toolkit-jax-{opt}"] = toolkit_step(config, "jax", opt)
            found[f"jax-hand-{opt}"] = jax_step(config, opt)
            # compile(steps_per_execution=16) against the same steps in a hand-written lax.scan
            found[f"toolkit-jax-k{GROUP}-{opt}"] = toolkit_step(config, "jax", opt, steps_per_execution=GROUP)
            found[f"jax-hand-scan{GROUP}-{opt}"] = jax_step(config, opt, steps_per_call=GROUP)
    return found


def library_samples(library: str, config_name: str, rounds: int, block_seconds: float) -> dict[str, list[float]]:
    """Per-step seconds of ``library``'s contenders, timed in a fresh process (see the module's docstring)."""
    return own_process.in_own_process(__file__, library, config=config_name, rounds=rounds, block_seconds=block_seconds)


def interleaved_timings(steps: dict[str, Callable[[], None]], rounds: int, block_seconds: float) -> dict[str, list[float]]:
    """Per-step seconds of each contender, one block per contender per round, in shuffled order (a
    contender whose call runs several steps says how many in its ``steps`` attribute)."""
    for step in steps.values():  # warm-up: JIT, caches, thread pools
        for _ in range(3):
            step()
    repeats = {}
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        repeats[name] = max(1, int(block_seconds / max(time.perf_counter() - started, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffler = random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            step, count = steps[name], repeats[name]
            started = time.perf_counter()
            for _ in range(count):
                step()
            samples[name].append((time.perf_counter() - started) / (count * getattr(step, "steps", 1)))
    return samples


def transient_bytes(step: Callable[[], None]) -> int:
    """Peak memory above the steady state during one step (0 when every buffer is reused)."""
    step()
    tracemalloc.start()
    step()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - baseline


FIRST_STEP = """
import time, sys; started = time.perf_counter()
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + '/benchmarks')
from train_step import toolkit_step, CONFIGS
step = toolkit_step(CONFIGS[{config!r}], {backend!r}, 'sgd'); step()
print(time.perf_counter() - started)
"""


def first_step_seconds(config: str, backend: str) -> float:
    """Import + build + first step in a fresh process (numba loads its cached kernels here)."""
    code = FIRST_STEP.format(root=ROOT, config=config, backend=backend)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block-seconds", type=float, default=0.15)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-jax", action="store_true", help="leave out the toolkit on JAX (jit-compiled steps)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "train_step.json"))
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: a library's contenders, in a child
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        arguments = json.loads(args.arguments)
        steps = library_contenders(args.part, arguments["config"])
        print(json.dumps(interleaved_timings(steps, arguments["rounds"], arguments["block_seconds"])))
        return

    # PyTorch and JAX are timed in children: here only whether they are installed is checked.
    with_torch = not args.no_torch and _installed("torch", "PyTorch not installed (pip install torch==2.13.0)")
    with_jax = not args.no_jax and _installed("jax", 'JAX not installed (pip install -e ".[jax]")')
    with_numba = importlib.util.find_spec("numba") is not None

    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                          "torch": importlib.metadata.version("torch") if with_torch else None},
              "configs": {}}
    for name in args.configs:
        config = CONFIGS[name]
        steps = contenders(name, with_numba)
        rounds = args.rounds if name != "d" else max(3, args.rounds // 2)
        block_seconds = args.block_seconds if name != "d" else 1.0
        samples = interleaved_timings(steps, rounds, block_seconds)
        for library in [lib for lib, wanted in (("torch", with_torch), ("jax", with_jax)) if wanted]:
            samples.update(library_samples(library, name, rounds, block_seconds))
        medians = {k: statistics.median(v) for k, v in samples.items()}
        rows = {}
        for contender, seconds in medians.items():
            opt = contender.rsplit("-", 1)[-1]
            torch_key = f"torch-{opt}" if opt in ("sgd", "adam") else None
            rows[contender] = {
                "ms_per_step": seconds * 1e3,
                "spread_ms": [min(samples[contender]) * 1e3, max(samples[contender]) * 1e3],
                "samples_per_s": config.batch / seconds,
                "vs_torch": seconds / medians[torch_key] if torch_key in medians else None,
                "vs_floor": seconds / medians["gemm-floor"],
            }
        for contender in [k for k in steps if k.startswith("toolkit-")]:  # this process's only
            rows[contender]["transient_bytes_per_step"] = transient_bytes(steps[contender])
        for backend in ("numpy", "numba") if with_numba else ("numpy",):
            rows[f"toolkit-{backend}-sgd"]["first_step_s"] = first_step_seconds(name, backend)
        report["configs"][name] = {"config": config.__dict__, "rows": rows}
        print_table(name, config, rows)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as stream:
        json.dump(report, stream, indent=1)
    print(f"\nwrote {args.out}")


def _installed(module: str, missing: str) -> bool:
    if importlib.util.find_spec(module) is None:
        print(f"{missing}: its rows are left out", file=sys.stderr)
        return False
    return True


def print_table(name: str, config: Config, rows: dict) -> None:
    widths = "-".join(map(str, config.widths))
    print(f"\nconfig {name}: {widths} {config.hidden} {config.task} batch {config.batch} (float32)")
    print(f"{'contender':22s} {'ms/step':>9s} {'spread':>17s} {'samples/s':>11s} {'÷torch':>7s} {'÷floor':>7s} "
          f"{'transient':>10s}")
    for contender, row in rows.items():
        vs_torch = f"{row['vs_torch']:.2f}" if row["vs_torch"] is not None else "-"
        spread = f"{row['spread_ms'][0]:.3f}–{row['spread_ms'][1]:.3f}"
        transient = f"{row['transient_bytes_per_step'] / 1024:.1f}K" if "transient_bytes_per_step" in row else ""
        first = f"  first step {row['first_step_s']:.2f}s" if "first_step_s" in row else ""
        print(f"{contender:22s} {row['ms_per_step']:9.3f} {spread:>17s} {row['samples_per_s']:11.0f} "
              f"{vs_torch:>7s} {row['vs_floor']:7.2f} {transient:>10s}{first}")


if __name__ == "__main__":
    main()
