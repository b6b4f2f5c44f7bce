"""Expert trajectories: networks trained on real data, parameters stored at every epoch."""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that reading the settings (the command line's --help) does not import torch.
_WHERE = {"ExpertSettings": "galaxy_distill.experts.settings", "ExpertStore": "galaxy_distill.experts.store",
          "train_experts": "galaxy_distill.experts.train"}

__all__ = ["ExpertSettings", "ExpertStore", "train_experts"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
