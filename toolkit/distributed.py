"""Data-parallel training: every rank trains on its share of each global batch, and one
all-reduce per step averages the gradients (and the loss) over the flat gradient buffer.

N ranks with global batch B take the same steps as one process with batch B: each rank draws
the same seeded permutation, takes a contiguous slice of every batch, weights its gradient
by its share of the batch, and the all-reduce sums the shares. Layers that depend on the whole
batch see it too: dropout draws each row's mask by its index in the global batch, and BatchNorm
all-reduces its statistics (two small all-reduces per BatchNorm layer forward, two backward). The engine is MPI (mpi4py),
registered as the ``mpi`` service (``toolkit.registry``); this module stays Array-API only.

    python examples/digits_mlp.py                    # one process
    mpiexec -n 2 python examples/digits_mlp.py       # the same script on two
"""

from __future__ import annotations

import time
from typing import Any

from . import registry
from .errors import InputError

Array = Any


class DataParallel:
    """Pass as ``fit(..., distributed=DataParallel())``, or use ``auto()``."""

    def __init__(self, communicator: Any = None) -> None:
        self.communicator = communicator
        self.allreduce_seconds = 0.0
        self.statistics_seconds = 0.0  # in the all-reduces inside the pass (BatchNorm's batch statistics)
        self.steps = 0

    @property
    def rank(self) -> int:
        return self.communicator.rank

    @property
    def size(self) -> int:
        return self.communicator.size

    @property
    def is_main(self) -> bool:
        return self.communicator.rank == 0

    def prepare(self, model: Any) -> None:
        """Bind to the model's backend; start every rank from rank 0's weights."""
        if not model.backend.mutable:
            raise InputError(f"data-parallel training needs a backend with mutable arrays; "
                             f"{model.backend.name!r} has none (use numpy, numba or cupy)")
        if self.communicator is None:
            self.communicator = registry.service("mpi").Communicator(model.backend)
        model.is_main = self.is_main
        if model.reduction_buffer is not None:
            model.use_reduction_buffer(self.communicator.reduction_buffer(model.reduction_buffer))
        self.communicator.broadcast(model.flat_params)
        if model.state_table.size:
            self.communicator.broadcast(model.flat_state)
        # The dropout masks are keyed by seed and step: every rank takes rank 0's.
        model.random_seed, model.random_step = self.communicator.broadcast_values([model.random_seed, model.random_step])
        self.backend = model.backend

    def check_batches(self, model: Any, n: int, batch_size: int) -> None:
        """Every rank must hold rows of every batch when the model synchronises layers (BatchNorm
        all-reduces inside the pass, so a rank without rows would leave the others waiting)."""
        last = n % batch_size
        if model.synchronized_layers and 0 < last < self.size:
            raise InputError(
                f"the last batch has {last} row(s), fewer than the {self.size} ranks, and "
                f"{model.synchronized_layers[0].describe()} needs rows on every rank: choose a batch_size "
                f"that leaves at least {self.size} rows in the last batch (the data has {n} rows)")

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < self.size:
            raise InputError(f"the global batch_size ({batch_size}) must be at least the number of ranks ({self.size})")

    def local_batch(self, x: Array, y: Array) -> tuple[Array, Array]:
        """This rank's contiguous share of a global batch."""
        self._global_rows = x.shape[0]
        share = self.local_rows(slice(0, x.shape[0]), x.shape[0])
        return x[share, ...], y[share, ...]

    def local_rows(self, rows: Any, count: int) -> Any:
        """This rank's contiguous share of the ``count`` rows of a global batch (a slice of row
        numbers, or an array of them): each rank reads only its rows. Pure (it may run on the
        prefetch thread, ahead of the step): the step is told ``count`` by ``train_batch``."""
        start, stop = self.rank * count // self.size, (self.rank + 1) * count // self.size
        if isinstance(rows, slice):
            return slice(rows.start + start, rows.start + stop)
        return rows[start:stop]

    def strided_rows(self, local_rows: int) -> int:
        """Rows of the global batch when each rank holds a whole batch of a stream (rank r takes
        batches r, r + N, …): the N ranks' batches, weighted equally."""
        return local_rows * self.size

    def _sum_over_ranks(self, x: Array) -> Array:
        started = time.perf_counter()
        buffer = self.backend.xp.asarray(x, copy=True)
        self.communicator.allreduce_sum(buffer)
        self.statistics_seconds += time.perf_counter() - started
        return buffer

    def context(self, model: Any, local_rows: int) -> Any:
        """The training pass context of this rank's share of the current global batch."""
        return model.training_context(first_row=self.rank * self._global_rows // self.size,
                                      global_rows=self._global_rows, share=local_rows / self._global_rows,
                                      all_reduce=self._sum_over_ranks)

    def compute_gradients(self, model: Any, x: Array, y: Array,
                          global_rows: int | None = None) -> tuple[Array, Array, Array | None]:
        """Local gradients weighted by this rank's share, then one all-reduce of gradients + loss.

        ``global_rows``: rows of the global batch (default: the last ``local_batch``'s). Returns
        the global batch's loss, this rank's predictions (for its metrics) and the layers' new
        state (the same on every rank), to keep when the step is committed."""
        if global_rows is not None:
            self._global_rows = global_rows
        backend, xp = model.backend, model.backend.xp
        share = x.shape[0] / self._global_rows
        new_state, output, buffer = None, None, model.reduction_buffer
        if x.shape[0]:
            loss, output, new_state = model._gradients(x, y, self.context(model, x.shape[0]))
            # Σ_r (n_r / B) ∇J_r = ∇ of the mean loss over the global batch; the loss rides along.
            if buffer is not None:  # mutable: the gradients were written into the buffer's view, scaled there
                model.flat_grads *= share
                buffer[-1] = loss * share
            else:
                buffer = xp.concat([model.flat_grads * share, xp.reshape(loss * share, (1,))])
        else:
            buffer = backend.assign(buffer, xp.zeros_like(buffer if buffer is not None else model.flat_grads[:1]))
        started = time.perf_counter()
        self.communicator.allreduce_sum(buffer)
        self.allreduce_seconds += time.perf_counter() - started
        self.steps += 1
        return buffer[-1], output, new_state

    def train_batch(self, model: Any, x: Array, y: Array, global_rows: int) -> tuple[Array, Array, Any]:
        """(global loss, this rank's ŷ, commit) of this rank's share of a global batch."""
        loss, output, new_state = self.compute_gradients(model, x, y, global_rows)
        return loss, output, lambda: model._commit(new_state)

    def reduce_metrics(self, metrics: list[Any]) -> None:
        """Sum every metric's running totals over the ranks (exact for ratios like precision)."""
        totals = [float(t) for metric in metrics for t in metric._totals]
        summed = iter(self.communicator.allreduce_values(totals))
        for metric in metrics:
            metric._totals = [next(summed) for _ in metric._totals]


def auto() -> DataParallel | None:
    """A ``DataParallel`` when the script was started by an MPI launcher with several
    processes, else None: the same script then runs unchanged on one process or N."""
    return DataParallel() if registry.service("mpi").launched_size() > 1 else None
