"""Backend parametrization shared by the whole suite.

Every test that takes the ``backend`` fixture runs once per backend, inside ``use_backend``.
``TOOLKIT_TEST_BACKENDS`` (comma-separated, as the nox sessions set it) restricts the list;
a backend whose library or device is missing is skipped with the reason.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import toolkit
from toolkit.errors import BackendError

ALL_BACKENDS = ["numpy", "numba", "jax", "torch", "array_api_strict", "array_api_strict:device1", "cupy"]


def selected_backends() -> list[str]:
    chosen = os.environ.get("TOOLKIT_TEST_BACKENDS", "").strip()
    return [name.strip() for name in chosen.split(",") if name.strip()] if chosen else ALL_BACKENDS


@functools.cache
def unavailable_reason(spec: str) -> str | None:
    try:
        toolkit.config.load_backend(spec)
    except BackendError as error:
        return str(error)
    return None


def _backend_param(spec: str):
    return pytest.param(spec, id=spec.replace(":", "-"))


@pytest.fixture(params=[_backend_param(spec) for spec in selected_backends()])
def backend(request):
    """Each selected backend in turn, made active for the test."""
    reason = unavailable_reason(request.param)
    if reason:
        pytest.skip(f"backend {request.param} unavailable: {reason}")
    with toolkit.use_backend(request.param) as active:
        yield active


@pytest.fixture
def numpy_backend():
    with toolkit.use_backend("numpy") as active:
        yield active


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def to_numpy(backend, x) -> np.ndarray:
    return np.asarray(backend.to_host(x))
