"""Settings of expert training (`galaxy-distill experts`)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from galaxy_distill.settings import Settings


STEPS_PER_EPOCH = 20
"""What the default batch size aims at: about as many steps per epoch as the distillation's default --syn-steps."""
MIN_AUTO_BATCH, MAX_AUTO_BATCH = 8, 256
ArchitectureName = Literal["convnet", "resnet18", "vgg11"]
"""The networks models.MODELS builds (tests/test_settings.py checks that they agree)."""
NormName = Literal["instancenorm", "batchnorm", "none"]
FEW_STEPS_PER_EPOCH = 3
"""Fewer steps than this per epoch leave the stored trajectories barely moving between epochs."""


class ExpertSettings(Settings):
    retired: ClassVar[frozenset[str]] = frozenset({"stacking", "channels_last"})
    renamed: ClassVar[dict[str, str]] = {"model": "architecture"}

    dataset: str = Field(description="prepared dataset (name or directory) the experts train on")
    architecture: ArchitectureName = Field("convnet", description="network architecture (as evaluate's --architectures)")
    depth: int | None = Field(None, ge=1, description="convnet blocks, each halving the image side (default: 3 at 32 px, "
                              "one more for every doubling of the size)")
    width: int = Field(128, ge=1, description="convnet channels per block")
    norm: NormName | None = Field(None, description="normalisation layers (default: "
                             "instancenorm for convnet and vgg11, batchnorm for resnet18)")
    num_experts: int = Field(5, ge=1, description="expert networks to train, each from its own random start")
    epochs: int = Field(20, ge=1, description="training epochs per expert; the parameters are stored after each one")
    lr: float = Field(0.01, gt=0, description="SGD learning rate of the experts")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum of the experts, 0 up to below 1")
    weight_decay: float = Field(0.0, ge=0, description="SGD weight decay of the experts")
    batch_size: int | None = Field(None, ge=1, description="real images per SGD step (default: the training split over "
                                   f"{STEPS_PER_EPOCH}, between {MIN_AUTO_BATCH} and {MAX_AUTO_BATCH}, so that an epoch has "
                                   f"about {STEPS_PER_EPOCH} steps)")
    augment: str = Field("color_crop_cutout_flip_scale_rotate", description="differentiable augmentation: ops joined by _ "
                         "from color, crop, cutout, flip, scale, rotate, or none")
    parallel: int = Field(10, ge=1, description="experts trained at once as one stacked parameter tensor")
    precision: Literal["fp32", "bf16-full"] = Field(
        "fp32", description="arithmetic of the expert steps: bf16-full casts parameters and images to bfloat16 so that "
        "every activation is bf16 (faster with --compile on GPUs); the parameters, their updates and the loss stay float32")
    compile: bool = Field(False, description="torch.compile one network's step: "
                          "fuses the normalisation, ReLU and pooling work; on GPUs the step of all experts is replayed as "
                          "one CUDA graph, each expert on a stream of its own (compiles for a minute first)")
    test_every: int = Field(1, ge=1, description="score every expert's test accuracy after every N-th epoch and after the "
                            "last (each scoring is a forward pass of every expert over the whole test split)")
    seed: int = Field(0, description="random seed of the initialisations, shuffles and augmentation")
    device: str = Field("auto", description="where to compute: auto (a GPU if there is one), cpu, cuda or cuda:N")


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    return math.ceil(train_images / batch_size)


def automatic_batch_size(train_images: int) -> int:
    """The default batch size: about STEPS_PER_EPOCH steps per epoch, within MIN_AUTO_BATCH..MAX_AUTO_BATCH."""
    return max(MIN_AUTO_BATCH, min(MAX_AUTO_BATCH, train_images // STEPS_PER_EPOCH))


def few_steps_warning(train_images: int, batch_size: int) -> str | None:
    """A warning when an epoch of `train_images` takes so few steps that the stored trajectories hardly move."""
    steps = steps_per_epoch(train_images, batch_size)
    if steps >= FEW_STEPS_PER_EPOCH:
        return None
    return (f"warning: --batch-size {batch_size} makes only {steps} step(s) per epoch of the {train_images} training "
            f"images: the trajectories barely move between stored epochs and distillation learns noise; use "
            f"--batch-size {automatic_batch_size(train_images)} or leave it unset to choose it from the data")
