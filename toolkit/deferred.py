"""Attributes whose newest value may wait, in a form cheaper to keep, until something reads them.

A backend that compiles whole training steps (JAX) keeps parameters, optimizer moments and
gradients per tensor between steps: joining them into the model's flat buffers after every step,
and slicing them out again, cost a quarter of a small MLP's step (config a, Adam: 2.6 → 2.0 ms
without). So after such a step the trainer *defers* ``flat_params``, ``flat_grads`` and the
optimizer's ``state``: each is a function that makes the flat value, run on the first read (a
checkpoint, ``predict``, ``get_weights``, a hand-written loop) and then stored as a plain attribute.

A deferred attribute is simply absent from the object until read; the object's class is swapped, on
its first ``defer``, for a subclass of it whose ``__getattr__`` (which Python calls only for an
attribute it did not find) makes the value. Only objects that defer pay for that hook: a class with a
``__getattr__`` makes every attribute read slower (10 → 32 ns here), which would cost the numba
backend's tiny training step about 1 µs, since it never defers.

    >>> class Box:
    ...     pass
    >>> box = Box()
    >>> box.value = 1
    >>> defer(box, "value", lambda: 2)
    >>> is_deferred(box, "value"), box.value, is_deferred(box, "value"), isinstance(box, Box)
    (True, 2, False, True)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_PENDING = "_deferred_makers"


# One lock for every deferral and every first read: ``predict`` in one thread may read the parameters
# while ``fit`` in another defers them (the model's promise: it then sees the weights of some step).
# Without it a reader could find neither the value nor its maker, or store an older step's value
# over a newer deferral.
_LOCK = threading.RLock()


def defer(obj: Any, name: str, make: Callable[[], Any]) -> None:
    """From now on ``obj.<name>`` is ``make()``, made when first read."""
    with _LOCK:
        cls = type(obj)
        if not issubclass(cls, _MakesDeferred):
            obj.__class__ = _making(cls)
        stored = obj.__dict__
        stored.setdefault(_PENDING, {})[name] = make
        stored.pop(name, None)


def is_deferred(obj: Any, name: str) -> bool:
    """Whether ``obj.<name>`` is still waiting to be made (not read, and not set, since deferred)."""
    stored = obj.__dict__
    return name not in stored and name in stored.get(_PENDING, ())


def stored(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.<name>`` as it is stored now, without making a deferred one (``default`` then)."""
    return obj.__dict__.get(name, default)


class _MakesDeferred:
    """The hook of the swapped classes: an attribute not found is made if it is deferred."""

    def __getattr__(self, name: str) -> Any:
        with _LOCK:
            stored = self.__dict__
            if name in stored:  # made (or set) by another thread since this one looked
                return stored[name]
            pending = stored.get(_PENDING, {})
            make = pending.get(name)
            if make is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            value = stored[name] = make()
            del pending[name]  # only once made: a maker that fails is tried again on the next read
            return value


_SWAPPED: dict[type, type] = {}


def _making(cls: type) -> type:
    """``cls`` with the hook, under the same name (an instance is still an instance of ``cls``); one per class."""
    made = _SWAPPED.get(cls)
    if made is None:
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
        made = _SWAPPED[cls] = type(cls.__name__, (cls, _MakesDeferred), namespace)
    return made
