"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def fresh_torch_compile():
    """torch.compile's caches emptied before and after: the case compiles as a fresh process would. Its recompile limit
    counts per function across every instance and test in the process, and a GPU run of the CUDA tests failed inside a
    graph capture after earlier tests had compiled the same functions (the case passed alone)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def plain_fp32_products(monkeypatch):
    """TF32 off for cuDNN convolutions and matrix products (PyTorch lets cuDNN use it by default). Under TF32 (10-bit
    mantissas) two ways that run their convolutions in other layouts or kernels differ by far more than fp32 rounding:
    compiled distillation steps gave pixel gradients a difference of norm 2.9e-5 against the gradient's 0.0014
    (H200, bench/results/results-2026-11-29-bf16/pytest_cuda_session8.log)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
