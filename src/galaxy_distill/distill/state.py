"""The state of a distillation between two outer iterations: what a checkpoint holds and a resume restores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from galaxy_distill.distill.checkpoint import optimizer_from_store, optimizer_to_store
from galaxy_distill.distill.faults import RollbackPoint
from galaxy_distill.distill.schedule import FixedSchedule, SelfAdaptiveSchedule
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.distill.step_size import LearnedStepSizes
from galaxy_distill.runtime import seeded_generator


def make_schedule(settings: DistillSettings) -> FixedSchedule | SelfAdaptiveSchedule:
    if settings.method == "mtt":
        return FixedSchedule(max_start_epoch=settings.max_start_epoch, iterations=settings.iterations)
    return SelfAdaptiveSchedule(
        max_start_epoch=settings.max_start_epoch, max_iterations=settings.iterations,
        lambda_decrease=settings.stm_lambda_decrease, lambda_increase=settings.stm_lambda_increase, check_every=settings.stm_check_every,
        patience=settings.stm_patience, decay=settings.stm_decay, decay_every=settings.stm_decay_every,
        stop_factor=settings.stm_stop_factor,
    )


@dataclass
class DistillState:
    """Images, step sizes, optimizer, schedule, random streams, logs and the best set so far."""

    images: torch.Tensor
    """The synthetic images being learned (a leaf that the pixel optimizer updates in place)."""
    step_sizes: LearnedStepSizes
    pixel_optimizer: torch.optim.Optimizer
    schedule: FixedSchedule | SelfAdaptiveSchedule
    rng: np.random.Generator
    """Draws the expert and (for MTT) the start epoch of each iteration."""
    generator: torch.Generator
    """Draws the inner loop's batches and augmentations."""
    best_images: torch.Tensor
    best_step_size: float
    iteration: int = 0
    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_accuracy": None, "iteration": None})
    elapsed: float = 0.0
    lr_factors: dict[str, float] = field(default_factory=lambda: {"lr_img": 1.0, "lr_lr": 1.0})
    """What numerical faults have multiplied lr_img and lr_lr by."""

    @classmethod
    def start(cls, settings: DistillSettings, images: torch.Tensor) -> DistillState:
        """A fresh run from `images` (on the run's device)."""
        images = images.requires_grad_(True)
        stages = settings.max_start_epoch if (settings.lr_per_stage and settings.method == "stm") else 1
        return cls(
            images=images, step_sizes=LearnedStepSizes.start(settings.lr_init, stages, images.device),
            pixel_optimizer=torch.optim.SGD([images], lr=settings.lr_img, momentum=settings.momentum_img),
            schedule=make_schedule(settings), rng=np.random.default_rng(settings.seed),
            generator=seeded_generator(settings.seed + 1), best_images=images.detach().clone(),
            best_step_size=settings.lr_init,
        )

    def current_step_size(self) -> float:
        """The newest stage's learned step size: the one evaluation trains with."""
        return self.step_sizes.value(self.step_sizes.newest(self.schedule.stage))

    def rollback_point(self) -> RollbackPoint:
        return RollbackPoint.capture(self.images, self.step_sizes, self.pixel_optimizer, self.schedule)

    def roll_back(self, point: RollbackPoint) -> None:
        point.restore(self.images, self.step_sizes, self.pixel_optimizer, self.schedule)

    def to_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON metadata) that `restore` turns back into this state."""
        tensors = {"images": self.images, "step_sizes": self.step_sizes.values,
                   "step_size_momentum": self.step_sizes.momentum, "best_images": self.best_images,
                   "generator_state": self.generator.get_state()}
        pixel_tensors, pixel_meta = optimizer_to_store("pixel", self.pixel_optimizer)
        meta = {"iteration": self.iteration, "schedule": self.schedule.state_dict(), "numpy_rng": self.rng.bit_generator.state,
                "pixel_optimizer": pixel_meta, "metrics": self.metric_rows, "events": self.events, "best": self.best,
                "best_step_size": self.best_step_size, "elapsed": self.elapsed, "lr_factors": self.lr_factors}
        return {**tensors, **pixel_tensors}, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        with torch.no_grad():
            self.images.copy_(tensors["images"])
            self.step_sizes.values.copy_(tensors["step_sizes"])
            self.step_sizes.momentum.copy_(tensors["step_size_momentum"])
        self.best_images = tensors["best_images"].to(self.images.device)
        optimizer_from_store("pixel", self.pixel_optimizer, tensors, meta["pixel_optimizer"])
        self.generator.set_state(tensors["generator_state"])
        self.rng.bit_generator.state = meta["numpy_rng"]
        self.schedule.load_state_dict(meta["schedule"])
        self.iteration, self.metric_rows, self.events, self.best = meta["iteration"], meta["metrics"], meta["events"], meta["best"]
        self.best_step_size, self.elapsed, self.lr_factors = meta["best_step_size"], meta["elapsed"], meta["lr_factors"]
