"""Samples/s of data-parallel training on 1 and 2 ranks (1 thread each), and the time spent in
the all-reduce per step, for configs a and b of train_step.py.

    python benchmarks/distributed_scaling.py [--backend numba] [--rounds 3] [--batchnorm]

``--batchnorm`` puts a BatchNorm after every hidden layer and also reports the time spent in its
all-reduces of the batch statistics (two forward, two backward per BatchNorm layer).

Launches ``mpiexec -n 1`` and ``mpiexec -n 2`` alternately, several rounds, and reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(config_name: str, backend: str, seconds: float, batchnorm: bool) -> None:
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from train_step import CONFIGS, make_batches

    import toolkit
    from toolkit import SGD, BatchNorm, Dense, Sequential
    from toolkit.distributed import DataParallel

    config = CONFIGS[config_name]
    toolkit.set_backend(backend)
    hidden = [[Dense(w, activation=config.hidden), *([BatchNorm()] if batchnorm else [])] for w in config.widths[1:-1]]
    model = Sequential([layer for pair in hidden for layer in pair]
                       + [Dense(config.widths[-1], activation="softmax")], input_dim=config.widths[0])
    model.compile(loss="categorical_crossentropy", optimizer=SGD(lr=1e-3))
    parallel = DataParallel()
    parallel.prepare(model)
    batches = [(model.as_input(x), model.prepare_targets(y, config.batch)) for x, y, _ in make_batches(config)]

    def step(i: int) -> None:
        xb, yb = parallel.local_batch(*batches[i % len(batches)])
        _, _, new_state = parallel.compute_gradients(model, xb, yb)
        model._commit(new_state)

    for i in range(5):
        step(i)
    parallel.communicator.comm.Barrier()
    parallel.allreduce_seconds, parallel.statistics_seconds, parallel.steps = 0.0, 0.0, 0
    started, count = time.perf_counter(), 0
    while True:  # rank 0 decides when to stop, so every rank takes the same number of steps
        step(count)
        count += 1
        elapsed = time.perf_counter() - started
        if parallel.communicator.comm.bcast(elapsed >= seconds, root=0):
            break
    elapsed = time.perf_counter() - started
    if parallel.is_main:
        print(json.dumps({"samples_per_s": count * config.batch / elapsed, "ms_per_step": elapsed / count * 1e3,
                          "allreduce_ms_per_step": parallel.allreduce_seconds / parallel.steps * 1e3,
                          "statistics_ms_per_step": parallel.statistics_seconds / parallel.steps * 1e3}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batchnorm", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "BACKEND"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.seconds, args.batchnorm)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    results: dict = {}
    for config in ("a", "b"):
        samples: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for ranks in (1, 2):
                command = ["mpiexec", "-n", str(ranks), sys.executable, __file__, "--worker", config, args.backend,
                           "--seconds", str(args.seconds), *(["--batchnorm"] if args.batchnorm else [])]
                output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
                samples[ranks].append(json.loads(output.strip().splitlines()[-1]))
        summary = {ranks: {key: statistics.median(s[key] for s in runs) for key in runs[0]} for ranks, runs in samples.items()}
        results[config] = summary
        one, two = summary[1], summary[2]
        print(f"config {config} ({args.backend}, 1 thread per rank): "
              f"1 rank {one['samples_per_s']:.0f} samples/s, 2 ranks {two['samples_per_s']:.0f} samples/s "
              f"(×{two['samples_per_s'] / one['samples_per_s']:.2f}); all-reduce {two['allreduce_ms_per_step']:.3f} ms "
              f"of {two['ms_per_step']:.3f} ms per step"
              + (f"; BatchNorm statistics all-reduces {two['statistics_ms_per_step']:.3f} ms" if args.batchnorm else ""))
    name = "distributed_scaling_batchnorm.json" if args.batchnorm else "distributed_scaling.json"
    out = os.path.join(ROOT, "benchmarks", "results", name)
    with open(out, "w") as stream:
        json.dump(results, stream, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
