"""VGG-11 as MTT's VGG11, adapted to any image size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from galaxy_distill.models.norms import norm_layer

POOL = "M"
VGG11_LAYERS: tuple[int | str, ...] = (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)


class VGG11(nn.Module):
    """conv3x3 -> norm -> ReLU stacks with 2x2 max-pools, then global average pooling and one Linear.

    At 32 px this is MTT's VGG11 exactly (five pools end at 1x1); smaller images skip the
    pools that would go below 1 px, larger ones are averaged over the final map.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        size = image_size
        for layer in VGG11_LAYERS:
            if layer == POOL:
                if size >= 2:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    size //= 2
            else:
                layers += [nn.Conv2d(in_channels, layer, kernel_size=3, padding=1), norm_layer(norm, layer), nn.ReLU()]
                in_channels = layer
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
