"""Settings of expert training (`galaxy-distill experts`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from galaxy_distill.config import Settings


class ExpertSettings(Settings):
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
    stacking: Literal["loop", "vmap"] = Field(
        "loop", description="how a step runs the stacked experts: loop (one ordinary network after another) or vmap (one "
        "launch per layer for all of them, as grouped convolutions; slower on an H200 and on CPUs, see docs/performance.md)")
    precision: Literal["fp32", "bf16", "bf16-full"] = Field(
        "fp32", description="arithmetic of the expert steps: bf16 runs forward and backward under bfloat16 autocast "
        "(normalisation in float32), bf16-full casts parameters and images to bfloat16 so that every activation is "
        "bf16; either way the parameters, their updates and the loss stay float32")
    compile: bool = Field(False, description="torch.compile one network's step and run the experts one after another: "
                          "fuses the normalisation, ReLU and pooling work; on GPUs the step of all experts is replayed as "
                          "one CUDA graph, each expert on a stream of its own (compiles for a minute first)")
    channels_last: bool = Field(False, description="feed the networks channels-last (NHWC) batches, which GPU convolution "
                                "kernels for bf16 prefer")
    test_every: int = Field(1, ge=1, description="score every expert's test accuracy after every N-th epoch and after the "
                            "last (each scoring is a forward pass of every expert over the whole test split)")
    seed: int = 0
    device: str = "auto"

    @model_validator(mode="after")
    def _compile_runs_a_loop(self) -> ExpertSettings:
        if self.compile and self.stacking == "vmap":
            raise ValueError("compile runs the experts one after another: use stacking loop with it")
        return self
