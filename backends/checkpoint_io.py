"""Checkpoint files: safetensors (no pickle: loading never runs code) plus a SHA-256 of the
whole file's meaning (every tensor and every header entry: architecture, settings, metadata),
written atomically."""

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

# Two digests: of the tensors (the key earlier releases write and check), and of the whole file's
# meaning, tensors and every header entry, the tensors' digest included (JSON-encoded like every
# other entry, so earlier releases still read the files this one writes). Files written before the
# header was covered carry only the first; they still load, checked as far as it goes.
_DIGEST_KEY = "toolkit.sha256.file"
_TENSOR_DIGEST_KEY = "toolkit.sha256"
_TEMPORARY = ".tmp-"  # a save's temporary file: .<target name>.<pid>.tmp-XXXX.safetensors


def _digest(tensors: dict[str, np.ndarray], header: dict[str, str] | None = None) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        sha.update(name.encode())
        sha.update(str(array.dtype).encode() + str(array.shape).encode())
        sha.update(array.tobytes())
    if header is not None:
        sha.update(json.dumps(header, sort_keys=True).encode())
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


def _temporaries_of(path: str) -> tuple[str, str]:
    """(prefix, suffix) of the temporary files a save to ``path`` writes beside it."""
    return f".{os.path.basename(path)}.{os.getpid()}{_TEMPORARY}", ".safetensors"


def _remove_stale_temporaries(path: str) -> None:
    """Delete the temporary files that saves to ``path`` left when their process was killed
    (their pid is in the name; a live process's save in progress is left alone)."""
    directory, name = os.path.split(path)
    start = f".{name}."
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return
    for entry in entries:
        pid, _, rest = entry[len(start):].partition(".")
        if not (entry.startswith(start) and rest.startswith(_TEMPORARY[1:]) and pid.isdigit()):
            continue
        if int(pid) != os.getpid() and _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Write tensors (host arrays) and JSON-able metadata to ``path`` atomically: a crash
    leaves the previous file intact. A symbolic link is written through (its target is
    replaced, the link stays). A read-only file at ``path`` or a folder that cannot be written
    is a ``CheckpointError`` naming the target and the reason."""
    requested = os.fspath(path)
    path = os.path.realpath(requested)  # through a symbolic link, as open() would write
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CheckpointError(f"cannot save to {requested!r}: the directory {directory!r} does not exist")
    mode = _mode_for(path)
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    header = {key: json.dumps(value) for key, value in metadata.items()}
    header[_TENSOR_DIGEST_KEY] = _digest(arrays)
    header[_DIGEST_KEY] = json.dumps(_digest(arrays, header))
    payload = save(arrays, metadata=header)
    _remove_stale_temporaries(path)
    prefix, suffix = _temporaries_of(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    except OSError as error:
        raise CheckpointError(f"cannot save to {requested!r}: {error.strerror or error} "
                              f"(the folder {directory!r} must be writable)") from error
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise CheckpointError(f"cannot save to {requested!r}: {error.strerror or error}") from error
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
    if _DIGEST_KEY in header:
        stored = header.pop(_DIGEST_KEY)
        if json.dumps(_digest(tensors, header)) != stored:
            raise CheckpointError(f"{path!r} is corrupted: its tensors or header do not match the stored checksum")
    if _TENSOR_DIGEST_KEY not in header:
        raise CheckpointError(f"{path!r} is a safetensors file but not a toolkit checkpoint (no checksum)")
    if _digest(tensors) != header.pop(_TENSOR_DIGEST_KEY):
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
