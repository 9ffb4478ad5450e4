"""Which backend is active.

``TOOLKIT_BACKEND`` is read once, when this module is imported; the backend it names is
loaded on first use, so ``import toolkit`` never imports cupy or numba unless asked to.
``set_backend`` and ``use_backend`` switch in code, without re-importing anything.

A backend is named ``NAME`` or ``NAME:DEVICE`` (``cupy:1``, ``array_api_strict:device1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from . import registry
from .backend import Backend

ENV_VARIABLE = "TOOLKIT_BACKEND"
DEFAULT_BACKEND = "numpy"

_requested: str = os.environ.get(ENV_VARIABLE, "").strip() or DEFAULT_BACKEND
_active: Backend | None = None


def load_backend(spec: str | Backend, fused: bool = True) -> Backend:
    """Build a backend from ``NAME[:DEVICE]``; raises ``BackendError`` naming the valid choices."""
    if isinstance(spec, Backend):
        return spec
    return registry.load_backend(spec, fused=fused)  # imports that backend's library, and only it


def get_backend() -> Backend:
    """The active backend, loading the one ``TOOLKIT_BACKEND`` names on first use.

    Example:
        >>> import toolkit
        >>> toolkit.get_backend().name in toolkit.available_backends()
        True
    """
    global _active
    if _active is None:
        _active = load_backend(_requested)
    return _active


def set_backend(spec: str | Backend, fused: bool = True) -> Backend:
    """Make ``spec`` the active backend for everything created from now on.

    Example:
        >>> import toolkit
        >>> previous = toolkit.get_backend()
        >>> toolkit.set_backend("numpy").name
        'numpy'
        >>> _ = toolkit.set_backend(previous)
    """
    global _active
    _active = load_backend(spec, fused=fused)
    return _active


@contextmanager
def use_backend(spec: str | Backend, fused: bool = True) -> Iterator[Backend]:
    """Run a block on another backend, then restore the previous one.

    ``fused=False`` forces every hot op onto its plain Array-API reference.

    >>> with use_backend("numpy") as backend:
    ...     backend.name
    'numpy'
    """
    global _active
    previous = _active
    _active = load_backend(spec, fused=fused)
    try:
        yield _active
    finally:
        _active = previous
