"""The image-facing convolution of every architecture, with its few colour channels padded for GPU kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHANNEL_MULTIPLE = 8
"""Tensor-core convolution kernels need channel counts in multiples of 8 (bf16; 4 for TF32)."""

PADDED_DEVICE_TYPES = frozenset({"cuda"})
"""Where the padding pays; CPU kernels take 3 channels as they come, and padding would only add work there."""


class ChannelPaddedConv2d(nn.Conv2d):
    """A Conv2d that, on GPUs, zero-pads its input channels and its weight's to a multiple of 8: the same output and
    gradients (the added channels are zero in both), in cuDNN kernels for aligned channel counts.

    Tensor-core kernels want channel counts in multiples of 8, and narrow cuDNN convolution kernels were among the three
    most time-consuming of every compiled trajectory-matching config on an H200. Padded, compiled bf16 matching ran a
    few percent faster on the configs timed both ways (bench/results/results-2026-11-29-padded, docs/performance.md),
    though those narrow kernels stayed. The weight keeps its shape, so checkpoints and flat parameter vectors are
    unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = -self.in_channels % CHANNEL_MULTIPLE
        if missing == 0 or x.device.type not in PADDED_DEVICE_TYPES:
            return super().forward(x)
        # F.pad's last three (left, right) pairs: width, height, channels.
        channel_pad = (0, 0, 0, 0, 0, missing)
        return self._conv_forward(F.pad(x, channel_pad), F.pad(self.weight, channel_pad), self.bias)
