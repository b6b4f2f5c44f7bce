"""A network described by value, so experts, distillation and evaluation build the same one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from torch import nn


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "convnet"
    channels: int
    num_classes: int
    image_size: int
    depth: int | None = None
    width: int = 128
    norm: str | None = None

    def build(self) -> nn.Module:
        from galaxy_distill.models import build_model

        return build_model(
            self.name, self.channels, self.num_classes, self.image_size, depth=self.depth, width=self.width, norm=self.norm
        )
