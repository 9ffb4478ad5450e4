"""Does prefetching overlap reading with training? Time per epoch on a stream that is slow to read,
with ``prefetch=0`` (each batch read when the step needs it) and ``prefetch=2`` (read ahead on a
background thread), interleaved in one process, several rounds; medians and their ratio.

    python benchmarks/prefetch.py [--backend numpy] [--read-ms 6] [--rounds 5]

The stream sleeps ``--read-ms`` per batch (a disk or network read, or decoding in a library that
releases the GIL) and yields 256 MNIST-sized rows; the model is 784-256-10 (a step of a few ms).
Ideal overlap: max(read, step) per batch instead of read + step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import toolkit
from toolkit import Dense, Sequential

BATCHES, ROWS = 40, 256


def slow_stream(x: np.ndarray, y: np.ndarray, read_seconds: float):
    for i in range(BATCHES):
        time.sleep(read_seconds)
        rows = slice(i * ROWS, (i + 1) * ROWS)
        yield x[rows], y[rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--read-ms", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    toolkit.set_backend(args.backend)
    rng = np.random.default_rng(0)
    x = rng.random((BATCHES * ROWS, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=BATCHES * ROWS)
    model = Sequential([Dense(256, activation="relu", input_dim=784), Dense(10, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer="sgd")
    read = args.read_ms / 1000

    def epoch(prefetch: int) -> float:
        started = time.perf_counter()
        model.fit(slow_stream(x, y, read), epochs=1, verbose=0, prefetch=prefetch)
        return time.perf_counter() - started

    def steps_only() -> float:  # the same steps on batches already in memory
        started = time.perf_counter()
        model.fit(slow_stream(x, y, 0.0), epochs=1, verbose=0, prefetch=0)
        return time.perf_counter() - started

    epoch(2), epoch(0)  # warm-up
    times: dict[str, list[float]] = {"prefetch=0": [], "prefetch=2": [], "steps only": []}
    for _ in range(args.rounds):
        times["prefetch=0"].append(epoch(0))
        times["prefetch=2"].append(epoch(2))
        times["steps only"].append(steps_only())
    median = {key: statistics.median(values) for key, values in times.items()}
    reading = BATCHES * read
    print(f"backend {args.backend}: {BATCHES} batches of {ROWS} rows, reading {args.read_ms:g} ms per batch "
          f"({reading * 1000:.0f} ms per epoch), median of {args.rounds} rounds")
    for key, value in median.items():
        print(f"  {key:<11} {value * 1000:7.1f} ms per epoch")
    ideal = max(reading, median["steps only"])
    print(f"  prefetch=2 / prefetch=0 = {median['prefetch=2'] / median['prefetch=0']:.2f}; "
          f"ideal overlap max(read, steps) = {ideal * 1000:.1f} ms, prefetch=2 is {median['prefetch=2'] / ideal:.2f}× that")


if __name__ == "__main__":
    main()
