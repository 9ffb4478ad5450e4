"""Choosing a backend: TOOLKIT_BACKEND read once, switching in code, clear errors, lazy imports."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import backends
import toolkit
from toolkit import BackendError, Dense, Sequential

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "TOOLKIT_BACKEND"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=environment, timeout=120)


def test_unknown_backend_names_the_valid_ones():
    result = run_python("import toolkit; toolkit.get_backend()", TOOLKIT_BACKEND="bogus")
    assert result.returncode != 0
    assert "BackendError: unknown backend 'bogus'" in result.stderr
    assert "valid backends are: array_api_strict, cupy, jax, numba, numpy" in result.stderr


def test_environment_variable_picks_the_backend():
    result = run_python("import toolkit; print(toolkit.get_backend().name)", TOOLKIT_BACKEND="numba")
    assert result.stdout.strip() == "numba", result.stderr


def test_import_loads_neither_numba_nor_cupy():
    code = ("import sys, toolkit; from toolkit import Dense, Sequential; "
            "Sequential([Dense(2, input_dim=3)]).predict([[1.0, 2.0, 3.0]]); "
            "print(sorted(m for m in ('numba', 'cupy', 'array_api_strict') if m in sys.modules))")
    result = run_python(code)
    assert result.stdout.strip() == "[]", result.stderr


def test_use_backend_switches_and_restores():
    before = toolkit.get_backend()
    with toolkit.use_backend("numba") as inner:
        assert toolkit.get_backend() is inner and inner.name == "numba"
        model = Sequential([Dense(2, input_dim=3)])
    assert toolkit.get_backend() is before
    assert model.backend.name == "numba"  # a model keeps the backend it was built on


def test_device_suffix_and_bad_device():
    assert str(backends.load("array_api_strict:device1").device).endswith("'device1')")
    with pytest.raises(BackendError, match="has no device 'nowhere'"):
        backends.load("array_api_strict:nowhere")
    with pytest.raises(BackendError, match="runs on the CPU only"):
        backends.load("numpy:1")


def test_cupy_without_a_gpu_says_why():
    try:
        backend = backends.load("cupy")
    except BackendError as error:
        message = str(error)
        assert re.search(r"cannot reach a CUDA GPU|needs a library that is not installed", message), message
        assert "pip install" in message or "NVIDIA" in message
    else:
        pytest.skip(f"a CUDA GPU is present ({backend}); nothing to check")


def test_toolkit_imports_no_array_library():
    """The rule that defines the project: toolkit/ is written against the Array API only."""
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy|numba|torch)\b", re.MULTILINE)
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "toolkit").rglob("*.py")
                 if pattern.search(path.read_text())]
    assert offenders == []


def test_models_on_two_backends_coexist():
    with toolkit.use_backend("numba"):
        a = Sequential([Dense(2, input_dim=3)], seed=1)
    with toolkit.use_backend("array_api_strict"):
        b = Sequential([Dense(2, input_dim=3)], seed=1)
    x = np.ones((1, 3))
    np.testing.assert_allclose(a.backend.to_host(a.predict(x)), b.backend.to_host(b.predict(x)), rtol=1e-6)
