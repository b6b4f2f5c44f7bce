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

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from galaxy_distill.data.augment import AugmentDraw, DiffAugment
from galaxy_distill.distributed import Shard
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.runtime import CapturedCall


GRAPH_PIXEL_LIMIT = 256 * 32 * 32
"""Inner batches up to this many pixels are launch-bound and replay as CUDA graphs; larger ones are
compute-bound, gain nothing from graphs, and (seen on an H200 at 1000 x 32 px) can fail to capture."""


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
    cuda_graphs: bool = True
    shard: Shard = field(default_factory=lambda: Shard())
    bf16: bool = False
    """Run the student network's forward (and so its backward) under bfloat16 autocast: faster matrix work on
    GPUs with bf16 units; parameters, augmentation, losses and every gradient stay float32. Agreement with the
    float32 unrolled gradients is tested to a stated tolerance (tests/test_matching.py)."""
    compile: bool = False
    """torch.compile the network's part of each step (its gradient, and the Hessian-vector and mixed products of the
    backward pass) into fused kernels, inside CUDA graphs where those are used. Written with torch.func for this
    (autograd's double backward cannot be compiled; uncompiled, torch.func was slower than autograd on a CPU). The
    augmentation stays uncompiled and is differentiated apart, so one compiled function serves every augmentation op."""
    _graph_cache: dict = field(default_factory=dict, compare=False, repr=False)
    _compiled: dict = field(default_factory=dict, compare=False, repr=False)

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
        """This process's rows of an inner batch, in chunks of at most chunk_size."""
        first, last = self.shard.rows(self.batch_size)
        size = self.chunk_size or max(1, last - first)
        return [slice(start, min(start + size, last)) for start in range(first, last, size)]

    def _augmented(self, images: torch.Tensor, draw: AugmentDraw, rows: slice) -> torch.Tensor:
        return self.augment.apply(images, AugmentDraw(draw.ops, draw.params[:, rows], draw.image_size, draw.cutout_size))

    def _network_loss(self, theta: torch.Tensor, augmented: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum of the per-image loss, divided by the whole batch size (so chunks add up to the mean)."""
        with torch.autocast(augmented.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.flat_view.forward(theta, augmented)
        return F.cross_entropy(logits.to(theta.dtype), labels, reduction="sum") / self.batch_size

    def _batch_loss(self, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, draw: AugmentDraw,
                    rows: slice) -> torch.Tensor:
        return self._network_loss(theta, self._augmented(images, draw, rows), labels)

    def _loss_gradient(self, theta: torch.Tensor, augmented: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """g = d(loss)/d(theta) on an augmented chunk (the compiled steps' form)."""
        return torch.func.grad(self._network_loss)(theta, augmented, labels)

    def _gradient_pullback(self, theta: torch.Tensor, augmented: torch.Tensor, labels: torch.Tensor, adjoint: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(g, H adjoint, (dg/d augmented)^T adjoint) on an augmented chunk: the Hessian-vector and mixed products."""
        gradient, pullback = torch.func.vjp(functools.partial(self._loss_gradient, labels=labels), theta, augmented)
        hessian_vector, augmented_grad = pullback(adjoint)
        return gradient, hessian_vector, augmented_grad

    def unrolled_loss(self, images: torch.Tensor, labels: torch.Tensor, step_size: torch.Tensor, start: torch.Tensor,
                      target: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """MTT's formulation: the whole unroll in one autograd graph (memory grows with steps x batch).

        The reference that `loss_and_gradients` must agree with; kept for tests and comparisons."""
        batches, draws = self._draw(images, generator)
        student = start.detach().requires_grad_(True)
        for step in range(self.steps):
            indices = batches[step]
            loss = self._batch_loss(student, images[indices], labels[indices], draws.step(step), slice(None))
            (gradient,) = torch.autograd.grad(loss, student, create_graph=True)
            student = student - step_size * gradient
        return (student - target).pow(2).sum() / (start - target).pow(2).sum()

    def _compiled_part(self, name: str) -> Callable[..., Any]:
        """The method `name` compiled, once (shapes fixed: a chunk of another size gets its own kernels)."""
        if name not in self._compiled:
            self._compiled[name] = torch.compile(getattr(self, name), dynamic=False)
        return self._compiled[name]

    def _gradient(self, theta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        """g on a step's selected images: this process's rows chunk by chunk, summed over the processes."""
        theta = theta.detach().requires_grad_(not self.compile)
        total = torch.zeros_like(theta)
        for rows in self._chunks():
            if self.compile:
                total += self._compiled_part("_loss_gradient")(theta, self._augmented(images[rows], draw, rows), labels[rows])
            else:
                loss = self._batch_loss(theta, images[rows], labels[rows], draw, rows)
                total += torch.autograd.grad(loss, theta)[0]
        return self.shard.sum(total)

    def _one_step_draw(self, ops: tuple[str, ...], params: torch.Tensor, image_size: int) -> AugmentDraw:
        return AugmentDraw((ops,), params.unsqueeze(0), image_size, self.augment.cutout_size(image_size))

    def _forward_step(self, ops: tuple[str, ...], images: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor,
                      indices: torch.Tensor, params: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        draw = self._one_step_draw(ops, params, images.shape[-1])
        return theta - alpha * self._gradient(theta, images[indices], labels[indices], draw)

    def _backward_step(self, ops: tuple[str, ...], images: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor,
                       adjoint: torch.Tensor, indices: torch.Tensor, params: torch.Tensor, alpha: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(adjoint of the step's input, dL/d(selected images), g^T adjoint) for one step."""
        draw = self._one_step_draw(ops, params, images.shape[-1])
        theta = theta.detach().requires_grad_(not self.compile)
        selected = images[indices].requires_grad_(True)
        chosen_labels = labels[indices]
        hessian_vector = torch.zeros_like(theta)
        selected_grad = torch.zeros_like(selected)
        gradient_dot_adjoint = torch.zeros((), device=theta.device, dtype=theta.dtype)
        for rows in self._chunks():
            if self.compile:  # the augmentation's backward apart from the network's (see `compile`)
                augmented = self._augmented(selected[rows], draw, rows)
                gradient, mixed_theta, augmented_grad = self._compiled_part("_gradient_pullback")(
                    theta, augmented.detach(), chosen_labels[rows], adjoint)
                (mixed_images,) = torch.autograd.grad(augmented, selected, grad_outputs=augmented_grad)
            else:
                loss = self._batch_loss(theta, selected[rows], chosen_labels[rows], draw, rows)
                (gradient,) = torch.autograd.grad(loss, theta, create_graph=True)
                mixed_theta, mixed_images = torch.autograd.grad(gradient, (theta, selected), grad_outputs=adjoint)
            hessian_vector += mixed_theta
            selected_grad += mixed_images
            gradient_dot_adjoint += gradient.detach() @ adjoint
        if self.shard.size > 1:
            reduced = self.shard.sum(torch.cat([hessian_vector, gradient_dot_adjoint.view(1)]))
            hessian_vector, gradient_dot_adjoint = reduced[:-1], reduced[-1]
        return adjoint - alpha * hessian_vector, -alpha * selected_grad, gradient_dot_adjoint

    def replays_graphs(self, images: torch.Tensor) -> bool:
        """Whether steps on these images run as CUDA graphs: one process, a GPU, a launch-bound batch."""
        launch_bound = self.batch_size * images.shape[-1] * images.shape[-2] <= GRAPH_PIXEL_LIMIT
        return self.cuda_graphs and images.is_cuda and self.shard.size == 1 and launch_bound

    def _step_functions(self, images: torch.Tensor, labels: torch.Tensor):
        if self.replays_graphs(images):
            steps = self._graphed_steps(images, labels)
            return steps.forward, steps.backward
        return (functools.partial(self._forward_step, images=images, labels=labels),
                functools.partial(self._backward_step, images=images, labels=labels))

    def _unroll(self, forward, start: torch.Tensor, batches: torch.Tensor, draws: AugmentDraw,
                alpha: torch.Tensor) -> list[torch.Tensor]:
        thetas = [start.detach()]
        for step in range(self.steps):
            thetas.append(forward(draws.ops[step], theta=thetas[-1], indices=batches[step], params=draws.params[step],
                                  alpha=alpha).clone())
        return thetas

    def probe_loss(self, images: torch.Tensor, labels: torch.Tensor, step_size: torch.Tensor, start: torch.Tensor,
                   target: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The matching loss alone (no gradients), e.g. STM's look at the next epoch."""
        batches, draws = self._draw(images, generator)
        images = images.detach()
        forward, _ = self._step_functions(images, labels)
        thetas = self._unroll(forward, start, batches, draws, step_size.detach().to(images.dtype))
        return (thetas[-1] - target).pow(2).sum() / (start - target).pow(2).sum()

    def loss_and_gradients(self, images: torch.Tensor, labels: torch.Tensor, step_size: torch.Tensor,
                           start: torch.Tensor, target: torch.Tensor, generator: torch.Generator) -> MatchingGradients:
        """The matching loss and its exact gradients w.r.t. the images and the step size, in bounded memory."""
        batches, draws = self._draw(images, generator)
        images = images.detach()
        alpha = step_size.detach().to(images.dtype)
        forward, backward = self._step_functions(images, labels)
        thetas = self._unroll(forward, start, batches, draws, alpha)
        reference = (start - target).pow(2).sum()
        loss = (thetas[-1] - target).pow(2).sum() / reference
        adjoint = 2.0 * (thetas[-1] - target) / reference
        image_grad = torch.zeros_like(images)
        alpha_grad = torch.zeros((), device=images.device, dtype=images.dtype)
        for step in reversed(range(self.steps)):
            adjoint, selected_grad, gradient_dot_adjoint = backward(
                draws.ops[step], theta=thetas[step], adjoint=adjoint, indices=batches[step], params=draws.params[step],
                alpha=alpha)
            image_grad.index_add_(0, batches[step], selected_grad)
            alpha_grad = alpha_grad - gradient_dot_adjoint
            adjoint = adjoint.clone()
        return MatchingGradients(loss.detach(), self.shard.sum(image_grad), alpha_grad)

    def _graphed_steps(self, images: torch.Tensor, labels: torch.Tensor) -> GraphedSteps:
        key = (images.data_ptr(), tuple(images.shape), labels.data_ptr())
        cache = self._graph_cache
        if cache.get("key") != key:
            cache.clear()
            cache["key"] = key
            cache["steps"] = GraphedSteps(self, images, labels)
        return cache["steps"]


class GraphedSteps:
    """The forward and backward step of an InnerLoop as CUDA graphs, one pair per augmentation op set.

    At small synthetic sets an unrolled step is a few hundred tiny kernels whose launch cost
    dominates; a graph replays them all in one launch. Inputs are copied into static
    buffers before each replay; outputs are static buffers the caller must copy.
    The synthetic images must keep their storage (optimisers update them in place).
    """

    def __init__(self, inner: InnerLoop, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.inner, self.images, self.labels = inner, images, labels
        self.graphs: dict[tuple[str, tuple[str, ...]], CapturedCall] = {}

    def _call(self, kind: str, ops: tuple[str, ...], **inputs: torch.Tensor):
        captured = self.graphs.get((kind, ops))
        if captured is None:
            function = self.inner._forward_step if kind == "forward" else self.inner._backward_step
            bound = functools.partial(function, ops, self.images, self.labels)
            try:
                captured = CapturedCall(bound, inputs)
            except RuntimeError as exc:
                # Some kernels refuse capture (older drivers, exotic ops): same results, eagerly.
                warnings.warn(f"CUDA graph capture failed ({exc}); running the inner loop eagerly", stacklevel=2)
                captured = _EagerCall(bound)
            self.graphs[(kind, ops)] = captured
        return captured(inputs)

    def forward(self, ops: tuple[str, ...], **inputs: torch.Tensor) -> torch.Tensor:
        return self._call("forward", ops, **inputs)

    def backward(self, ops: tuple[str, ...], **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._call("backward", ops, **inputs)


class _EagerCall:
    def __init__(self, function) -> None:
        self.function = function

    def __call__(self, inputs: dict[str, torch.Tensor]):
        return self.function(**inputs)
