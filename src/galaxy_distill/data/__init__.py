"""Datasets: build from sources, prepare (split, augment, whiten, store) and load by name."""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that reading the settings (the command line's --help) imports neither numpy nor torch.
_WHERE = {"PrepareSettings": "galaxy_distill.data.settings", "SourceImages": "galaxy_distill.data.base",
          "DATASETS": "galaxy_distill.data.registry", "PreparedDataset": "galaxy_distill.data.registry",
          "load_prepared": "galaxy_distill.data.registry", "prepare": "galaxy_distill.data.registry"}

__all__ = ["DATASETS", "PrepareSettings", "PreparedDataset", "SourceImages", "load_prepared", "prepare"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
