"""On a GPU, the CUDA-graph replay of the inner loop gives the eager loop's gradients (skipped without CUDA)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.distill.matching import InnerLoop
from galaxy_distill.models import build_model
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.runtime import seeded_generator

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(("chunk_size", "bf16", "compile"),
                         [(None, False, False), (None, True, False), (4, False, False), (4, True, False), (4, False, True)])
@pytest.mark.usefixtures("fresh_torch_compile", "plain_fp32_products")
def test_graphed_steps_equal_eager_steps(chunk_size, bf16, compile, monkeypatch):
    """Graphed steps (compiled or not) against the plain eager loop."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    device = torch.device("cuda")
    flat_view = FlatParams(build_model("convnet", 3, 4, 32, width=32).to(device))
    generator = seeded_generator(0)
    start = flat_view.init_flat(generator)
    target = start + 0.01 * torch.randn(start.shape, generator=generator).to(device)
    images = torch.randn(12, 3, 32, 32, generator=generator).to(device)
    labels = torch.arange(4, device=device).repeat_interleave(3)
    graphed = InnerLoop(flat_view, steps=6, batch_size=8, augment=DiffAugment(), chunk_size=chunk_size, bf16=bf16,
                        compile=compile)
    eager = dataclasses.replace(graphed, cuda_graphs=False, compile=False, _graph_cache={}, _compiled={})
    alpha = torch.tensor(0.01, device=device)
    for seed in range(3):  # several draws: every augmentation op gets its own graph
        fast = graphed.loss_and_gradients(images, labels, alpha, start, target, seeded_generator(seed))
        slow = eager.loss_and_gradients(images, labels, alpha, start, target, seeded_generator(seed))
        torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-4, atol=1e-6)
        if compile:  # fused kernels sum in another order: a few near-zero elements move by ~1e-6 (seen on the H200)
            assert (fast.images - slow.images).norm() <= 1e-3 * slow.images.norm()
        else:  # bf16: the same kernels in the same order, but cuDNN may pick other algorithms inside a capture.
            torch.testing.assert_close(fast.images, slow.images, rtol=1e-2 if bf16 else 1e-3, atol=1e-6)
        torch.testing.assert_close(fast.step_size, slow.step_size, rtol=1e-3, atol=1e-6)
        probe = graphed.probe_loss(images, labels, alpha, start, target, seeded_generator(seed))
        torch.testing.assert_close(probe, slow.loss, rtol=1e-4, atol=1e-6)
