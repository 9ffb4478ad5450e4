"""Backend registry: the only package that knows NumPy, numba, CuPy, JAX and array-api-strict.

Each backend's module is imported only when that backend is asked for, so the others'
libraries are never loaded.
"""

from __future__ import annotations

import importlib

from toolkit.backend import Backend
from toolkit.errors import BackendError

# name -> (module, class, what to install when the library is missing)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "numpy": ("backends.numpy_backend", "NumpyBackend", "pip install numpy array-api-compat"),
    "numba": ("backends.numba_backend", "NumbaBackend", "pip install numba"),
    "cupy": ("backends.cupy_backend", "CupyBackend", 'pip install -e ".[cupy]"  (cupy-cuda12x)'),
    "jax": ("backends.jax_backend", "JaxBackend", 'pip install "jax[cpu]"'),
    "array_api_strict": (
        "backends.strict_backend",
        "StrictBackend",
        "pip install array-api-strict",
    ),
}


def names() -> list[str]:
    return sorted(REGISTRY)


def load(spec: str, fused: bool = True) -> Backend:
    """Instantiate the backend named ``NAME`` or ``NAME:DEVICE``."""
    name, _, device = spec.partition(":")
    name = name.strip().lower()
    if name not in REGISTRY:
        raise BackendError(
            f"unknown backend {spec!r} (from TOOLKIT_BACKEND or set_backend); "
            f"valid backends are: {', '.join(names())}"
        )
    module_name, class_name, install = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendError(
            f"backend {name!r} needs a library that is not installed ({error}); install it with: {install}"
        ) from error
    backend_class = getattr(module, class_name)
    return backend_class(device=device or None, fused=fused)
