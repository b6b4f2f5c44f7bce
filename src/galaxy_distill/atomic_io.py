"""Safe, atomic storage of tensors (safetensors) and metadata (JSON/YAML).

Every write goes to a temporary file in the same directory and is renamed into
place, so a reader never sees a half-written file, even after kill -9.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.numpy import load_file as _load_numpy
from safetensors.numpy import save as _save_numpy_bytes
from safetensors.torch import load_file as _load_torch
from safetensors.torch import save as _save_torch_bytes

from galaxy_distill.errors import GalaxyDistillError

TEMPORARY_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


def follow_umask(directory: Path) -> None:
    """Give a directory made by tempfile.mkdtemp (always 0700) the permissions of any new directory."""
    os.chmod(directory, 0o777 & ~_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should be as readable as any new file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_interrupted_writes(directory: str | Path, name: str = "*") -> None:
    """Delete the temporaries that writes of `name` (a glob) killed before their rename left in `directory`.

    Only for files that no other process is writing (a run being resumed).
    """
    directory = Path(directory)
    if directory.is_dir():
        for leftover in directory.glob(f".{name}.*{TEMPORARY_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_json(path: str | Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, default=_jsonable, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GalaxyDistillError(f"{path}: file not found") from None
    except OSError as exc:
        raise GalaxyDistillError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalaxyDistillError(f"{path}: not valid JSON ({exc})") from None


def write_yaml(path: str | Path, payload: Any) -> None:
    text = yaml.safe_dump(json.loads(json.dumps(payload, default=_jsonable)), sort_keys=False)
    atomic_write_bytes(path, text.encode())


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GalaxyDistillError(f"{path}: config file not found") from None
    except OSError as exc:
        raise GalaxyDistillError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise GalaxyDistillError(f"{path}: config file is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise GalaxyDistillError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise GalaxyDistillError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_matches(path: str | Path, expected_sha256: str) -> bool:
    """Whether the file exists and has this SHA-256 (an intact output of an earlier run)."""
    return Path(path).is_file() and sha256_file(path) == expected_sha256


def _sorted_metadata(data: bytes) -> bytes:
    """The same safetensors file with its metadata in key order.

    safetensors writes metadata in hash-map order, which changes from process to process, so
    equal content would give different bytes and checksums; the tensors' offsets are relative to
    the end of the header, so only the header is rewritten.
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if len(header.get("__metadata__") or {}) < 2:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """Write torch tensors atomically, byte-identical for equal content; returns the file's SHA-256."""
    payload = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    data = _sorted_metadata(_save_torch_bytes(payload, metadata=dict(metadata) if metadata else None))
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> str:
    """Write numpy arrays atomically, byte-identical for equal content; returns the file's SHA-256."""
    payload = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    data = _sorted_metadata(_save_numpy_bytes(payload, metadata=dict(metadata) if metadata else None))
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _check_digest(path: Path, expected_sha256: str | None) -> None:
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise GalaxyDistillError(f"{path}: checksum mismatch (file is corrupt or was changed after writing)")


def load_tensors(path: str | Path, expected_sha256: str | None = None, device: str = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise GalaxyDistillError(f"{path}: tensor file not found")
    _check_digest(path, expected_sha256)
    try:
        return _load_torch(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise GalaxyDistillError(f"{path}: not a readable safetensors file ({exc})") from None


def load_arrays(path: str | Path, expected_sha256: str | None = None) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise GalaxyDistillError(f"{path}: array file not found")
    _check_digest(path, expected_sha256)
    try:
        return _load_numpy(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise GalaxyDistillError(f"{path}: not a readable safetensors file ({exc})") from None
