"""Test matrix: the suite once per backend, gradients checked against NumPy and finite differences.

    nox                     # every session that can run here
    nox -s "tests(numba)"   # one backend
    nox -s lint
"""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

CPU_BACKENDS = {
    "numpy": "numpy",
    "numba": "numba",
    # The strict namespace on its default device and on a simulated second device, which
    # catches every array created on the wrong device.
    "array_api_strict": "array_api_strict,array_api_strict:device1",
}
CUPY_PROBE = "import cupy; n = cupy.cuda.runtime.getDeviceCount(); assert n > 0, 'no CUDA device'"


def _pytest(session: nox.Session, backends: str, run_backend: str) -> None:
    session.run(
        "pytest", "-q", *session.posargs,
        env={"TOOLKIT_TEST_BACKENDS": backends, "TOOLKIT_BACKEND": run_backend},
    )


@nox.session
@nox.parametrize("backend", list(CPU_BACKENDS), ids=list(CPU_BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """The whole suite with this backend active; cross-backend tests compare it with numpy."""
    session.install("-e", ".[test]")
    _pytest(session, CPU_BACKENDS[backend], backend)


@nox.session(name="tests(cupy)")
def tests_cupy(session: nox.Session) -> None:
    """The suite on a CUDA GPU; skipped, with the reason, where there is none."""
    session.install("-e", ".[test,cupy]")
    try:
        session.run("python", "-c", CUPY_PROBE, silent=True)
    except nox.command.CommandFailed:
        session.skip("cupy is installed but no CUDA device is usable here (see the probe's error above)")
    _pytest(session, "cupy", "cupy")


@nox.session
def distributed(session: nox.Session) -> None:
    """Data-parallel tests over MPI (2 ranks on loopback); skipped where MPI cannot be installed."""
    session.install("-e", ".[test]")
    try:
        session.install("mpi4py", "mpich")
    except nox.command.CommandFailed:
        session.skip("mpi4py/mpich could not be installed here, so MPI cannot run")
    session.run("pytest", "-q", "-m", "mpi", *session.posargs, env={"TOOLKIT_REQUIRE_MPI": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "toolkit", "backends", "tests", "examples", "benchmarks", "noxfile.py")
