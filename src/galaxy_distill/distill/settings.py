"""Settings of a distillation run (`galaxy-distill distill`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from galaxy_distill.config import Settings


class DistillSettings(Settings):
    retired: ClassVar[frozenset[str]] = frozenset({"channels_last", "stored_steps"})

    dataset: str
    experts: Path
    method: Literal["mtt", "stm"] = "stm"
    ipc: int = Field(1, ge=1)
    syn_steps: int = Field(20, ge=1)
    expert_epochs: int = Field(1, ge=1)
    max_start_epoch: int = Field(10, ge=1)
    iterations: int = Field(5000, ge=1)
    batch_syn: int | None = Field(None, ge=1, description="synthetic images per inner step (default: all)")
    batch_chunk: int | None = Field(
        None, ge=1, description="images per chunk of an inner step's batch: caps memory, same gradients (default: whole batch)")
    cuda_graphs: bool = Field(True, description="replay each inner step as a CUDA graph on GPUs (same results, far fewer launches)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="the student network's arithmetic: bf16 runs its forward under bfloat16 autocast (faster on "
        "GPUs with bf16 units; pixel gradients agree with fp32 to cosine >= 0.99, see docs/performance.md)")
    compile: bool = Field(False, description="torch.compile the student network's part of each inner step (fused "
                          "kernels, inside the CUDA graphs where those run; compiles for a minute or more first)")
    init: Literal["real", "noise"] = "real"
    lr_img: float = Field(100.0, gt=0)
    momentum_img: float = Field(0.5, ge=0, lt=1)
    lr_init: float = Field(0.01, gt=0, description="the learned student step size's starting value (MTT's lr_teacher)")
    lr_lr: float = Field(1e-5, ge=0, description="learning rate of the student step size, updated as MTT does: SGD "
                         "with momentum 0.5 on the step size itself (0 keeps it at --lr-init)")
    lr_per_stage: bool = Field(False, description="STM only: one learned step size per start epoch, each new one "
                               "starting from the newest, all moving at lr_lr x pool size (the STM code's "
                               "independent-lr mode)")
    augment: str = "color_crop_cutout_flip_scale_rotate"
    seed: int = 0
    device: str = "auto"
    eval_every: int = Field(500, ge=1)
    eval_nets: int = Field(2, ge=1)
    eval_epochs: int = Field(300, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    snapshot_every: int = Field(100, ge=1)
    tensorboard: bool = False
    stm_lambda: float = Field(5.0, gt=0)
    stm_rise: float = Field(3.0, gt=0)
    stm_check_every: int = Field(10, ge=1)
    stm_patience: int = Field(1000, ge=1)
    stm_decay: float = Field(0.8, gt=0, lt=1)
    stm_decay_every: int = Field(50, ge=1)
    stm_stop_factor: float = Field(0.05, gt=0, lt=1, description="STM stops once fine-tuning has decayed the pixel "
                                   "learning rate below this fraction of --lr-img (the STM code stops below 50, i.e. "
                                   "0.05 of its default lr_img 1000)")
