"""One registry of datasets: prepare (build, split, augment, whiten, store) and load by name."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from galaxy_distill.settings import settings_differences, workspace_dir
from galaxy_distill.data.base import SourceImages, stratified_split
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.transforms import apply_matrix, fit_zca, rotate_augment
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.atomic_io import (
    atomic_write_bytes,
    load_arrays,
    read_json,
    save_arrays,
    write_json,
)

FORMAT_VERSION = 1
IMAGES_FILE = "images.safetensors"
META_FILE = "meta.json"
REQUIRED_META = ("format_version", "name", "dataset", "class_names", "channel_mean", "channel_std", "counts", "images_sha256")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    builder: str
    description: str
    defaults: dict[str, Any]

    def build(self, settings: PrepareSettings) -> SourceImages:
        module_name, function_name = self.builder.split(":")
        function: Callable[[PrepareSettings], SourceImages] = getattr(importlib.import_module(module_name), function_name)
        return function(settings)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "gz1-sdss",
            "galaxy_distill.data.gz1:build",
            "Real SDSS colour cutouts with Galaxy Zoo 1 classes (elliptical, spiral, edge-on[, merger])",
            {"size": 128, "crop_fraction": 0.5, "test_fraction": 0.1},
        ),
        DatasetSpec(
            "gz2",
            "galaxy_distill.data.gz2:build",
            "The 9-class Galaxy Zoo 2 set curated from gz2_hart16 or the Kaggle Galaxy Challenge tables",
            {"size": 128, "crop_fraction": 0.5, "per_class": 600, "test_fraction": 1 / 6},
        ),
        DatasetSpec(
            "simzoo",
            "galaxy_distill.data.simzoo:build",
            "Simulated SDSS-like galaxies (GalSim) in the 9 GZ2 classes, with ground-truth parameters",
            {"size": 128, "crop_fraction": 1.0, "per_class": 100, "test_fraction": 0.1},
        ),
        DatasetSpec(
            "cifar10",
            "galaxy_distill.data.cifar:build_cifar10",
            "CIFAR-10 from the standard cifar-10-batches-py layout",
            {"size": 32, "crop_fraction": 1.0, "test_fraction": 0.0},
        ),
        DatasetSpec(
            "cifar100",
            "galaxy_distill.data.cifar:build_cifar100",
            "CIFAR-100 from the standard cifar-100-python layout",
            {"size": 32, "crop_fraction": 1.0, "test_fraction": 0.0},
        ),
        DatasetSpec(
            "folder",
            "galaxy_distill.data.folder:build",
            "Your own images: ROOT/<class name>/ holds each class (JPEG, PNG, WebP, TIFF, FITS)",
            {"size": 128, "crop_fraction": 1.0, "test_fraction": 0.1},
        ),
    ]
}


def spec_for(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise GalaxyDistillError(f"unknown dataset '{dataset}'; known: {', '.join(DATASETS)}")
    return DATASETS[dataset]


def with_defaults(settings: PrepareSettings) -> PrepareSettings:
    spec = spec_for(settings.dataset)
    missing = {key: value for key, value in spec.defaults.items() if getattr(settings, key) is None}
    return settings.model_copy(update=missing)


@dataclass
class PreparedDataset:
    """A prepared dataset on disk, loaded: uint8 images plus what is needed to normalise them."""

    directory: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) as the networks see it."""
        height, width, channels = self.arrays["train_images"].shape[1:]
        return channels, height, width

    @property
    def uses_zca(self) -> bool:
        return "zca_whiten" in self.arrays

    def images(self, split: str) -> np.ndarray:
        return self.arrays[f"{split}_images"]

    def labels(self, split: str) -> np.ndarray:
        return self.arrays[f"{split}_labels"]

    def table(self, split: str) -> pd.DataFrame | None:
        path = self.directory / f"{split}_table.csv"
        return pd.read_csv(path) if path.is_file() else None

    def normalize(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float32 NCHW, standardised per channel (and ZCA-whitened if prepared so)."""
        pixels = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        mean = torch.tensor(self.meta["channel_mean"]).view(1, -1, 1, 1)
        std = torch.tensor(self.meta["channel_std"]).view(1, -1, 1, 1)
        return self.whiten((pixels - mean) / std)

    def whiten(self, standardized: torch.Tensor) -> torch.Tensor:
        """Standardised pixels -> network input: ZCA-whitened if prepared so (differentiable)."""
        if self.uses_zca:
            return apply_matrix(standardized, torch.from_numpy(self.arrays["zca_whiten"]))
        return standardized

    def unwhiten(self, normalized: torch.Tensor) -> torch.Tensor:
        """Network input (float NCHW) -> standardised pixels on the CPU, any ZCA whitening undone."""
        values = normalized.detach().float().cpu()
        if self.uses_zca:
            return apply_matrix(values, torch.from_numpy(self.arrays["zca_unwhiten"]))
        return values

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normalize(self.images(split)), torch.from_numpy(self.labels(split).astype(np.int64))

    def to_display(self, normalized: torch.Tensor) -> np.ndarray:
        """Undo ZCA and standardisation: float NCHW -> uint8 NHWC for showing to people."""
        values = self.unwhiten(normalized)
        mean = torch.tensor(self.meta["channel_mean"]).view(1, -1, 1, 1)
        std = torch.tensor(self.meta["channel_std"]).view(1, -1, 1, 1)
        pixels = (values * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).numpy()


def channel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images in [0, 1], accumulated in float64 chunk by chunk."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, images.shape[-1]).astype(np.float64)
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    count = images.size // images.shape[-1]
    mean = total / count
    variance = np.maximum(squares / count - mean**2, 0.0)
    return mean / 255.0, np.sqrt(variance) / 255.0 + 1e-6


def datasets_root() -> Path:
    """Where prepared datasets live: the workspace's datasets/ folder."""
    return workspace_dir() / "datasets"


def prepared_names() -> list[str]:
    """Names of the datasets prepared in the workspace."""
    root = datasets_root()
    return sorted(p.name for p in root.iterdir() if (p / META_FILE).is_file()) if root.is_dir() else []


def dataset_dir(name: str) -> Path:
    return datasets_root() / name


def prepare(settings: PrepareSettings, out_dir: Path | None = None, force: bool = False) -> PreparedDataset:
    """Build, split, augment, whiten and store a dataset. Idempotent: same settings -> reuse."""
    settings = with_defaults(settings)
    target = out_dir or dataset_dir(settings.stored_name)
    resolved = json.loads(settings.model_dump_json())
    if not force and (target / META_FILE).is_file():
        existing = read_json(target / META_FILE)
        if existing.get("settings") == resolved and existing.get("format_version") == FORMAT_VERSION:
            return load_prepared(target)
        differences = settings_differences(PrepareSettings, existing.get("settings"), resolved, str(target / META_FILE))
        if differences and existing.get("format_version") == FORMAT_VERSION:
            raise GalaxyDistillError(
                f"{target}: dataset '{settings.stored_name}' is already prepared there with other settings "
                f"({'; '.join(differences)}); pass --name NEW to keep both, or --force to replace it")

    source = spec_for(settings.dataset).build(settings)
    if source.test is not None and settings.test_fraction:
        source.notes.append(f"test_fraction {settings.test_fraction} ignored: the source brings its own test split")
    if source.test is not None:
        train_val, test = source, source.test
        train_idx, val_idx = stratified_split(train_val.labels, settings.val_fraction, settings.seed + 1)
    else:
        rest_idx, test_idx = stratified_split(source.labels, settings.test_fraction or 0.0, settings.seed)
        if len(test_idx) == 0:
            raise GalaxyDistillError(f"{settings.dataset}: test_fraction {settings.test_fraction} leaves no test images")
        rest_labels = source.labels[rest_idx]
        kept, held = stratified_split(rest_labels, settings.val_fraction, settings.seed + 1)
        train_idx, val_idx = rest_idx[kept], rest_idx[held]
        train_val, test = source, None

    splits: dict[str, tuple[np.ndarray, np.ndarray, pd.DataFrame | None]] = {}
    for split, indices in (("train", train_idx), ("val", val_idx)):
        table = train_val.table.iloc[indices].reset_index(drop=True) if train_val.table is not None else None
        splits[split] = (train_val.images[indices], train_val.labels[indices], table)
    if test is None:
        table = source.table.iloc[test_idx].reset_index(drop=True) if source.table is not None else None
        splits["test"] = (source.images[test_idx], source.labels[test_idx], table)
    else:
        splits["test"] = (test.images, test.labels, test.table)

    train_images, train_labels, train_table = splits["train"]
    if settings.rotations > 1:
        train_images, train_labels = rotate_augment(train_images, train_labels, settings.rotations)
        if train_table is not None:
            train_table = pd.concat(
                [train_table.assign(rotation_deg=360.0 * k / settings.rotations) for k in range(settings.rotations)],
                ignore_index=True,
            )
        splits["train"] = (train_images, train_labels, train_table)

    channel_mean, channel_std = channel_statistics(train_images)

    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels, _) in splits.items():
        arrays[f"{split}_images"] = np.ascontiguousarray(images)
        arrays[f"{split}_labels"] = labels.astype(np.int64)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": settings.stored_name,
        "dataset": settings.dataset,
        "class_names": source.class_names,
        "channel_mean": channel_mean.tolist(),
        "channel_std": channel_std.tolist(),
        "counts": {
            split: np.bincount(labels, minlength=len(source.class_names)).tolist()
            for split, (_, labels, _) in splits.items()
        },
        "settings": resolved,
        "provenance": source.provenance,
        "notes": source.notes,
    }
    if settings.zca:
        staging = PreparedDataset(target, meta, arrays)
        whiten, unwhiten = fit_zca(staging.normalize(arrays["train_images"]), settings.zca_regularization)
        arrays["zca_whiten"], arrays["zca_unwhiten"] = whiten.numpy(), unwhiten.numpy()

    target.mkdir(parents=True, exist_ok=True)
    (target / "examples.png").unlink(missing_ok=True)
    for split, (_, _, table) in splits.items():
        table_path = target / f"{split}_table.csv"
        if table is not None:
            atomic_write_bytes(table_path, table.to_csv(index=False).encode())
        else:
            table_path.unlink(missing_ok=True)
    meta["images_sha256"] = save_arrays(target / IMAGES_FILE, arrays)
    write_json(target / META_FILE, meta)
    return PreparedDataset(target, meta, arrays)


