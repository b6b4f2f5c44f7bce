"""Settings of `galaxy-distill evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from galaxy_distill.config import Settings


class EvaluateSettings(Settings):
    run: Path | None = None
    dataset: str | None = None
    baselines: list[Literal["random", "class_average", "full"]] = []
    ipc: int | None = Field(None, ge=1)
    architectures: list[str] = ["convnet"]
    num_eval: int = Field(5, ge=1)
    epochs: int = Field(1000, ge=1)
    full_epochs: int = Field(50, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int = Field(256, ge=1)
    split: Literal["test", "val"] = "test"
    seed: int = 0
    device: str = "auto"
    resume: bool = Field(False, description="reuse the networks an interrupted evaluation with the same settings finished")
