"""What every benchmark records about where and how it ran."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def git_revision() -> str:
    """HEAD of the checkout, or $GALAXY_DISTILL_REVISION where the tree was copied without .git (GPU runs)."""
    if os.environ.get("GALAXY_DISTILL_REVISION"):
        return os.environ["GALAXY_DISTILL_REVISION"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_revision": git_revision(),
        "gpu": gpu,
        "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }
