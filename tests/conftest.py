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
