"""``PassContext``: what one forward pass is (training or inference) and what its training-only
layers need. It is not a layer: the engine hands one to every layer's ``forward``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Array = Any


@dataclass(frozen=True)
class PassContext:
    """What a forward pass is: training or inference, and what its training-only layers need.

    ``random_key`` is the step's key of the counter-based generator (``toolkit.ops.random``): a
    Python int, or a 0-d int64 array inside a compiled step. In data-parallel training a process
    holds rows ``first_row … first_row + n`` of a global batch of ``global_rows`` rows; its
    loss is weighted by ``share`` (its rows / global rows) and ``all_reduce`` sums an array over
    the processes (``BatchNorm`` computes global batch statistics with it). One process:
    ``first_row = 0``, ``share = 1``, no reduction.
    """

    training: bool
    random_key: Any = 0
    first_row: int = 0
    global_rows: int | None = None
    share: float = 1.0
    all_reduce: Callable[[Array], Array] | None = None

    def sum_over_processes(self, x: Array) -> Array:
        """``x`` summed over the data-parallel processes (``x`` itself in one process)."""
        return x if self.all_reduce is None else self.all_reduce(x)

    def rows(self, local_rows: int) -> int:
        """Rows of the whole (global) batch."""
        return local_rows if self.global_rows is None else self.global_rows


INFERENCE = PassContext(training=False)
TRAINING = PassContext(training=True)  # a training pass of one process with no random layers
