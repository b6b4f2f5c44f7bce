"""The trajectory-matching objective: the differentiable unrolled student training of MTT.

A student starts at expert parameters theta_t, takes `steps` SGD steps on the synthetic
images with the learned step size, and is compared with the expert's theta_{t+M}:

    loss = ||theta_N - theta*_{t+M}||^2 / ||theta_t - theta*_{t+M}||^2

Everything is functional (flat parameter vector, `FlatParams.forward`), so the same code
runs on CPU in tests and on GPU, and gradients reach the pixels and the step size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.models.functional import FlatParams


@dataclass(frozen=True)
class InnerLoop:
    """How the student trains on the synthetic set: steps, batch size and augmentation."""

    flat_view: FlatParams
    steps: int
    batch_size: int
    augment: DiffAugment

    def draw_batches(self, num_images: int, generator: torch.Generator) -> torch.Tensor:
        """Indices (steps, batch) walking through shuffled passes over the synthetic set, as MTT does."""
        passes = -(-self.steps * self.batch_size // num_images)
        order = torch.cat([torch.randperm(num_images, generator=generator) for _ in range(passes)])
        return order[: self.steps * self.batch_size].view(self.steps, self.batch_size)

    def matching_loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        step_size: torch.Tensor,
        start: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator,
        differentiable: bool = True,
    ) -> torch.Tensor:
        """Normalised parameter distance after unrolled training; differentiable=False is a cheap probe."""
        device = images.device
        batches = self.draw_batches(len(images), generator).to(device, non_blocking=True)
        draws = self.augment.draw_many(self.steps, self.batch_size, images.shape[-1], generator, device)
        if not differentiable:
            images, step_size = images.detach(), step_size.detach()
        student = start.detach().requires_grad_(True)
        for step in range(self.steps):
            indices = batches[step]
            batch = self.augment.apply(images[indices], draws.step(step))
            loss = F.cross_entropy(self.flat_view.forward(student, batch), labels[indices])
            (gradient,) = torch.autograd.grad(loss, student, create_graph=differentiable)
            student = student - step_size * gradient
            if not differentiable:
                student = student.detach().requires_grad_(True)
        distance = (student - target).pow(2).sum()
        reference = (start - target).pow(2).sum()
        loss = distance / reference
        return loss if differentiable else loss.detach()
