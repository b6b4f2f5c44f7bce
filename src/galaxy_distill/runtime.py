"""Device choice, seeding and RNG state capture shared by every training loop."""

from __future__ import annotations

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
