"""Numerical faults of one outer iteration, and the exact undo that lets the loop try it again more gently.

Only where the reference MTT would carry on with garbage does the loop step in: a non-finite loss
or gradient, or a learned step size that is no longer positive. The images, step sizes, optimizer
and schedule are rolled back to the state before the iteration and the offending learning rate is
halved; the remedy uses no randomness of its own, so a resumed run stays bit-identical.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from galaxy_distill.distill.matching import MatchingGradients
from galaxy_distill.distill.schedule import FixedSchedule, SelfAdaptiveSchedule
from galaxy_distill.distill.step_size import LearnedStepSizes

MAX_FAULTS_IN_A_ROW = 5
FAULT_LR_FACTOR = 0.5


@dataclass(frozen=True)
class NumericalFault:
    """What went wrong in one attempted iteration, and which learning rates ("lr_img", "lr_lr") it lowers."""

    description: str
    lowers: tuple[str, ...]


def gradient_fault(gradients: MatchingGradients) -> NumericalFault | None:
    """A non-finite loss or gradient: either update may have led there, so both learning rates are lowered."""
    both = ("lr_img", "lr_lr")
    if not torch.isfinite(gradients.loss):
        return NumericalFault(f"non-finite matching loss ({float(gradients.loss)})", both)
    if not torch.isfinite(gradients.images).all():
        return NumericalFault("non-finite pixel gradient", both)
    if not torch.isfinite(gradients.step_size):
        return NumericalFault("non-finite step-size gradient", both)
    return None


def step_size_fault(step_sizes: LearnedStepSizes) -> NumericalFault | None:
    """A learned step size no longer positive: the student would climb its loss, so lr_lr is lowered."""
    lowest = float(step_sizes.values.min())
    if not lowest > 0:
        return NumericalFault(f"learned step size {lowest:.3g} is not positive", ("lr_lr",))
    return None


@dataclass
class RollbackPoint:
    """Everything one iteration changes, copied before it, so a faulty update can be undone exactly."""

    images: torch.Tensor
    step_sizes: tuple[torch.Tensor, torch.Tensor]
    pixel_optimizer: dict[str, Any]
    schedule: dict[str, Any]

    @classmethod
    def capture(cls, images: torch.Tensor, step_sizes: LearnedStepSizes, pixel_optimizer: torch.optim.Optimizer,
                schedule: FixedSchedule | SelfAdaptiveSchedule) -> RollbackPoint:
        return cls(images.detach().clone(), (step_sizes.values.clone(), step_sizes.momentum.clone()),
                   copy.deepcopy(pixel_optimizer.state_dict()), copy.deepcopy(schedule.state_dict()))

    def restore(self, images: torch.Tensor, step_sizes: LearnedStepSizes, pixel_optimizer: torch.optim.Optimizer,
                schedule: FixedSchedule | SelfAdaptiveSchedule) -> None:
        with torch.no_grad():
            images.copy_(self.images)
            step_sizes.values.copy_(self.step_sizes[0])
            step_sizes.momentum.copy_(self.step_sizes[1])
        # Copies again: load_state_dict keeps the given tensors, which the next step would change in place.
        pixel_optimizer.load_state_dict(copy.deepcopy(self.pixel_optimizer))
        schedule.load_state_dict(copy.deepcopy(self.schedule))
