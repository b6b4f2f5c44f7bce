"""Settings of `galaxy-distill evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from galaxy_distill.experts.settings import ArchitectureName
from galaxy_distill.settings import Settings


class EvaluateSettings(Settings):
    renamed: ClassVar[dict[str, str]] = {"num_eval": "networks"}

    run: Path | None = Field(None, description="distillation run directory (or its synthetic.safetensors) whose images "
                             "are evaluated (default: none, only --baselines)")
    selection: Literal["validation", "final"] = Field(
        "validation", description="which set of the run: the one it kept (best on the validation split where it "
        "evaluated; synthetic.safetensors) or its last iteration's (final.safetensors)")
    dataset: str | None = Field(None, description="prepared dataset (name or directory) to test on (default: the "
                                "run's dataset)")
    baselines: list[Literal["random", "class_average", "full"]] = Field(
        [], description="reference training sets: random real images, class-average images (both --ipc per class) or "
        "the full training split")
    ipc: int | None = Field(None, ge=1, description="images per class of the random and class_average baselines "
                            "(default: the run's; without --run they need it)")
    architectures: list[ArchitectureName] = Field(["convnet"], description="networks to train")
    networks: int = Field(5, ge=1, description="networks trained per candidate set and architecture (mean ± std)")
    epochs: int = Field(1000, ge=1, description="training epochs on a distilled or baseline set")
    full_epochs: int = Field(50, ge=1, description="training epochs on the full training split (baseline full)")
    lr: float | None = Field(None, gt=0, description="learning rate of the networks (default: the run's learned step "
                             "size for its images, 0.01 for the baselines)")
    batch_size: int = Field(256, ge=1, description="training images per step")
    split: Literal["test", "val"] = Field("test", description="split the accuracy is measured on")
    seed: int = Field(0, description="random seed of the networks and the baselines' choice of images")
    device: str = Field("auto", description="where to compute: auto (a GPU if there is one), cpu, cuda or cuda:N")
    resume: bool = Field(False, description="reuse the networks an interrupted evaluation with the same settings finished")
