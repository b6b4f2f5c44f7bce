"""ConvNet of the dataset-distillation literature (DC, DSA, MTT): the default distillation network."""

from __future__ import annotations

import torch
from torch import nn

from galaxy_distill.models.norms import norm_layer


def auto_depth(image_size: int) -> int:
    """Blocks that bring the feature map down to about 4x4 (3 up to 32 px, 4 at 64, 5 at 128, 6 at 256)."""
    return max(3, (image_size // 4).bit_length() - 1)


class ConvNet(nn.Module):
    """`depth` blocks of conv3x3 -> norm -> ReLU -> AvgPool2d(2), then one Linear on the flattened map."""

    def __init__(self, channels: int, num_classes: int, image_size: int, depth: int, width: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for _ in range(depth):
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                norm_layer(norm, width),
                nn.ReLU(),
                nn.AvgPool2d(2),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        final_size = image_size >> depth
        self.classifier = nn.Linear(width * final_size * final_size, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
