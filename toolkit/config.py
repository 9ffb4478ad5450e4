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
from contextvars import ContextVar

from . import registry
from .backend import Backend

ENV_VARIABLE = "TOOLKIT_BACKEND"
DEFAULT_BACKEND = "numpy"

_requested: str = os.environ.get(ENV_VARIABLE, "").strip() or DEFAULT_BACKEND
_default: Backend | None = None  # the process's backend: TOOLKIT_BACKEND's, or set_backend's
# A ``use_backend`` block's backend belongs to the thread (and the asyncio task) that entered it:
# two threads in their own blocks never see each other's, and each leaves the process as it was.
_block: ContextVar[Backend | None] = ContextVar("toolkit_backend_block", default=None)


def load_backend(spec: str | Backend, fused: bool = True) -> Backend:
    """Build a backend from ``NAME[:DEVICE]``; raises ``BackendError`` naming the valid choices."""
    if isinstance(spec, Backend):
        return spec
    return registry.load_backend(spec, fused=fused)  # imports that backend's library, and only it


def get_backend() -> Backend:
    """The active backend: that of the innermost ``use_backend`` block of this thread, else the
    process's (``set_backend``'s, or the one ``TOOLKIT_BACKEND`` names, loaded on first use).

    Example:
        >>> import toolkit
        >>> toolkit.get_backend().name in toolkit.available_backends()
        True
    """
    global _default
    block = _block.get()
    if block is not None:
        return block
    if _default is None:
        _default = load_backend(_requested)
    return _default


def set_backend(spec: str | Backend, fused: bool = True) -> Backend:
    """Make ``spec`` the process's backend for everything created from now on, in every thread
    (inside a ``use_backend`` block, that block's backend changes too, until it ends).

    Example:
        >>> import toolkit
        >>> previous = toolkit.get_backend()
        >>> toolkit.set_backend("numpy").name
        'numpy'
        >>> _ = toolkit.set_backend(previous)
    """
    global _default
    _default = load_backend(spec, fused=fused)
    if _block.get() is not None:
        _block.set(_default)
    return _default


@contextmanager
def use_backend(spec: str | Backend, fused: bool = True) -> Iterator[Backend]:
    """Run a block on another backend, then restore the previous one.

    The block's backend is this thread's only (a context variable): other threads keep theirs,
    so two threads may each run their own block at once. ``fused=False`` forces every hot op
    onto its plain Array-API reference.

    >>> with use_backend("numpy") as backend:
    ...     backend.name
    'numpy'
    """
    backend = load_backend(spec, fused=fused)
    token = _block.set(backend)
    try:
        yield backend
    finally:
        _block.reset(token)
