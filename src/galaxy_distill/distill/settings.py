"""Settings of a distillation run (`galaxy-distill distill`)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from galaxy_distill.settings import Settings


class DistillSettings(Settings):
    retired: ClassVar[frozenset[str]] = frozenset({"channels_last", "stored_steps"})
    free_on_resume: ClassVar[frozenset[str]] = frozenset({"iterations", "time_limit"})
    renamed: ClassVar[dict[str, str]] = {"eval_nets": "eval_networks", "stm_lambda": "stm_lambda_decrease",
                                         "stm_rise": "stm_lambda_increase"}

    dataset: str = Field(description="prepared dataset (name or directory) to distil; the one the experts trained on")
    experts: Path = Field(description="expert store directory written by `galaxy-distill experts`")
    method: Literal["mtt", "stm"] = Field("stm", description="mtt: MTT's fixed schedule of start epochs; stm: the "
                                          "self-adaptive schedule, which also stops by itself")
    ipc: int = Field(1, ge=1, description="synthetic images per class to distil")
    syn_steps: int = Field(20, ge=1, description="student steps on the synthetic images per iteration (the unroll "
                           "that is matched to the expert's trajectory)")
    expert_epochs: int = Field(1, ge=1, description="expert epochs the student's syn-steps are matched to")
    max_start_epoch: int = Field(10, ge=1, description="latest expert epoch a matched segment starts at (for stm the "
                                 "most the start-epoch pool can grow to); plus --expert-epochs at most the stored epochs")
    iterations: int = Field(5000, ge=1, description="outer iterations (for stm the most it runs before stopping by "
                            "itself); --resume with a larger value continues a finished run")
    time_limit: float | None = Field(None, gt=0, description="minutes of distilling after which the run stops at the end "
                                     "of an iteration, saves a checkpoint and writes its sets; --resume continues it "
                                     "(default: no limit)")
    batch_syn: int | None = Field(None, ge=1, description="synthetic images per inner step (default: all)")
    batch_chunk: int | None = Field(
        None, ge=1, description="images per chunk of an inner step's batch: caps memory, same gradients (default: whole batch)")
    cuda_graphs: bool = Field(True, description="replay each inner step as a CUDA graph on GPUs (same results, far fewer launches)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="the student network's arithmetic: bf16 runs its forward under bfloat16 autocast (faster on "
        "GPUs with bf16 units; pixel gradients agree with fp32 to cosine >= 0.99, see docs/performance.md)")
    compile: bool = Field(False, description="torch.compile the student network's part of each inner step (fused "
                          "kernels, inside the CUDA graphs where those run; compiles for a minute or more first)")
    init: Literal["real", "noise"] = Field("real", description="starting images: real training images chosen at "
                                           "random, or Gaussian noise")
    lr_img: float = Field(100.0, gt=0, description="SGD learning rate of the synthetic pixels")
    momentum_img: float = Field(0.5, ge=0, lt=1, description="SGD momentum of the synthetic pixels, 0 up to below 1")
    lr_init: float = Field(0.01, gt=0, description="the learned student step size's starting value (MTT's lr_teacher)")
    lr_lr: float = Field(1e-5, ge=0, description="learning rate of the student step size, updated as MTT does: SGD "
                         "with momentum 0.5 on the step size itself (0 keeps it at --lr-init)")
    lr_per_stage: bool = Field(False, description="stm: one learned step size per start epoch, each new one "
                               "starting from the newest, all moving at lr_lr x pool size (the STM code's "
                               "independent-lr mode)")
    augment: str = Field("color_crop_cutout_flip_scale_rotate", description="differentiable augmentation of the "
                         "synthetic images: ops joined by _ from color, crop, cutout, flip, scale, rotate, or none")
    seed: int = Field(0, description="random seed of the initial images, expert and epoch choices and augmentation")
    device: str = Field("auto", description="where to compute: auto (a GPU if there is one), cpu, cuda or cuda:N")
    eval_every: int = Field(500, ge=1, description="iterations between validation evaluations, which choose the "
                            "images kept")
    eval_networks: int = Field(2, ge=1, description="networks trained on the synthetic images at each validation evaluation")
    eval_epochs: int = Field(300, ge=1, description="epochs each validation network trains")
    checkpoint_every: int = Field(50, ge=1, description="iterations between checkpoints (--resume continues from the last)")
    snapshot_every: int = Field(100, ge=1, description="iterations between PNG snapshots of the images in RUN/snapshots")
    tensorboard: bool = Field(False, description="also log the curves for TensorBoard in RUN/tensorboard (needs the "
                              "tensorboard package)")
    stm_lambda_decrease: float = Field(5.0, gt=0, description="stm: Pearson-test threshold on the probe loss's trend that grows "
                              "the start-epoch pool")
    stm_lambda_increase: float = Field(3.0, gt=0, description="stm: Pearson-test threshold of a rising probe loss, "
                                       "which also grows the start-epoch pool")
    stm_check_every: int = Field(10, ge=1, description="stm: iterations between trend tests")
    stm_patience: int = Field(1000, ge=1, description="stm: iterations without growth before fine-tuning starts")
    stm_decay: float = Field(0.8, gt=0, lt=1, description="stm: factor of the pixel learning rate at each decay while "
                             "fine-tuning")
    stm_decay_every: int = Field(50, ge=1, description="stm: iterations between decays while fine-tuning")
    stm_stop_factor: float = Field(0.05, gt=0, lt=1, description="stm: stop once fine-tuning has decayed the pixel "
                                   "learning rate below this share of --lr-img (the STM code stops below 50, i.e. "
                                   "0.05 of its default lr_img 1000)")
