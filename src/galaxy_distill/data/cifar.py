"""CIFAR-10/100 from the standard python layouts (cifar-10-batches-py, cifar-100-python).

Those files are pickles. A restricted unpickler admits only the numpy and builtin
types that the official files contain, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from galaxy_distill.data.base import SourceImages, choose_per_class
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.locations import require_dir, require_file
from galaxy_distill.errors import GalaxyDistillError

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain arrays and lists are allowed")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict[str, Any]:
    require_file(path, "a CIFAR python-format batch file")
    try:
        entry = _DataOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise GalaxyDistillError(f"{path}: not a valid CIFAR batch file ({exc})") from None
    if not isinstance(entry, dict):
        raise GalaxyDistillError(f"{path}: expected a dict, got {type(entry).__name__}")
    return entry


def _images_and_labels(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    entry = read_batch(path)
    missing = [key for key in ("data", label_key) if key not in entry]
    if missing:
        raise GalaxyDistillError(f"{path}: missing key(s) {', '.join(missing)}")
    try:
        data = np.asarray(entry["data"])
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise GalaxyDistillError(f"{path}: 'data' must be an N x 3072 array and '{label_key}' a list of integer labels") from None
    if labels.ndim != 1:
        raise GalaxyDistillError(f"{path}: '{label_key}' must be a flat list of labels, got shape {labels.shape}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise GalaxyDistillError(f"{path}: 'data' must be N x 3072 uint8, got {data.dtype} {data.shape}")
    if len(labels) != len(data):
        raise GalaxyDistillError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise GalaxyDistillError(f"{path}: labels must lie in 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _build(settings: PrepareSettings, folder: str, train_files: list[str], meta_file: str, names_key: str,
           label_key: str, num_classes: int) -> SourceImages:
    layout = f"{folder}/ with {', '.join(train_files)}, test_batch/test and {meta_file}"
    if settings.root is None:
        raise GalaxyDistillError(f"pass --root DIR where DIR holds {layout}")
    base = settings.root / folder if (settings.root / folder).is_dir() else settings.root
    require_dir(base, layout)
    if settings.size != 32 or settings.crop_fraction != 1.0:
        raise GalaxyDistillError("CIFAR images are used at their native 32x32: leave --size and --crop-fraction unset")
    test_file = "test_batch" if folder.startswith("cifar-10-") else "test"
    for name in [*train_files, test_file, meta_file]:
        require_file(base / name, layout)
    listed = read_batch(base / meta_file).get(names_key)
    if not isinstance(listed, (list, tuple)) or len(listed) != num_classes:
        raise GalaxyDistillError(f"{base / meta_file}: expected '{names_key}', a list of {num_classes} class names")
    names = [str(n) for n in listed]
    parts = [_images_and_labels(base / name, label_key, num_classes) for name in train_files]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = _images_and_labels(base / test_file, label_key, num_classes)
    if settings.per_class is not None:
        chosen = np.sort(choose_per_class(train_labels, names, settings.per_class, settings.seed, str(base)))
        train_images, train_labels = train_images[chosen], train_labels[chosen]
    provenance = {"source": str(base), "dataset": folder}
    test = SourceImages(test_images, test_labels, names, provenance)
    return SourceImages(train_images, train_labels, names, provenance, test=test)


def build_cifar10(settings: PrepareSettings) -> SourceImages:
    return _build(settings, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "batches.meta",
                  "label_names", "labels", 10)


def build_cifar100(settings: PrepareSettings) -> SourceImages:
    return _build(settings, "cifar-100-python", ["train"], "meta", "fine_label_names", "fine_labels", 100)
