"""Where backends and host services come from: Python entry points, so ``toolkit/`` never names
the package that implements them and the dependency points one way (backends → toolkit).

- ``toolkit.backends``: name → ``module:BackendClass``. The built-in backends are registered
  exactly as a third-party package registers its own (``pyproject.toml`` of this project); a
  package that declares an entry point in this group adds a backend without touching the toolkit.
- ``toolkit.services``: host-side machinery that is not array code: ``checkpoint_io`` (the
  safetensors file format) and ``mpi`` (the communicator of data-parallel training).

Entry points are read from installed metadata (``pip install -e .`` writes it); nothing is imported
until a backend or service is asked for, so ``import toolkit`` never loads numba or cupy.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import BackendError

if TYPE_CHECKING:
    from .backend import Backend

BACKEND_GROUP = "toolkit.backends"
SERVICE_GROUP = "toolkit.services"

# What to install when a built-in backend's library is missing (plugins name their own package).
INSTALL_HINTS = {
    "numpy": "pip install numpy array-api-compat",
    "numba": "pip install numba scipy",
    "cupy": 'pip install -e ".[cupy]"  (cupy-cuda12x)',
    "jax": 'pip install -e ".[jax]"  (jax[cpu])',
    "torch": 'pip install -e ".[torch]"  (torch==2.13.0, a CPU build)',
    "array_api_strict": "pip install array-api-strict",
}


def _group(group: str) -> dict[str, EntryPoint]:
    return {point.name: point for point in entry_points(group=group)}


def backend_names() -> list[str]:
    """Every registered backend name, built-in or plugin."""
    return sorted(_group(BACKEND_GROUP))


def load_backend(spec: str, fused: bool = True) -> Backend:
    """Instantiate the backend named ``NAME`` or ``NAME:DEVICE``; ``BackendError`` says which
    names are valid, or what to install."""
    name, _, device = spec.partition(":")
    name = name.strip().lower()
    registered = _group(BACKEND_GROUP)
    if not registered:
        raise BackendError("no backend is registered: the toolkit is not installed (pip install -e . in its folder)")
    if name not in registered:
        raise BackendError(
            f"unknown backend {spec!r} (from TOOLKIT_BACKEND or set_backend); "
            f"valid backends are: {', '.join(sorted(registered))}"
        )
    try:
        backend_class = registered[name].load()
    except ImportError as error:
        install = INSTALL_HINTS.get(name, f"install the package that provides the {name!r} backend")
        raise BackendError(
            f"backend {name!r} needs a library that is not installed ({error}); install it with: {install}"
        ) from error
    return backend_class(device=device or None, fused=fused)


def available_backends() -> dict[str, str | None]:
    """Every registered backend → None when it can run here, else the reason ``BackendError`` gives.

    Example:
        >>> import toolkit
        >>> toolkit.available_backends()["numpy"] is None
        True
    """
    found: dict[str, str | None] = {}
    for name in backend_names():
        try:
            load_backend(name)
        except BackendError as error:
            found[name] = str(error)
        else:
            found[name] = None
    return found


def service(name: str) -> ModuleType:
    """The host-side module registered under ``name`` in ``toolkit.services``."""
    registered = _group(SERVICE_GROUP)
    if name not in registered:
        raise BackendError(f"no {name!r} service is registered: the toolkit is not installed (pip install -e .)")
    return importlib.import_module(registered[name].value)
