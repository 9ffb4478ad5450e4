"""Argument checks shared by the public API: one wording for every "must be an integer ≥ 1".

NumPy scalars count as numbers (``np.int64(4)`` is an integer, ``np.float32(0.1)`` a real), as
they come from argparse, configs and sweeps; booleans never do.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import InputError


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as a Python int ≥ ``minimum``; integral NumPy scalars accepted, bools and floats refused."""
    if _is_bool(value) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    return int(value)


def check_real(name: str, value: Any, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite Python float within the given bounds."""
    if _is_bool(value) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number; got {value!r}")
    number = float(value)
    if low is not None and (number < low or (low_open and number == low)):
        raise InputError(f"{name} must be {'>' if low_open else '≥'} {low:g}; got {value!r}")
    if high is not None and (number > high or (high_open and number == high)):
        raise InputError(f"{name} must be {'<' if high_open else '≤'} {high:g}; got {value!r}")
    return number


def check_seed(value: Any, name: str = "seed") -> int | None:
    """A seed for NumPy's generator: None or an integer ≥ 0."""
    if value is None:
        return None
    if _is_bool(value) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise InputError(f"{name} must be None or an integer ≥ 0; got {value!r}")
    return int(value)
