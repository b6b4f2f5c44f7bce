"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reliability_helpers import TinyWorkspace, build_tiny_workspace


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace (GALAXY_DISTILL_HOME) of the test's own, and no GALAXY_DISTILL_DATA from outside.

    Modules whose every test needs it say `pytestmark = pytest.mark.usefixtures("workspace")`."""
    home = tmp_path / "workspace"
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(home))
    monkeypatch.delenv("GALAXY_DISTILL_DATA", raising=False)
    return home


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyWorkspace:
    """A prepared tiny gz1-sdss and a small expert store, built once per test module (reliability_helpers)."""
    return build_tiny_workspace(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def fresh_torch_compile():
    """torch.compile's caches emptied before and after: the case compiles as a fresh process would. Its recompile limit
    counts per function across every instance and test in the process, and a GPU run of the CUDA tests failed inside a
    graph capture after earlier tests had compiled the same functions (the case passed alone)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def plain_fp32_products():
    """TF32 off for cuDNN convolutions and matrix products (PyTorch lets cuDNN use it by default). Under TF32 (10-bit
    mantissas) two ways that run their convolutions in other layouts or kernels differ by far more than fp32 rounding:
    compiled distillation steps gave pixel gradients a difference of norm 2.9e-5 against the gradient's 0.0014
    (measured on an H200)."""
    # Restored by hand: torch.backends.cuda.matmul's allow_tf32 is a property that monkeypatch's undo tries to delete.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
