"""What a dataset builder hands over, and the settings every builder reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from galaxy_distill.errors import GalaxyDistillError

GZ2_CLASSES: tuple[str, ...] = (
    "smooth-round",
    "smooth-in-between",
    "smooth-cigar",
    "edge-on-bulge",
    "edge-on-no-bulge",
    "barred-spiral",
    "barred-no-spiral",
    "unbarred-spiral",
    "unbarred-no-spiral",
)
"""The nine Galaxy Zoo 2 decision-tree classes of Guan et al. 2023, in this order everywhere."""


@dataclass
class SourceImages:
    """Images chosen by a builder, before the common split / augmentation / whitening steps.

    `table` holds one row per image (e.g. catalogue ids, simulation parameters), same order.
    `test` is an explicit test split when the source has one (CIFAR, a --test-root folder).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    provenance: dict[str, Any]
    table: pd.DataFrame | None = None
    test: SourceImages | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be uint8 NHWC with 1 or 3 channels, got {self.images.dtype} {self.images.shape}")
        if len(self.labels) != len(self.images):
            raise ValueError("one label per image expected")
        if self.table is not None and len(self.table) != len(self.images):
            raise ValueError("one table row per image expected")


def choose_per_class(
    labels: np.ndarray, class_names: list[str], per_class: int | None, seed: int, where: str
) -> np.ndarray:
    """Indices of `per_class` images of every class (default: as many as the smallest class has), seeded."""
    counts = np.bincount(labels, minlength=len(class_names))
    if (counts == 0).any():
        empty = [class_names[k] for k in np.flatnonzero(counts == 0)]
        raise GalaxyDistillError(f"{where}: no images for class(es) {', '.join(empty)}")
    wanted = int(counts.min()) if per_class is None else per_class
    short = [(class_names[k], int(c)) for k, c in enumerate(counts) if c < wanted]
    if short:
        detail = ", ".join(f"{name} has {count}" for name, count in short)
        raise GalaxyDistillError(f"{where}: {wanted} images per class requested but {detail}")
    rng = np.random.default_rng(seed)
    chosen = [np.sort(rng.choice(np.flatnonzero(labels == k), size=wanted, replace=False)) for k in range(len(class_names))]
    return np.concatenate(chosen)


def load_with_replacements(labels: np.ndarray, chosen: np.ndarray, seed: int,
                           load: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Load the `chosen` indices, replacing each one that `load` could not read by another of its class
    (drawn in a seeded order) until every class is back to its count or out of images.

    `load(indices)` reads those images and returns the ones it could read; returns all indices read, class by
    class (as `choose_per_class` orders them)."""
    class_count = int(labels.max()) + 1
    wanted = np.bincount(labels[chosen], minlength=class_count)
    rng = np.random.default_rng(seed + 1)
    spare = [list(rng.permutation(np.setdiff1d(np.flatnonzero(labels == k), chosen))) for k in range(class_count)]
    loaded = [load(np.asarray(chosen))]
    while True:
        counts = np.bincount(labels[np.concatenate(loaded)], minlength=class_count)
        extra = [index for k in range(class_count) for index in spare[k][: max(0, wanted[k] - counts[k])]]
        if not extra:
            read = np.concatenate(loaded)
            return read[np.lexsort((read, labels[read]))]
        for k in range(class_count):
            del spare[k][: max(0, wanted[k] - counts[k])]
        loaded.append(load(np.sort(np.asarray(extra, dtype=np.int64))))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held_out), holding out round(fraction * n_k) of each class k."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        n_held = int(fraction * len(members) + 0.5)  # half up: 10% of 5 holds one out
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))
