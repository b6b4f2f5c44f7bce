"""What every benchmark records about where and how it ran."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from galaxy_distill.atomic_io import read_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """--networks and --epochs of the final evaluation, as `galaxy-distill evaluate` names them (old names still work)."""
    parser.add_argument("--networks", "--num-eval", type=int, default=5, help="networks trained per evaluated set "
                        "(evaluate's --networks; --num-eval is the old name)")
    parser.add_argument("--epochs", "--eval-epochs", type=int, default=1000, help="epochs each of those networks trains "
                        "(evaluate's --epochs; --eval-epochs is the old name)")


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
        # torch.compile's settings given by environment (e.g. TORCHINDUCTOR_MAX_AUTOTUNE=1) change what is measured.
        "environment": {name: value for name, value in sorted(os.environ.items()) if name.startswith("TORCHINDUCTOR_")},
    }


def distill_record(run: Path) -> dict[str, Any]:
    """What a results file records of a distillation, read back from its run directory."""
    metrics = read_json(run / "checkpoint.json")["metrics"]
    evaluated = [row for row in metrics if row["val_accuracy"] is not None]
    best = max(evaluated, key=lambda row: row["val_accuracy"], default=None)
    return {
        "wall_s": metrics[-1]["seconds"], "iterations": metrics[-1]["iteration"], "settings": read_json(run / "settings.json"),
        "best_val_accuracy": best and best["val_accuracy"], "best_iteration": best and best["iteration"],
        "best_on_test": max((row["test_accuracy"] for row in evaluated if row["test_accuracy"] is not None), default=None),
    }


def tag_distill_wall(results: list[dict[str, Any]], method: str, wall_s: float) -> None:
    """Give the distilled set's entries the distillation's wall time (the baselines' have none)."""
    for entry in results:
        if entry["method"] == method:
            entry["distill_wall_s"] = wall_s


def kernel_profile(step: Callable[[], Any], device: torch.device, count: int) -> dict[str, Any]:
    """Device time over 3 calls of `step` (CUDA, or CPU without a GPU), ms per call: `top_kernels`, the `count`
    operators with the most, and `device_ms_per_step`, all of them summed (against the step's wall time: how busy the
    device is kept; the rest is the host launching work)."""
    from torch.profiler import ProfilerActivity

    profiler = _profiled_steps(step, device, [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU])
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda event: getattr(event, attribute), reverse=True)
    return {"top_kernels": [{"name": event.key[:160], "ms_per_step": getattr(event, attribute) / 1000 / 3,
                             "calls_per_step": event.count / 3} for event in events[:count]],
            "device_ms_per_step": sum(getattr(event, attribute) for event in events) / 1000 / 3}


def _profiled_steps(step: Callable[[], Any], device: torch.device, activities: list, record_shapes: bool = False
                    ) -> torch.profiler.profile:
    """torch.profiler over 3 calls of `step`, the device's queue drained before the profile ends."""
    with torch.profiler.profile(activities=activities, record_shapes=record_shapes) as profiler:
        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return profiler


CONVOLUTION_OPS = ("aten::convolution", "aten::convolution_backward")
"""The dispatcher operators every convolution (eager, torch.func or torch.compile's extern kernels) passes through:
one forward, one for both of its input and weight gradients."""


def convolution_profile(step: Callable[[], Any], device: torch.device, count: int) -> dict[str, Any]:
    """Device time over 3 calls of `step` (CPU time without a GPU) spent under each convolution operator, per operand
    shapes, ms per call: `convolution_shapes`, the `count` (operator, shapes) pairs with the most. Says which
    convolutions the time goes to where the kernel names do not. Kernels replayed inside a CUDA graph are not
    attributed to operators: profile without graphs."""
    from torch.profiler import ProfilerActivity

    # Operators are CPU events: their device time is that of the kernels they launched.
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device.type == "cuda" else [])]
    profiler = _profiled_steps(step, device, activities, record_shapes=True)
    attribute = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    events = sorted((event for event in profiler.key_averages(group_by_input_shape=True) if event.key in CONVOLUTION_OPS),
                    key=lambda event: getattr(event, attribute), reverse=True)
    return {"convolution_shapes": [{"op": event.key, "shapes": [list(shape) for shape in event.input_shapes if shape],
                                    "ms_per_step": getattr(event, attribute) / 1000 / 3, "calls_per_step": event.count / 3}
                                   for event in events[:count]]}
