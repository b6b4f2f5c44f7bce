"""The trajectory-matching objective: the differentiable unrolled student training of MTT.

A student starts at expert parameters theta_0 = theta*_t, takes N SGD steps on augmented
batches of the synthetic images X with step size alpha, and is compared with theta*_{t+M}:

    theta_{i+1} = theta_i - alpha * g_i(theta_i, X),   g_i = grad of the batch loss
    L = ||theta_N - theta*_{t+M}||^2 / ||theta_t - theta*_{t+M}||^2

`unrolled_loss` builds the whole N-step graph and lets autograd differentiate it (MTT's
way; memory grows with N x batch). `loss_and_gradients` computes the same gradients in
reverse mode step by step: it keeps only the N parameter vectors, recomputes one step's
graph at a time and propagates v_i = dL/dtheta_i with Hessian-vector products,

    v_i = v_{i+1} - alpha * H_i v_{i+1},   dL/dX += -alpha * (dg_i/dX)^T v_{i+1},
    dL/dalpha += -g_i^T v_{i+1},

so memory is one step's graph (or one chunk of the batch) however long the unroll is.
Everything is functional over flat parameter vectors, on CPU and GPU alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from galaxy_distill.data.augment import AugmentDraw, DiffAugment
from galaxy_distill.models.functional import FlatParams


@dataclass(frozen=True)
class MatchingGradients:
    loss: torch.Tensor
    images: torch.Tensor
    step_size: torch.Tensor


@dataclass(frozen=True)
class InnerLoop:
    """How the student trains on the synthetic set: steps, batch size, augmentation, memory chunking."""

    flat_view: FlatParams
    steps: int
    batch_size: int
    augment: DiffAugment
    chunk_size: int | None = None

    def draw_batches(self, num_images: int, generator: torch.Generator) -> torch.Tensor:
        """Indices (steps, batch) walking through shuffled passes over the synthetic set, as MTT does."""
        passes = -(-self.steps * self.batch_size // num_images)
        order = torch.cat([torch.randperm(num_images, generator=generator) for _ in range(passes)])
        return order[: self.steps * self.batch_size].view(self.steps, self.batch_size)

    def _draw(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, AugmentDraw]:
        batches = self.draw_batches(len(images), generator).to(images.device, non_blocking=True)
        draws = self.augment.draw_many(self.steps, self.batch_size, images.shape[-1], generator, images.device)
        return batches, draws

    def _chunks(self) -> list[slice]:
        size = self.chunk_size or self.batch_size
        return [slice(start, min(start + size, self.batch_size)) for start in range(0, self.batch_size, size)]

    def _batch_loss(self, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, draw: AugmentDraw,
                    rows: slice) -> torch.Tensor:
        """Sum over `rows` of the per-image loss, divided by the whole batch size (so chunks add up to the mean)."""
        part = AugmentDraw(draw.ops, draw.params[:, rows], draw.image_size, draw.cutout_size)
        logits = self.flat_view.forward(theta, self.augment.apply(images, part))
        return F.cross_entropy(logits, labels, reduction="sum") / self.batch_size

    def unrolled_loss(self, images: torch.Tensor, labels: torch.Tensor, step_size: torch.Tensor, start: torch.Tensor,
                      target: torch.Tensor, generator: torch.Generator, differentiable: bool = True) -> torch.Tensor:
        """The loss with the whole unroll in one autograd graph; differentiable=False is a cheap probe."""
        batches, draws = self._draw(images, generator)
        if not differentiable:
            images, step_size = images.detach(), step_size.detach()
        student = start.detach().requires_grad_(True)
        for step in range(self.steps):
            indices = batches[step]
            loss = self._batch_loss(student, images[indices], labels[indices], draws.step(step), slice(None))
            (gradient,) = torch.autograd.grad(loss, student, create_graph=differentiable)
            student = student - step_size * gradient
            if not differentiable:
                student = student.detach().requires_grad_(True)
        loss = (student - target).pow(2).sum() / (start - target).pow(2).sum()
        return loss if differentiable else loss.detach()

    def _gradient(self, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        theta = theta.detach().requires_grad_(True)
        total = torch.zeros_like(theta)
        for rows in self._chunks():
            loss = self._batch_loss(theta, images[rows], labels[rows], draw, rows)
            total += torch.autograd.grad(loss, theta)[0]
        return total

    def loss_and_gradients(self, images: torch.Tensor, labels: torch.Tensor, step_size: torch.Tensor,
                           start: torch.Tensor, target: torch.Tensor, generator: torch.Generator) -> MatchingGradients:
        """The matching loss and its exact gradients w.r.t. the images and the step size, in bounded memory."""
        batches, draws = self._draw(images, generator)
        images = images.detach()
        alpha = step_size.detach()
        thetas = [start.detach()]
        for step in range(self.steps):
            indices = batches[step]
            gradient = self._gradient(thetas[-1], images[indices], labels[indices], draws.step(step))
            thetas.append(thetas[-1] - alpha * gradient)
        reference = (start - target).pow(2).sum()
        loss = (thetas[-1] - target).pow(2).sum() / reference
        adjoint = 2.0 * (thetas[-1] - target) / reference
        image_grad = torch.zeros_like(images)
        alpha_grad = torch.zeros((), device=images.device, dtype=images.dtype)
        for step in reversed(range(self.steps)):
            indices = batches[step]
            theta = thetas[step].requires_grad_(True)
            selected = images[indices].requires_grad_(True)
            hessian_vector = torch.zeros_like(theta)
            gradient_dot_adjoint = torch.zeros((), device=images.device, dtype=images.dtype)
            for rows in self._chunks():
                loss_part = self._batch_loss(theta, selected[rows], labels[indices][rows], draws.step(step), rows)
                (gradient,) = torch.autograd.grad(loss_part, theta, create_graph=True)
                mixed_theta, mixed_images = torch.autograd.grad(gradient, (theta, selected), grad_outputs=adjoint)
                hessian_vector += mixed_theta
                image_grad.index_add_(0, indices, -alpha * mixed_images)
                gradient_dot_adjoint += gradient.detach() @ adjoint
            alpha_grad -= gradient_dot_adjoint
            adjoint = adjoint - alpha * hessian_vector
        return MatchingGradients(loss.detach(), image_grad, alpha_grad)
