"""Dataset-level transforms: rotation augmentation and ZCA whitening."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from galaxy_distill.errors import GalaxyDistillError

MAX_ZCA_FEATURES = 3 * 64 * 64


def rotate_augment(images: np.ndarray, labels: np.ndarray, rotations: int) -> tuple[np.ndarray, np.ndarray]:
    """Append k-1 rotated copies (by 360/k degrees each) of every image, as GZoo2_aug does.

    Multiples of 90 degrees are exact pixel permutations; other angles use cubic
    interpolation with reflected borders so no black corners appear on the sky.
    """
    if rotations == 1:
        return images, labels
    copies = [images]
    for step in range(1, rotations):
        angle = 360.0 * step / rotations
        if angle % 90 == 0:
            copies.append(np.rot90(images, k=int(angle // 90), axes=(1, 2)).copy())
        else:
            rotated = ndimage.rotate(images.astype(np.float32), angle, axes=(2, 1), reshape=False, order=3, mode="reflect")
            copies.append(np.clip(np.rint(rotated), 0, 255).astype(np.uint8))
    return np.concatenate(copies), np.tile(labels, rotations)


def fit_zca(normalized: torch.Tensor, regularization: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA whitening matrix and its inverse, fitted on normalised NCHW training images.

    Follows the MTT/kornia convention: the covariance eigenvalues are regularised by
    adding `regularization` before the inverse square root, which keeps noise from
    being amplified without bound.
    """
    n, c, h, w = normalized.shape
    if c * h * w > MAX_ZCA_FEATURES:
        raise GalaxyDistillError(
            f"ZCA whitening supports at most {MAX_ZCA_FEATURES} values per image (3x64x64); "
            f"got {c}x{h}x{w}: use a smaller --size or no --zca"
        )
    flat = normalized.reshape(n, -1).double()
    flat = flat - flat.mean(dim=0, keepdim=True)
    covariance = flat.T @ flat / max(1, n - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues = eigenvalues.clamp_min(0)
    whiten = eigenvectors @ torch.diag((eigenvalues + regularization).rsqrt()) @ eigenvectors.T
    unwhiten = eigenvectors @ torch.diag((eigenvalues + regularization).sqrt()) @ eigenvectors.T
    return whiten.float(), unwhiten.float()


def apply_matrix(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    shape = images.shape
    return (images.reshape(shape[0], -1) @ matrix.T.to(images.dtype)).reshape(shape)
