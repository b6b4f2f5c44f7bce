"""Networks used for distillation and evaluation, built by name from one registry.

Every model has `.embed(x)` (penultimate features, e.g. for nearest neighbours in feature
space) and `.classifier` (the final Linear); `forward(x) == classifier(embed(x))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.models.convnet import ConvNet, auto_depth
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.models.resnet import ResNet18
from galaxy_distill.models.vgg import VGG11

SMALLEST_IMAGE = 8
DEFAULT_WIDTH = 128


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]
    norms: tuple[str, ...]
    default_norm: str
    # Only the ConvNet is sized by depth and width; the others have fixed literature shapes.
    sized: bool


MODELS: dict[str, Architecture] = {
    "convnet": Architecture(ConvNet, ("instancenorm", "batchnorm", "none"), "instancenorm", sized=True),
    "resnet18": Architecture(ResNet18, ("batchnorm", "instancenorm"), "batchnorm", sized=False),
    "vgg11": Architecture(VGG11, ("instancenorm", "batchnorm"), "instancenorm", sized=False),
}


def build_model(
    name: str,
    channels: int,
    num_classes: int,
    image_size: int,
    *,
    depth: int | None = None,
    width: int = DEFAULT_WIDTH,
    norm: str | None = None,
) -> nn.Module:
    """A freshly initialised network for `channels` x `image_size`^2 inputs (norm None = the architecture's default)."""
    architecture = MODELS.get(name)
    if architecture is None:
        raise GalaxyDistillError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    norm = architecture.default_norm if norm is None else norm
    if norm not in architecture.norms:
        raise GalaxyDistillError(f"model {name!r} does not take norm {norm!r}: choose one of {', '.join(architecture.norms)}")
    if channels < 1 or num_classes < 1:
        raise GalaxyDistillError(f"model {name!r} needs at least 1 channel and 1 class, got {channels} and {num_classes}")
    if image_size < SMALLEST_IMAGE:
        raise GalaxyDistillError(f"model {name!r} needs images of at least {SMALLEST_IMAGE} px, got {image_size}")
    if not architecture.sized:
        if depth is not None or width != DEFAULT_WIDTH:
            raise GalaxyDistillError(f"depth and width apply only to the convnet, not to model {name!r}")
        return architecture.build(channels, num_classes, image_size, norm=norm)
    depth = auto_depth(image_size) if depth is None else depth
    if depth < 1 or image_size >> depth < 1:
        raise GalaxyDistillError(
            f"convnet depth {depth} does not fit {image_size} px images: each block halves the map, so use 1 to "
            f"{image_size.bit_length() - 1} (or leave depth unset for {auto_depth(image_size)})"
        )
    if width < 1:
        raise GalaxyDistillError(f"convnet width must be at least 1, got {width}")
    return architecture.build(channels, num_classes, image_size, depth=depth, width=width, norm=norm)


__all__ = ["MODELS", "Architecture", "ConvNet", "FlatParams", "ResNet18", "VGG11", "auto_depth", "build_model"]
