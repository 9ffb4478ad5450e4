"""Rows of a ``.npy`` file read with plain file I/O (``os.preadv`` into the batch's buffer): the
``array_files`` service behind ``toolkit.data.Dataset.from_npy``.

Why not a memory map: a mapped page that is read counts as resident memory of the process, and
current Linux kernels map file pages in large folios (up to 2 MB per fault), so 256 random rows
of a memmap made the resident set jump by about 400 MB (measured on this machine's kernel), even
when the pages were released after each batch. Read with ``preadv``, the pages stay in the OS
file cache, outside the process, and resident memory stays at the batches themselves.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from toolkit.errors import InputError


class NpyRows:
    """A read-only ``.npy`` array that reads the rows it is indexed by: ``rows[5:9]``,
    ``rows[np.array([7, 2])]``; ``.shape`` and ``.dtype`` as NumPy's."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fd = -1
        try:
            with open(self.path, "rb") as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(stream)
                self.offset = stream.tell()
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read {self.path!r} as a .npy array: {error}") from error
        if fortran_order or dtype.hasobject or not shape:
            raise InputError(f"{self.path!r} must hold a C-ordered array of numbers with at least one axis")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            if step != 1:
                return self[np.arange(start, stop, step)]
            out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
            self._read_into(out, self.offset + start * self.row_bytes)
            return out
        index = np.asarray(rows, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.shape[0]} rows")
        out = np.empty((index.size, *self.shape[1:]), dtype=self.dtype)
        flat = out.reshape(index.size, -1).view(np.uint8)
        for position, row in enumerate(index):  # one pread per row, straight into the batch
            self._read_into(flat[position], self.offset + int(row) * self.row_bytes)
        return out

    def _read_into(self, out: np.ndarray, at: int) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))
        while len(view):
            done = os.preadv(self._fd, [view], at)
            if done <= 0:
                raise InputError(f"{self.path!r} is shorter than its header says (truncated?)")
            view, at = view[done:], at + done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def open_rows(path: str | os.PathLike) -> NpyRows:
    return NpyRows(path)
