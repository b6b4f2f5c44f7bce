"""Normalisation layers shared by the architectures, with the literature's names."""

from __future__ import annotations

from torch import nn


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The normalisation of one feature map: "instancenorm" is MTT's GroupNorm(C, C)
    (per-sample, per-channel statistics with a learned affine and no running buffers)."""
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}")
