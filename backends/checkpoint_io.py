"""Checkpoint files: safetensors (no pickle: loading never runs code) plus a SHA-256 of the
tensor data in the header, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from toolkit.errors import CheckpointError

_DIGEST_KEY = "toolkit.sha256"


def _digest(tensors: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        sha.update(name.encode())
        sha.update(str(array.dtype).encode() + str(array.shape).encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode_for(path: str) -> int:
    """The permissions the file gets: those of the file it replaces, or what ``open`` would give
    a new file under the process's umask (0644 under umask 022), not mkstemp's private 0600."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        return 0o666 & ~_current_umask()
    if not existing.st_mode & stat.S_IWUSR:
        raise CheckpointError(
            f"{path!r} exists and is read-only; a checkpoint never replaces a file its owner protected "
            "(make it writable, delete it, or save under another name)"
        )
    return stat.S_IMODE(existing.st_mode)


def write(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Write tensors (host arrays) and JSON-able metadata to ``path`` atomically: a crash
    leaves the previous file intact. A read-only file at ``path`` is a ``CheckpointError``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"cannot save to {path!r}: the directory {directory!r} does not exist")
    mode = _mode_for(path)
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    header = {key: json.dumps(value) for key, value in metadata.items()}
    header[_DIGEST_KEY] = _digest(arrays)
    payload = save(arrays, metadata=header)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; ``CheckpointError`` if it is missing, not a
    checkpoint, truncated or corrupted."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            payload = stream.read()
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {error}") from error
    try:
        tensors = load(payload)
        header = _read_header(payload)
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path!r} is not a toolkit checkpoint, or it is truncated: {error}") from error
    if _DIGEST_KEY not in header:
        raise CheckpointError(f"{path!r} is a safetensors file but not a toolkit checkpoint (no checksum)")
    if _digest(tensors) != header.pop(_DIGEST_KEY):
        raise CheckpointError(f"{path!r} is corrupted: its tensor data do not match the stored checksum")
    try:
        metadata = {key: json.loads(value) for key, value in header.items()}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path!r} has a damaged header: {error}") from error
    return tensors, metadata


def _read_header(payload: bytes) -> dict[str, str]:
    if len(payload) < 8:
        raise ValueError("file shorter than a safetensors header")
    size = int.from_bytes(payload[:8], "little")
    if size > len(payload) - 8:
        raise ValueError("header runs past the end of the file")
    return dict(json.loads(payload[8 : 8 + size].decode("utf-8")).get("__metadata__", {}))
