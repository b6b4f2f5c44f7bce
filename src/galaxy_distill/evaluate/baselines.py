"""Reference image sets a distilled set must beat: random real images, class averages, all data."""

from __future__ import annotations

import numpy as np
import torch

from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.errors import GalaxyDistillError

BASELINES = ("random", "class_average", "full")


def baseline_set(kind: str, dataset: PreparedDataset, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images and labels of a baseline: `ipc` per class, class-major (all of train for 'full')."""
    if kind == "full":
        return dataset.tensors("train")
    if kind not in BASELINES:
        raise GalaxyDistillError(f"unknown baseline '{kind}'; choose from {', '.join(BASELINES)}")
    labels = dataset.labels("train")
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for k, name in enumerate(dataset.class_names):
        members = rng.permutation(np.flatnonzero(labels == k))
        if len(members) < ipc:
            raise GalaxyDistillError(f"class '{name}' has {len(members)} training images, fewer than ipc={ipc}")
        if kind == "random":
            images.append(dataset.normalize(dataset.images("train")[members[:ipc]]))
        else:
            groups = np.array_split(members, ipc)
            images.append(torch.stack([dataset.normalize(dataset.images("train")[group]).mean(0) for group in groups]))
        targets.append(torch.full((ipc,), k, dtype=torch.long))
    return torch.cat(images), torch.cat(targets)
