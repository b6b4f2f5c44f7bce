"""The matching objective: reverse-mode gradients equal plain unrolled autograd, and finite differences."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from compile_support import CAN_COMPILE_ON_CPU

from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.distill.matching import InnerLoop
from galaxy_distill.models import build_model
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.runtime import seeded_generator


def tiny_problem(strategy: str = "color_crop_cutout_flip_scale_rotate", chunk_size: int | None = None, batch: int = 6):
    torch.manual_seed(0)
    flat_view = FlatParams(build_model("convnet", 3, 3, 16, depth=2, width=6).double())
    generator = seeded_generator(1)
    start = flat_view.init_flat(generator).double()
    target = start + 0.05 * torch.randn(start.shape, generator=generator, dtype=torch.float64)
    images = torch.randn(6, 3, 16, 16, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    inner = InnerLoop(flat_view, steps=4, batch_size=batch, augment=DiffAugment(strategy=strategy, mode="all"),
                      chunk_size=chunk_size)
    return inner, images, labels, start, target


def unrolled_reference(inner, images, labels, start, target, step_size, seed=5):
    images = images.clone().requires_grad_(True)
    alpha = torch.tensor(step_size, dtype=torch.float64, requires_grad=True)
    loss = inner.unrolled_loss(images, labels, alpha, start, target, seeded_generator(seed))
    loss.backward()
    return loss.detach(), images.grad, alpha.grad


def test_reverse_mode_equals_unrolled_autograd():
    inner, images, labels, start, target = tiny_problem()
    loss, image_grad, alpha_grad = unrolled_reference(inner, images, labels, start, target, 0.05)
    result = inner.loss_and_gradients(images, labels, torch.tensor(0.05, dtype=torch.float64), start, target,
                                      seeded_generator(5))
    torch.testing.assert_close(result.loss, loss, rtol=1e-10, atol=0)
    torch.testing.assert_close(result.images, image_grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(result.step_size, alpha_grad, rtol=1e-8, atol=1e-12)


def test_chunked_batches_give_the_same_gradients():
    inner, images, labels, start, target = tiny_problem(batch=4)
    chunked, *_ = tiny_problem(batch=4, chunk_size=1)
    whole = inner.loss_and_gradients(images, labels, torch.tensor(0.05, dtype=torch.float64), start, target, seeded_generator(2))
    parts = chunked.loss_and_gradients(images, labels, torch.tensor(0.05, dtype=torch.float64), start, target, seeded_generator(2))
    torch.testing.assert_close(parts.images, whole.images, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(parts.step_size, whole.step_size, rtol=1e-9, atol=1e-13)


def test_pixel_gradient_matches_finite_differences():
    inner, images, labels, start, target = tiny_problem(strategy="none")
    alpha = torch.tensor(0.05, dtype=torch.float64)
    result = inner.loss_and_gradients(images, labels, alpha, start, target, seeded_generator(3))
    epsilon = 1e-6
    for index in [(0, 0, 3, 4), (3, 1, 8, 8), (5, 2, 15, 0)]:
        bumped_up, bumped_down = images.clone(), images.clone()
        bumped_up[index] += epsilon
        bumped_down[index] -= epsilon
        up = inner.probe_loss(bumped_up, labels, alpha, start, target, seeded_generator(3))
        down = inner.probe_loss(bumped_down, labels, alpha, start, target, seeded_generator(3))
        numeric = (up - down) / (2 * epsilon)
        torch.testing.assert_close(result.images[index], numeric, rtol=1e-5, atol=1e-9)
    up = inner.probe_loss(images, labels, alpha + epsilon, start, target, seeded_generator(3))
    down = inner.probe_loss(images, labels, alpha - epsilon, start, target, seeded_generator(3))
    torch.testing.assert_close(result.step_size, (up - down) / (2 * epsilon), rtol=1e-5, atol=1e-9)


def test_probe_loss_equals_the_unrolled_loss():
    inner, images, labels, start, target = tiny_problem()
    alpha = torch.tensor(0.05, dtype=torch.float64)
    probe = inner.probe_loss(images, labels, alpha, start, target, seeded_generator(9))
    unrolled = inner.unrolled_loss(images, labels, alpha, start, target, seeded_generator(9))
    torch.testing.assert_close(probe, unrolled.detach(), rtol=1e-12, atol=0)


def float32_problem(size: int, depth: int, width: int):
    """A float32 ConvNet, an expert start and target near it, and 10 images of 5 classes."""
    torch.manual_seed(0)
    flat_view = FlatParams(build_model("convnet", 3, 5, size, depth=depth, width=width))
    generator = seeded_generator(1)
    start = flat_view.init_flat(generator)
    target = start + 0.01 * torch.randn(start.shape, generator=generator)
    images = torch.randn(10, 3, size, size, generator=generator)
    return flat_view, start, target, images, torch.arange(5).repeat_interleave(2)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.skipif(
    not CAN_COMPILE_ON_CPU, reason="torch.compile on CPU needs a C++ compiler and Python's headers"))])
def test_bf16_autocast_gradients_agree_with_float32_unrolled_within_stated_tolerance(compile):
    """The bf16 option's stated tolerance: loss to 1e-3, pixel gradient cosine >= 0.99 and relative error <= 0.1,
    step-size gradient to 2e-2, against the plain float32 unrolled loop on the same seed; compiled steps too."""
    flat_view, start, target, images, labels = float32_problem(size=32, depth=3, width=32)
    reference = InnerLoop(flat_view, steps=10, batch_size=10, augment=DiffAugment())
    pixels = images.clone().requires_grad_(True)
    alpha = torch.tensor(0.01, requires_grad=True)
    loss = reference.unrolled_loss(pixels, labels, alpha, start, target, seeded_generator(5))
    loss.backward()
    fast = InnerLoop(flat_view, steps=10, batch_size=10, augment=DiffAugment(), bf16=True, compile=compile)
    result = fast.loss_and_gradients(images, labels, torch.tensor(0.01), start, target, seeded_generator(5))
    torch.testing.assert_close(result.loss, loss.detach(), rtol=1e-3, atol=0)
    cosine = F.cosine_similarity(result.images.flatten(), pixels.grad.flatten(), dim=0)
    assert cosine >= 0.99
    assert (result.images - pixels.grad).norm() <= 0.1 * pixels.grad.norm()
    torch.testing.assert_close(result.step_size, alpha.grad, rtol=2e-2, atol=0)
    assert not torch.equal(result.images, pixels.grad)  # bf16 really ran


@pytest.mark.skipif(not CAN_COMPILE_ON_CPU, reason="torch.compile on CPU needs a C++ compiler and Python's headers")
def test_compiled_steps_give_the_uncompiled_gradients_for_every_augmentation_op():
    """One compiled gradient and one compiled pullback serve every augmentation op (the augmentation stays uncompiled);
    chunks of two sizes (4 and the remaining 2) each get their kernels."""
    flat_view, start, target, images, labels = float32_problem(size=16, depth=2, width=16)
    plain = InnerLoop(flat_view, steps=4, batch_size=10, augment=DiffAugment(), chunk_size=4)
    compiled = dataclasses.replace(plain, compile=True, _compiled={})
    for seed in range(2):
        expected = plain.loss_and_gradients(images, labels, torch.tensor(0.01), start, target, seeded_generator(seed))
        result = compiled.loss_and_gradients(images, labels, torch.tensor(0.01), start, target, seeded_generator(seed))
        torch.testing.assert_close(result.loss, expected.loss, rtol=1e-5, atol=0)
        torch.testing.assert_close(result.images, expected.images, rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(result.step_size, expected.step_size, rtol=1e-4, atol=0)
        probe = compiled.probe_loss(images, labels, torch.tensor(0.01), start, target, seeded_generator(seed))
        torch.testing.assert_close(probe, expected.loss, rtol=1e-5, atol=0)
    assert set(compiled._compiled) == {"_loss_gradient", "_gradient_pullback"}
