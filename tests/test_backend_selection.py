"""Choosing a backend: TOOLKIT_BACKEND read once, switching in code, clear errors, lazy imports."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

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
    assert str(toolkit.registry.load_backend("array_api_strict:device1").device).endswith("'device1')")
    with pytest.raises(BackendError, match="has no device 'nowhere'"):
        toolkit.registry.load_backend("array_api_strict:nowhere")
    with pytest.raises(BackendError, match="runs on the CPU only"):
        toolkit.registry.load_backend("numpy:1")


def test_cupy_without_a_gpu_says_why():
    try:
        backend = toolkit.registry.load_backend("cupy")
    except BackendError as error:
        message = str(error)
        assert re.search(r"cannot reach a CUDA GPU|needs a library that is not installed", message), message
        assert "pip install" in message or "NVIDIA" in message
    else:
        pytest.skip(f"a CUDA GPU is present ({backend}); nothing to check")


def test_toolkit_imports_no_array_library():
    """The rule that defines the project: toolkit/ is written against the Array API only."""
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy|numba|torch|jax|backends|toolkit_backends)\b", re.MULTILINE)
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


PLUGIN_MODULE = '''
from toolkit_backends.numpy_backend import NumpyBackend


class DemoBackend(NumpyBackend):
    """A third-party backend: NumPy under another name."""

    name = "demo"
'''


def test_a_plugin_package_adds_a_backend(tmp_path, monkeypatch):
    """A package that declares a ``toolkit.backends`` entry point is found without touching the toolkit."""
    (tmp_path / "toolkit_demo_plugin.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "toolkit_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toolkit-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[toolkit.backends]\ndemo = toolkit_demo_plugin:DemoBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "demo" in toolkit.registry.backend_names()
    assert toolkit.available_backends()["demo"] is None
    with toolkit.use_backend("demo") as backend:
        model = Sequential([Dense(2, input_dim=3)], seed=1)
    assert backend.name == "demo" and model.backend is backend
    reference = Sequential([Dense(2, input_dim=3)], seed=1, backend="numpy")
    x = np.ones((2, 3))
    np.testing.assert_array_equal(model.predict(x), reference.predict(x))


def test_available_backends_gives_the_reason_of_each_missing_one():
    found = toolkit.available_backends()
    assert {"numpy", "numba", "cupy", "jax", "torch", "array_api_strict"} <= set(found)
    assert found["numpy"] is None
    for name, reason in found.items():
        if reason is not None:
            with pytest.raises(BackendError) as caught:
                toolkit.registry.load_backend(name)
            assert str(caught.value) == reason


@pytest.mark.slow
def test_the_wheel_installs_no_top_level_name_but_its_own(tmp_path):
    """``backends/`` installs as ``toolkit_backends``: nothing generic lands in site-packages.

    The wheel is built from a copy of the sources: an in-tree build rewrites ``toolkit.egg-info``
    under the project root, whose ``entry_points.txt`` is empty for a moment, and a test running
    beside this one in another pytest worker then finds no backend or service registered.
    """
    import shutil
    import zipfile

    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("toolkit", "backends"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("toolkit-*.whl")
    names = {entry.split("/")[0] for entry in zipfile.ZipFile(wheel).namelist()}
    top_level = {name for name in names if not name.endswith(".dist-info")}
    assert top_level == {"toolkit", "toolkit_backends"}, top_level


def test_distributed_is_reachable_right_after_import():
    result = run_python("import toolkit; print(toolkit.distributed.auto())")
    assert result.stdout.strip() == "None", result.stderr
