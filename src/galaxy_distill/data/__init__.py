"""Datasets: build from sources, prepare (split, augment, whiten, store) and load by name."""

from galaxy_distill.data.base import PrepareSettings, SourceImages
from galaxy_distill.data.registry import DATASETS, PreparedDataset, load_prepared, prepare

__all__ = ["DATASETS", "PrepareSettings", "PreparedDataset", "SourceImages", "load_prepared", "prepare"]
