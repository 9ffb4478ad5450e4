"""Test matrix: the suite once per backend, gradients checked against NumPy and finite differences.

    nox                     # every session that can run here
    nox -s "tests(numba)"   # one backend
    nox -s lint
    nox -s docs             # the guides and the API reference, build/docs/index.html

The CPU sessions share one environment: the one ``pip install -e ".[dev]"`` filled (the README's
test command, and ``.ci/run``), so nothing is installed once per session. The cupy session makes
its own (cupy is a GPU library of ~900 MB) and only where an NVIDIA driver is present.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

CPU_BACKENDS = {
    "numpy": "numpy",
    "numba": "numba",
    "jax": "jax",
    "torch": "torch",
    # The strict namespace on its default device and on a simulated second device, which
    # catches every array created on the wrong device.
    "array_api_strict": "array_api_strict,array_api_strict:device1",
}
CUPY_PROBE = "import cupy; n = cupy.cuda.runtime.getDeviceCount(); assert n > 0, 'no CUDA device'"


# The JAX session spends most of its time compiling many tiny programs, each run a few times: XLA's
# LLVM optimisation level 0 compiles them faster (tests/test_engine.py + test_deeper.py: 151 s → 122 s),
# with the same arithmetic (no fast-math either way), so every tolerance still holds. Tests only.
SESSION_ENV = {"jax": {"XLA_FLAGS": " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""),
                                                          "--xla_backend_optimization_level=0"]))}}
# Most tests are small and single-threaded (JAX's compiling is), so two pytest workers (pytest-xdist) use
# both cores of a CI machine: JAX's tests/test_engine.py + test_deeper.py took 122 s with one worker and
# 86 s with two; the numpy session 197 s and 117 s. Each worker's BLAS is then single-threaded: two
# workers with two BLAS threads each would fight over the two cores (nothing in a test depends on it).
PARALLEL = ["-n", "2"]
SESSION_ARGS = {"numpy": PARALLEL, "numba": PARALLEL, "jax": PARALLEL, "array_api_strict": PARALLEL}
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOOLKIT_NUM_THREADS": "1"}


def _pytest(session: nox.Session, backends: str, run_backend: str) -> None:
    session.run(
        "pytest", "-q", "-m", "not mpi", *SESSION_ARGS.get(run_backend, []), *session.posargs,
        env={"TOOLKIT_TEST_BACKENDS": backends, "TOOLKIT_BACKEND": run_backend, **SESSION_ENV.get(run_backend, {}),
             **(ONE_BLAS_THREAD if run_backend in SESSION_ARGS else {})},
    )


@nox.session(venv_backend="none")
@nox.parametrize("backend", list(CPU_BACKENDS), ids=list(CPU_BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """The whole suite with this backend active; cross-backend tests compare it with numpy."""
    _pytest(session, CPU_BACKENDS[backend], backend)


def _nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


@nox.session(name="tests(cupy)", venv_backend="none")
def tests_cupy(session: nox.Session) -> None:
    """The suite on a CUDA GPU; skipped, with the reason, before anything is created or installed where
    there is none. Where there is a driver, cupy (~900 MB) goes into the current environment."""
    if not _nvidia_driver():
        session.skip("no NVIDIA driver here (no /proc/driver/nvidia, no nvidia-smi), so cupy is not even installed")
    session.run("python", "-m", "pip", "install", "--quiet", "-e", ".[test,cupy]")
    try:
        session.run("python", "-c", CUPY_PROBE, silent=True)
    except nox.command.CommandFailed:
        session.skip("cupy is installed but no CUDA device is usable here (see the probe's error above)")
    _pytest(session, "cupy", "cupy")


@nox.session(venv_backend="none")
def distributed(session: nox.Session) -> None:
    """Data-parallel tests over MPI (2 ranks on loopback); skipped where mpi4py is missing."""
    try:
        session.run("python", "-c", "import mpi4py", silent=True)
    except nox.command.CommandFailed:
        session.skip('mpi4py is not installed here (pip install -e ".[dev]" installs it with mpich)')
    session.run("pytest", "-q", "-m", "mpi", *session.posargs, env={"TOOLKIT_REQUIRE_MPI": "1"})


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "toolkit", "backends", "tests", "examples", "benchmarks", "noxfile.py")
    session.run("mypy", "toolkit")  # the library's own types (settings in pyproject.toml)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """The guides (docs/*.md) and the API reference (from the docstrings) as one static site in
    build/docs, by Sphinx with MyST: warnings are errors, so a malformed docstring, a broken link
    between pages or to a heading (MyST checks both) fails the build. Sphinx because it is what
    the Python libraries this one sits beside document themselves with (NumPy, SciPy, JAX, PyTorch):
    autodoc reads Google-style docstrings, and MyST keeps the guides in Markdown, readable on GitHub."""
    session.run("python", "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "docs", "build/docs")
