"""What an expert network responds to: nearest real images and saliency maps.

- Nearest neighbours are searched in chunks, so a training set larger than memory allows
  (as float) still works: a running top-k is merged with each chunk's distances.
- Grad-CAM (Selvaraju et al. 2017) weights the channels of the network's last feature map
  by the mean gradient of the class logit and keeps the positive part. The feature map is
  found without knowing the architecture: it is the output of the last module to finish
  that is a 4-D map of at least 2x2 (for the ConvNet, the last conv block's output).
- SmoothGrad (Smilkov et al. 2017) averages the input gradient of the class logit over
  noisy copies of the image; its magnitude (max over channels) is shown.
Both take standardised, un-whitened pixels and a `to_network` map, so that on ZCA data the
saliency is with respect to the pixels people see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.models.functional import FlatParams

SMOOTHGRAD_SAMPLES = 25
SMOOTHGRAD_NOISE = 0.15
"""Noise std as a fraction of each image's value range (Smilkov et al. found 10-20% best)."""
GRADIENT_BATCH = 64
"""Noisy copies per forward/backward pass: one pass per copy would be dominated by per-call overhead on CPU."""
SALIENCY_PERCENTILE = 99.0
"""SmoothGrad maps are scaled so that this percentile is 1: a few extreme pixels do not wash out the rest."""


def final_expert(store: ExpertStore, index: int = 0) -> nn.Module:
    """Expert `index` with its parameters after the last stored epoch, in eval mode."""
    module = store.model_spec.build()
    module.load_state_dict(FlatParams(module).unflatten(store.parameters_at(index, store.epochs)))
    return module.eval()


@torch.no_grad()
def nearest(queries: torch.Tensor, pool: Iterable[torch.Tensor], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances (Q, k) of the k nearest pool items to each query, nearest first.

    `pool` yields consecutive chunks of items (any shape with items along dim 0); indices count
    across chunks.
    """
    queries = queries.flatten(1).double()
    best_distances = torch.empty(len(queries), 0, dtype=torch.float64)
    best_indices = torch.empty(len(queries), 0, dtype=torch.long)
    offset = 0
    for chunk in pool:
        distances = torch.cdist(queries, chunk.flatten(1).double(), compute_mode="donot_use_mm_for_euclid_dist")
        indices = torch.arange(offset, offset + len(chunk)).expand(len(queries), -1)
        merged_distances = torch.cat([best_distances, distances], dim=1)
        merged_indices = torch.cat([best_indices, indices], dim=1)
        best_distances, positions = merged_distances.topk(min(k, merged_distances.shape[1]), dim=1, largest=False)
        best_indices = merged_indices.gather(1, positions)
        offset += len(chunk)
    return best_indices.numpy(), best_distances.numpy()


@dataclass
class Saliency:
    probability: np.ndarray
    """(N,) softmax probability of the asked class."""
    grad_cam: np.ndarray
    """(N, H, W) in [0, 1], upsampled to the image size."""
    smooth_grad: np.ndarray
    """(N, H, W) in [0, 1]."""


def _last_feature_map(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the last >= 2x2 4-D module output of the forward pass)."""
    maps: list[torch.Tensor] = []

    def keep(module: nn.Module, arguments: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) >= 2:
            maps.append(output)

    handles = [module.register_forward_hook(keep) for module in model.modules() if module is not model]
    try:
        logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if not maps:
        raise GalaxyDistillError(f"{type(model).__name__} computes no feature map of at least 2x2 for Grad-CAM")
    return logits, maps[-1]


def _class_score(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, classes[:, None]).sum()


def grad_cam(model: nn.Module, inputs: torch.Tensor, classes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N,), Grad-CAM maps (N, H, W) in [0, 1]) for network inputs."""
    with torch.enable_grad():
        logits, feature_map = _last_feature_map(model, inputs)
        (gradient,) = torch.autograd.grad(_class_score(logits, classes), feature_map)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feature_map.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    probability = logits.detach().softmax(dim=1).gather(1, classes[:, None])[:, 0]
    return probability.numpy(), cam.numpy()


def smooth_grad(model: nn.Module, pixels: torch.Tensor, classes: torch.Tensor, to_network: Callable[[torch.Tensor], torch.Tensor],
                generator: torch.Generator, samples: int = SMOOTHGRAD_SAMPLES, noise: float = SMOOTHGRAD_NOISE) -> np.ndarray:
    """SmoothGrad magnitude (N, H, W) in [0, 1] with respect to standardised pixels."""
    spread = noise * (pixels.amax(dim=(1, 2, 3)) - pixels.amin(dim=(1, 2, 3)))
    draws = torch.randn((samples, *pixels.shape), generator=generator) * spread[None, :, None, None, None]
    noisy = (pixels[None] + draws).flatten(0, 1)
    repeated = classes.repeat(samples)
    gradients = []
    for start in range(0, len(noisy), GRADIENT_BATCH):
        batch = noisy[start : start + GRADIENT_BATCH].requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(_class_score(model(to_network(batch)), repeated[start : start + GRADIENT_BATCH]), batch)
        gradients.append(gradient)
    magnitude = torch.cat(gradients).view(samples, *pixels.shape).mean(dim=0).abs().amax(dim=1)
    scale = torch.quantile(magnitude.flatten(1), SALIENCY_PERCENTILE / 100.0, dim=1).clamp_min(1e-12)
    return (magnitude / scale[:, None, None]).clamp(max=1.0).numpy()


def saliency(model: nn.Module, pixels: torch.Tensor, classes: torch.Tensor, to_network: Callable[[torch.Tensor], torch.Tensor],
             generator: torch.Generator) -> Saliency:
    """Grad-CAM and SmoothGrad of the logit of `classes` for standardised pixels (N, C, H, W)."""
    probability, cam = grad_cam(model, to_network(pixels), classes)
    return Saliency(probability, cam, smooth_grad(model, pixels, classes, to_network, generator))
