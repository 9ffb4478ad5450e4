"""MPI through mpi4py: the engine behind ``toolkit.distributed``. Only this module imports mpi4py.

Device (CuPy) buffers are staged through the host unless ``TOOLKIT_CUDA_AWARE_MPI=1`` says the
MPI library is CUDA-aware, in which case mpi4py is handed the device buffer directly.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import numpy as np

from toolkit.errors import BackendError

LAUNCH_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")


def launched_size() -> int:
    """Number of processes the launcher (mpiexec, srun) started, from its environment; 1 when none."""
    for name in LAUNCH_SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


class Communicator:
    """A world communicator with the three collectives data-parallel training needs."""

    def __init__(self, backend: Any) -> None:
        try:
            from mpi4py import MPI
        except ImportError as error:
            raise BackendError(f'distributed training needs mpi4py and an MPI: pip install -e ".[mpi]" ({error})') from error
        self.mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.backend = backend
        self.device_aware = backend.name == "cupy" and os.environ.get("TOOLKIT_CUDA_AWARE_MPI") == "1"
        self._install_abort_on_error()

    def _install_abort_on_error(self) -> None:
        # An exception on one rank would leave the others waiting in a collective forever:
        # print it, then take the whole job down.
        previous = sys.excepthook

        def abort(kind, value, trace):
            sys.stderr.write(f"[rank {self.rank}] " + "".join(traceback.format_exception(kind, value, trace)))
            sys.stderr.flush()
            self.comm.Abort(1)
            previous(kind, value, trace)

        sys.excepthook = abort

    def _host_view(self, buffer: Any) -> np.ndarray:
        if self.device_aware or isinstance(buffer, np.ndarray):
            return buffer
        return np.ascontiguousarray(self.backend.to_host(buffer))

    def _write_back(self, buffer: Any, host: Any) -> None:
        if host is not buffer:
            buffer[...] = self.backend.asarray(host, dtype=buffer.dtype)

    def allreduce_sum(self, buffer: Any) -> None:
        """Sum ``buffer`` over all ranks, in place: one MPI call."""
        host = self._host_view(buffer)
        if self.backend.name == "cupy":
            self.backend.synchronize()
        self.comm.Allreduce(self.mpi.IN_PLACE, host, op=self.mpi.SUM)
        self._write_back(buffer, host)

    def broadcast(self, buffer: Any, root: int = 0) -> None:
        host = self._host_view(buffer)
        self.comm.Bcast(host, root=root)
        self._write_back(buffer, host)

    def broadcast_values(self, values: list[int], root: int = 0) -> list[int]:
        """Rank ``root``'s integers on every rank."""
        data = np.asarray(values, dtype=np.int64)
        self.comm.Bcast(data, root=root)
        return [int(v) for v in data]

    def allreduce_values(self, values: list[float]) -> list[float]:
        data = np.asarray(values, dtype=np.float64)
        self.comm.Allreduce(self.mpi.IN_PLACE, data, op=self.mpi.SUM)
        return data.tolist()
