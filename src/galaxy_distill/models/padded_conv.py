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
    gradients (the added channels are zero in both), computed by tensor-core kernels.

    With 3 colour channels cuDNN picks slow kernels (unaligned, or without tensor cores): in the H200 kernel profiles
    of compiled trajectory matching (bench/results/results-2026-11-29-bf16) such a convolution kernel, called once or
    twice an inner step, was among the three most time-consuming of every config. The weight keeps its shape, so
    checkpoints and flat parameter vectors are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = -self.in_channels % CHANNEL_MULTIPLE
        if missing == 0 or x.device.type not in PADDED_DEVICE_TYPES:
            return super().forward(x)
        # F.pad's last three (left, right) pairs: width, height, channels.
        channel_pad = (0, 0, 0, 0, 0, missing)
        return self._conv_forward(F.pad(x, channel_pad), F.pad(self.weight, channel_pad), self.bias)
