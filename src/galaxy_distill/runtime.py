"""Device choice, seeding, RNG state capture and CUDA-graph capture shared by the training loops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from galaxy_distill.errors import GalaxyDistillError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GalaxyDistillError(f"device '{name}' requested but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GalaxyDistillError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: random draws stay reproducible across devices and are cheap to checkpoint."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def configure_backends(device: torch.device) -> None:
    """Allow TF32 on GPUs (matching accuracy holds); keep CPU math in full fp32."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


class CapturedCall:
    """`function(**inputs)` recorded as one CUDA graph after two warm-up calls on a side stream.

    Each call copies its inputs into the static buffers the graph reads and replays it; the
    outputs are the graph's static buffers, overwritten by the next replay (copy what must outlive it).
    """

    def __init__(self, function: Callable[..., Any], example: dict[str, torch.Tensor]) -> None:
        self.static = {name: value.detach().clone() for name, value in example.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                function(**self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = function(**self.static)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> Any:
        for name, value in inputs.items():
            self.static[name].copy_(value)
        self.graph.replay()
        return self.outputs
