"""Settings of expert training (`galaxy-distill experts`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from galaxy_distill.config import Settings


class ExpertSettings(Settings):
    retired: ClassVar[frozenset[str]] = frozenset({"stacking", "channels_last"})

    dataset: str
    model: str = "convnet"
    depth: int | None = Field(None, ge=1)
    width: int = Field(128, ge=1)
    norm: str | None = None
    num_experts: int = Field(5, ge=1)
    epochs: int = Field(20, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, ge=1)
    augment: str = "color_crop_cutout_flip_scale_rotate"
    parallel: int = Field(10, ge=1, description="experts trained at once as one stacked parameter tensor")
    precision: Literal["fp32", "bf16-full"] = Field(
        "fp32", description="arithmetic of the expert steps: bf16-full casts parameters and images to bfloat16 so that "
        "every activation is bf16 (faster with --compile on GPUs); the parameters, their updates and the loss stay float32")
    compile: bool = Field(False, description="torch.compile one network's step: "
                          "fuses the normalisation, ReLU and pooling work; on GPUs the step of all experts is replayed as "
                          "one CUDA graph, each expert on a stream of its own (compiles for a minute first)")
    test_every: int = Field(1, ge=1, description="score every expert's test accuracy after every N-th epoch and after the "
                            "last (each scoring is a forward pass of every expert over the whole test split)")
    seed: int = 0
    device: str = "auto"
