"""Run by tests/test_distributed.py under ``mpiexec -n 2``: trains with DataParallel and lets rank 0
write what the test checks. ``raise`` mode makes rank 1 fail mid-training."""

import sys

import numpy as np
from mpi4py import MPI

import toolkit
from toolkit.callbacks import Callback
from toolkit.data import Dataset
from toolkit.distributed import DataParallel

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from tests.test_distributed import EPOCHS, GLOBAL_BATCH, make_model, make_problem  # noqa: E402


class FailOnRankOne(Callback):
    def on_epoch_begin(self, epoch):
        if MPI.COMM_WORLD.Get_rank() == 1 and epoch == 1:
            raise RuntimeError("rank 1 fails on purpose")


class CountingDataset(Dataset):
    """A Dataset that counts the rows this process reads."""

    read = 0

    def rows(self, rows):
        x, y = super().rows(rows)
        self.read += x.shape[0]
        return x, y


def shared_reduction(out: str, kind: str) -> None:
    """Each rank's 7 values whose sum depends on the order of the ranks: rank r's result after the
    shared-memory all-reduce, and whether a buffer made twice is one window. ``kind`` "full": rank 1
    finds no room in /dev/shm, so no rank may use a window."""
    from toolkit_backends import mpi

    communicator = mpi.Communicator(toolkit.get_backend())
    rank = communicator.rank
    if kind == "full" and rank == 1:
        mpi._shared_memory_room = lambda: 0
    values = np.array([[1e16, -1e16, 1.0][rank % 3] * (i + 1) for i in range(7)])
    if kind == "full":  # MPI's own order: values whose sum is exact in any order
        values = np.array([(rank + 1.0) * (i + 1) for i in range(7)])
    buffer = communicator.reduction_buffer(values)
    assert communicator.reduction_buffer(buffer) is buffer
    communicator.allreduce_sum(buffer)
    gathered = communicator.comm.gather(np.array(buffer), root=0)
    if rank == 0:
        np.savez(out, results=np.array(gathered), windows=len(communicator._shared), inputs_kept=values[0])


def main() -> None:
    mode, out, backend, kind = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    toolkit.set_backend(backend)
    if mode == "shared":
        shared_reduction(out, kind)
        return
    x, y = make_problem(kind)
    # Different seeds per rank: the broadcast from rank 0 must make the start identical anyway.
    model = make_model(seed=MPI.COMM_WORLD.Get_rank() + 100 if mode == "train" else 0, kind=kind)
    callbacks = [FailOnRankOne()] if mode == "raise" else []
    if mode == "raise":
        # Each rank's stderr also in a file of its own: mpiexec forwards a rank's last output on a best-effort
        # basis when the job is aborted (once in CI it forwarded none), and the test reads what the rank wrote.
        sys.stderr = open(f"{out}.rank{MPI.COMM_WORLD.Get_rank()}.err", "w")  # noqa: SIM115 - closed by the abort
    parallel = DataParallel()
    source = CountingDataset(x, y) if kind == "dataset" else None
    if kind == "stream":  # a plain list of batches: rank r takes batches r, r + 2, ...
        history = model.fit([(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)], epochs=EPOCHS, verbose=0,
                            distributed=parallel)
    else:
        history = model.fit(x if source is None else source, None if source is not None else y, epochs=EPOCHS,
                            batch_size=GLOBAL_BATCH, verbose=0, seed=3, distributed=parallel, callbacks=callbacks)
    rows_read = MPI.COMM_WORLD.gather(0 if source is None else source.read, root=0)
    flat = np.asarray(model.backend.to_host(model.flat_params))
    gathered = MPI.COMM_WORLD.gather(flat, root=0)
    if parallel.is_main:
        state = np.asarray(model.backend.to_host(model.flat_state))
        np.savez(out, weights=gathered[0], state=state, rank_spread=max(np.max(np.abs(g - gathered[0])) for g in gathered),
                 loss=np.asarray(history["loss"]), accuracy=np.asarray(history["accuracy"]),
                 allreduce_seconds=parallel.allreduce_seconds, steps=parallel.steps, size=parallel.size,
                 shared_reduction=parallel.communicator._shared_for(model.reduction_buffer) is not None,
                 rows_read=np.asarray(rows_read))


if __name__ == "__main__":
    main()
