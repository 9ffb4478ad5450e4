"""Training time on a quiet machine and beside a busy program (one core spinning), for the digits MLP
(30 epochs) and the LeNet of ``examples/mnist_cnn.py`` (3 epochs), on the NumPy and numba backends.

    python benchmarks/busy_machine.py [--rounds 3] [--backends numba numpy] [--tasks digits lenet]

Each measurement is a process of its own that times ``fit`` alone (after a one-epoch warm-up on a few
rows, so compiling and loading are not counted); quiet and busy runs alternate. The busy program is a
Python loop in another process, started before the run and stopped after it. Prints the median times
and busy ÷ quiet: the thread tuner (``toolkit_backends/cpu_threads.py``) should keep it near 1.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
sys.path[:0] = [{examples!r}, {root!r}]
import toolkit
task, backend = sys.argv[1], sys.argv[2]
if task == "digits":
    from _datasets import load
    from digits_mlp import build
    x, _, y, _ = load("digits")
    epochs = 30
else:
    from mnist_cnn import build, load_mnist
    x, _, y, _ = load_mnist()
    epochs = 3
with toolkit.use_backend(backend):
    build(0).fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)  # compiles, loads, first touches
    model = build(0)
    started = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, seed=0)
    print(time.perf_counter() - started)
"""


def timed_fit(task: str, backend: str) -> float:
    code = CHILD.format(examples=str(ROOT / "examples"), root=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, task, backend], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def busy_fit(task: str, backend: str) -> float:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it take its core
        return timed_fit(task, backend)
    finally:
        spinner.kill()
        spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="quiet/busy alternations (default: %(default)s)")
    parser.add_argument("--backends", nargs="+", default=["numba", "numpy"], help="(default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", choices=["digits", "lenet"], default=["digits", "lenet"],
                        help="(default: %(default)s)")
    args = parser.parse_args()
    for task in args.tasks:
        for backend in args.backends:
            quiet, busy = [], []
            for _ in range(args.rounds):
                quiet.append(timed_fit(task, backend))
                busy.append(busy_fit(task, backend))
            q, b = statistics.median(quiet), statistics.median(busy)
            print(f"{task:6s} {backend:6s} quiet {q:6.2f} s [{min(quiet):.2f}, {max(quiet):.2f}]  busy {b:6.2f} s "
                  f"[{min(busy):.2f}, {max(busy):.2f}]  busy ÷ quiet {b / q:.2f}")


if __name__ == "__main__":
    main()