def resolve_dataset_dir(name_or_path: str | Path, option: str = "dataset") -> Path:
    """The directory of a prepared dataset given by name or path; `option` names it in errors (e.g. "--dataset")."""
    candidate = Path(name_or_path)
    if (candidate / META_FILE).is_file():
        return candidate
    named = dataset_dir(str(name_or_path))
    if (named / META_FILE).is_file():
        return named
    available = prepared_names()
    hint = f"prepared: {', '.join(available)}" if available else f"nothing prepared yet in {datasets_root()}"
    if str(name_or_path) in DATASETS:
        needs_files = "" if name_or_path == "simzoo" else " (add --root DIR if its files are elsewhere than ../shared/data)"
        advice = f"run `galaxy-distill data prepare {name_or_path}` first{needs_files}"
    else:
        # Naming an unknown dataset in a `data prepare` hint would only lead to a second error.
        advice = (f"prepare one of the known datasets ({', '.join(DATASETS)}) with `galaxy-distill data prepare NAME`, "
                  "e.g. `galaxy-distill data prepare simzoo` (simulated, needs no files), or your own images with "
                  "`galaxy-distill data prepare folder --root DIR --name NAME`")
    raise GalaxyDistillError(f"{option} '{name_or_path}' is not prepared ({hint}); {advice}")


def load_prepared(name_or_path: str | Path, option: str = "dataset") -> PreparedDataset:
    """A prepared dataset by name or directory; `option` names it in errors (e.g. "--dataset")."""
    directory = resolve_dataset_dir(name_or_path, option)
    meta = read_json(directory / META_FILE)
    if not isinstance(meta, dict):
        raise GalaxyDistillError(f"{directory / META_FILE}: expected a JSON object")
    # The version first: another version's meta.json may lack keys of this one, and its version is the real reason.
    if "format_version" in meta and meta["format_version"] != FORMAT_VERSION:
        raise GalaxyDistillError(f"{directory / META_FILE}: format version {meta['format_version']} is not {FORMAT_VERSION}; prepare it again")
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise GalaxyDistillError(f"{directory / META_FILE}: missing key(s) {', '.join(missing)}; prepare the dataset again")
    arrays = load_arrays(directory / IMAGES_FILE, expected_sha256=meta.get("images_sha256"))
    return PreparedDataset(directory, meta, arrays)
