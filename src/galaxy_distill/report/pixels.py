"""Moving prototypes between the network's input space and what people look at.

A prepared dataset feeds networks standardised (and, if prepared so, ZCA-whitened) images.
People should see un-whitened pixels, and saliency should be taken with respect to those
pixels too, so the report works in the standardised, un-whitened space and whitens only
on the way into a network.
"""

from __future__ import annotations

import numpy as np
import torch

from galaxy_distill.data.registry import PreparedDataset

CONTRAST_SIGMAS = 2.5


def contrast_clipped(dataset: PreparedDataset, normalized: torch.Tensor, sigmas: float = CONTRAST_SIGMAS) -> np.ndarray:
    """uint8 NHWC for display: un-whitened values clipped at mean ± `sigmas` std of the whole set, then stretched.

    One range for every image and channel keeps colours and brightness comparable across prototypes
    (the MTT papers' visualisation), while faint structure the plain view clamps away stays visible.
    """
    values = dataset.unwhiten(normalized)
    low = float(values.mean() - sigmas * values.std())
    high = float(values.mean() + sigmas * values.std())
    stretched = (values.clamp(low, high) - low) / max(high - low, 1e-12)
    return stretched.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
