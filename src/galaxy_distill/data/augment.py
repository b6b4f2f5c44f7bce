"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021) as MTT applies it.

The strategy names the ops, joined by "_": "color" (brightness, saturation and contrast in
turn), "crop" (integer translation by up to `crop_ratio` of the size, zero fill), "cutout"
(a zeroed square of side `cutout_ratio` of the size), "flip" (horizontal mirror with
probability `flip_probability`), "scale" (independent x/y zoom in [1/scale_ratio,
scale_ratio]) and "rotate" (up to +-`rotate_degrees`); "none" is the identity. Every image
gets its own random parameters; the same draw applied to two batches augments them
identically, which is the "siamese" part.

Modes:
- "single" (MTT's default aug_mode 'S'): each call applies ONE op of the strategy, chosen at
  random for the whole batch.
- "all": every op of the strategy on every call, in the order colour, then the geometric ops
  (crop, flip, scale, rotate in strategy order) fused into one affine resampling, then
  cutout, so the cut square stays a square in the output.

Randomness is split from computation so that a training loop can draw everything up front:
`DiffAugment.draw_many` takes one `torch.rand` call on the caller's generator (usually a CPU
generator), turns it into per-image parameters and affine matrices there, and moves them to
the images' device in one non-blocking copy; `DiffAugment.apply` is then pure tensor work on
that device with no host synchronisation, differentiable with respect to the images.
Geometric ops resample with `grid_sample(align_corners=True)`, MTT's convention, under which
integer translations and mirrors land exactly on pixel centres.

Draw semantics: each augmentation call consumes exactly `1 + 11 * num_images` uniforms (the
op choice, then 11 per image), so on a CPU generator `draw_many(k, ...)` gives the same draws
as `k` successive `draw(...)` calls, and `draw(...)` is `draw_many(1, ...)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from galaxy_distill.errors import GalaxyDistillError

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
GEOMETRIC_OPS = ("crop", "flip", "scale", "rotate")
NO_AUGMENTATION = "none"
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
MODES = ("single", "all")

# Columns of AugmentDraw.params: one uniform per image for each of the first eleven, then
# the 2x3 affine matrix of the geometric ops applied in that call.
BRIGHTNESS, SATURATION, CONTRAST, SHIFT_ROW, SHIFT_COL, CUTOUT_TOP, CUTOUT_LEFT, FLIP, SCALE_X, SCALE_Y, ANGLE = range(11)
UNIFORMS_PER_IMAGE = 11
THETA = slice(UNIFORMS_PER_IMAGE, UNIFORMS_PER_IMAGE + 6)
PARAM_COUNT = UNIFORMS_PER_IMAGE + 6


@dataclass(frozen=True)
class AugmentDraw:
    """Random parameters of `steps` augmentation calls on `num_images` images of `image_size` px.

    `ops[s]` names the ops that call `s` applies; `params` is [steps, num_images, PARAM_COUNT]
    on the images' device (columns named by this module's constants).
    """

    ops: tuple[tuple[str, ...], ...]
    params: torch.Tensor
    image_size: int
    cutout_size: int

    @property
    def steps(self) -> int:
        return len(self.ops)

    @property
    def num_images(self) -> int:
        return self.params.shape[1]

    def step(self, index: int) -> AugmentDraw:
        """The draw of call `index` alone (a view, no copy)."""
        if not 0 <= index < self.steps:
            raise IndexError(f"augmentation step {index} out of range for a draw of {self.steps} steps")
        return AugmentDraw(self.ops[index : index + 1], self.params[index : index + 1], self.image_size, self.cutout_size)

    def theta_of(self, ops: Sequence[str]) -> torch.Tensor:
        """Affine matrices [steps, num_images, 2, 3] for `grid_sample` of the geometric `ops` applied in order."""
        matrix = self.params.new_empty(*self.params.shape[:-1], 6)
        for column, entry in enumerate(_theta(self.params[..., :UNIFORMS_PER_IMAGE], ops, self.image_size)):
            matrix[..., column] = entry
        return matrix.unflatten(-1, (2, 3))


@dataclass(frozen=True)
class DiffAugment:
    """DSA with MTT's ParamDiffAug constants as defaults."""

    strategy: str = DEFAULT_STRATEGY
    mode: Literal["single", "all"] = "single"
    scale_ratio: float = 1.2
    rotate_degrees: float = 15.0
    crop_ratio: float = 0.125
    cutout_ratio: float = 0.5
    flip_probability: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        parse_strategy(self.strategy)
        if self.mode not in MODES:
            raise GalaxyDistillError(f"augmentation mode {self.mode!r} is not one of {', '.join(MODES)}")
        limits = {
            "scale_ratio": (self.scale_ratio, 1.0, math.inf),
            "rotate_degrees": (self.rotate_degrees, 0.0, 180.0),
            "crop_ratio": (self.crop_ratio, 0.0, 1.0),
            "cutout_ratio": (self.cutout_ratio, 0.0, 1.0),
            "flip_probability": (self.flip_probability, 0.0, 1.0),
            "brightness": (self.brightness, 0.0, math.inf),
            "saturation": (self.saturation, 0.0, math.inf),
            "contrast": (self.contrast, 0.0, math.inf),
        }
        for name, (value, low, high) in limits.items():
            if not low <= value <= high:
                raise GalaxyDistillError(f"augmentation {name} must be in [{low}, {high}], got {value}")

    @property
    def ops(self) -> tuple[str, ...]:
        return parse_strategy(self.strategy)

    def cutout_size(self, image_size: int) -> int:
        """Side in pixels of the cutout square on images of `image_size` px."""
        return int(image_size * self.cutout_ratio + 0.5)

    def draw(self, num_images: int, image_size: int, generator: torch.Generator, device: torch.device | str) -> AugmentDraw:
        """Parameters of one call (a one-step draw)."""
        return self.draw_many(1, num_images, image_size, generator, device)

    def draw_many(
        self, steps: int, num_images: int, image_size: int, generator: torch.Generator, device: torch.device | str
    ) -> AugmentDraw:
        """Parameters of `steps` successive calls from one random draw on the generator's device.

        The op choice becomes Python ints, which costs a synchronisation only if the
        generator lives on an accelerator; use a CPU generator to keep the device stream free.
        """
        if steps < 1 or num_images < 1 or image_size < 2:
            raise GalaxyDistillError(
                f"augmentation needs at least 1 step, 1 image and 2 px; got {steps}, {num_images} and {image_size}"
            )
        ops = self.ops
        uniforms = torch.rand((steps, 1 + num_images * UNIFORMS_PER_IMAGE), generator=generator, device=generator.device)
        params = uniforms.new_empty(steps, num_images, PARAM_COUNT)
        per_image = params[..., :UNIFORMS_PER_IMAGE]
        self._fill_image_params(per_image, uniforms[:, 1:].view(steps, num_images, UNIFORMS_PER_IMAGE), image_size)
        geometric = [op for op in ops if op in GEOMETRIC_OPS]
        if self.mode == "all" or not ops:
            step_ops = (ops,) * steps
            theta = _theta(per_image, geometric, image_size)
        else:
            choices = (uniforms[:, 0] * len(ops)).long().clamp_max(len(ops) - 1)
            step_ops = tuple((ops[choice],) for choice in choices.tolist())
            theta = _theta(_only_chosen_geometry(per_image, choices, ops), geometric, image_size)
        for column, entry in enumerate(theta, start=THETA.start):
            params[..., column] = entry
        device = torch.device(device)
        if device.type == "cuda" and params.device.type == "cpu":
            params = params.pin_memory()
        return AugmentDraw(step_ops, params.to(device, non_blocking=True), image_size, self.cutout_size(image_size))

    def apply(self, images: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        """Augment `images` [N, C, H, W] with a one-step draw for N images of H = W px."""
        if draw.steps != 1:
            raise GalaxyDistillError(f"apply takes a one-step draw; take draw.step(i) of this {draw.steps}-step draw")
        if images.dim() != 4 or images.shape[0] != draw.num_images or images.shape[-2:] != (draw.image_size,) * 2:
            raise GalaxyDistillError(
                f"augmentation drawn for {draw.num_images} images of {draw.image_size}x{draw.image_size} px "
                f"cannot apply to a batch of shape {tuple(images.shape)}"
            )
        ops = draw.ops[0]
        params = draw.params[0].to(images.dtype)
        if "color" in ops:
            images = _color(images, params)
        if any(op in GEOMETRIC_OPS for op in ops):
            images = warp(images, params[:, THETA].reshape(-1, 2, 3))
        if "cutout" in ops:
            images = _cutout(images, params, draw.cutout_size)
        return images

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.draw(images.shape[0], images.shape[-1], generator, images.device))

    def _fill_image_params(self, out: torch.Tensor, uniforms: torch.Tensor, image_size: int) -> None:
        """Per-image parameters (the first eleven columns) from uniforms in [0, 1), written into `out`."""
        shift = int(image_size * self.crop_ratio + 0.5)
        cutout_size = self.cutout_size(image_size)
        # MTT's cutout centres range over [0, size) for odd sides and [0, size] for even ones.
        cutout_centres = image_size + 1 - cutout_size % 2
        inverse_scale = 1.0 / self.scale_ratio
        # All but the flip are affine in their uniform (integer ones then floored), so one
        # multiply-add over the whole block makes them.
        multiplier, offset = [0.0] * UNIFORMS_PER_IMAGE, [0.0] * UNIFORMS_PER_IMAGE
        multiplier[BRIGHTNESS], offset[BRIGHTNESS] = self.brightness, -0.5 * self.brightness
        multiplier[SATURATION] = self.saturation
        multiplier[CONTRAST], offset[CONTRAST] = 1.0, self.contrast
        multiplier[SHIFT_ROW] = multiplier[SHIFT_COL] = 2 * shift + 1
        offset[SHIFT_ROW] = offset[SHIFT_COL] = -shift
        multiplier[CUTOUT_TOP] = multiplier[CUTOUT_LEFT] = cutout_centres
        offset[CUTOUT_TOP] = offset[CUTOUT_LEFT] = -(cutout_size // 2)
        multiplier[SCALE_X] = multiplier[SCALE_Y] = self.scale_ratio - inverse_scale
        offset[SCALE_X] = offset[SCALE_Y] = inverse_scale
        multiplier[ANGLE], offset[ANGLE] = math.radians(2 * self.rotate_degrees), -math.radians(self.rotate_degrees)
        torch.addcmul(uniforms.new_tensor(offset), uniforms, uniforms.new_tensor(multiplier), out=out)
        out[..., SHIFT_ROW : CUTOUT_LEFT + 1].floor_()
        out[..., FLIP] = torch.where(uniforms[..., FLIP] < self.flip_probability, -1.0, 1.0)


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """The ops of a strategy such as "color_crop_cutout_flip_scale_rotate" ("none": no ops)."""
    if strategy == NO_AUGMENTATION:
        return ()
    ops = tuple(strategy.split("_"))
    unknown = [op for op in ops if op not in OPS]
    if unknown or len(set(ops)) != len(ops):
        problem = f"unknown op {unknown[0]!r}" if unknown else "an op listed twice"
        raise GalaxyDistillError(
            f"augmentation strategy {strategy!r} has {problem}: join distinct ops from "
            f"{', '.join(OPS)} with '_', or use {NO_AUGMENTATION!r}"
        )
    return ops


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample `images` [N, C, H, W]: output pixel p takes the input at theta @ (p, 1), in
    normalised coordinates (x = column, y = row, -1..1 at pixel centres), zero outside."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


Affine = tuple[torch.Tensor | float, ...]


def _theta(per_image: torch.Tensor, ops: Sequence[str], image_size: int) -> Affine:
    """Entries (a, b, c, d, e, f) of the 2x3 matrix [[a, b, c], [d, e, f]] of the geometric `ops`
    in order (others are skipped), each broadcastable to per_image[..., 0].

    Resampling by A then by B equals resampling once by A @ B, so the first op is leftmost.
    """
    matrix: Affine = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    pixel = 2.0 / (image_size - 1)
    for op in ops:
        if op == "crop":
            step: Affine = (1.0, 0.0, per_image[..., SHIFT_COL] * pixel, 0.0, 1.0, per_image[..., SHIFT_ROW] * pixel)
        elif op == "flip":
            step = (per_image[..., FLIP], 0.0, 0.0, 0.0, 1.0, 0.0)
        elif op == "scale":
            step = (per_image[..., SCALE_X], 0.0, 0.0, 0.0, per_image[..., SCALE_Y], 0.0)
        elif op == "rotate":
            cos, sin = torch.cos(per_image[..., ANGLE]), torch.sin(per_image[..., ANGLE])
            step = (cos, -sin, 0.0, sin, cos, 0.0)
        else:
            continue
        matrix = _compose(matrix, step)
    return matrix


def _compose(first: Affine, then: Affine) -> Affine:
    a, b, c, d, e, f = first
    p, q, r, s, t, u = then
    return (a * p + b * s, a * q + b * t, a * r + b * u + c, d * p + e * s, d * q + e * t, d * r + e * u + f)


# The parameter columns of each geometric op and the value that makes it the identity.
IDENTITY_PARAMS = {
    "crop": ((SHIFT_ROW, SHIFT_COL), 0.0),
    "flip": ((FLIP,), 1.0),
    "scale": ((SCALE_X, SCALE_Y), 1.0),
    "rotate": ((ANGLE,), 0.0),
}


def _only_chosen_geometry(per_image: torch.Tensor, choices: torch.Tensor, ops: Sequence[str]) -> torch.Tensor:
    """`per_image` with each geometric op set to the identity in the steps that did not choose it."""
    masked = per_image.clone()
    for index, op in enumerate(ops):
        if op in IDENTITY_PARAMS:
            columns, identity = IDENTITY_PARAMS[op]
            not_chosen = (choices != index)[:, None]
            for column in columns:
                masked[..., column].masked_fill_(not_chosen, identity)
    return masked


def _color(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    brightness, saturation, contrast = (params[:, column].view(-1, 1, 1, 1) for column in (BRIGHTNESS, SATURATION, CONTRAST))
    images = images + brightness
    channel_mean = images.mean(dim=1, keepdim=True)
    images = (images - channel_mean) * saturation + channel_mean
    image_mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - image_mean) * contrast + image_mean


def _cutout(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    positions = torch.arange(images.shape[-1], device=images.device, dtype=params.dtype)
    top, left = params[:, CUTOUT_TOP, None], params[:, CUTOUT_LEFT, None]
    in_rows = (positions >= top) & (positions < top + size)
    in_cols = (positions >= left) & (positions < left + size)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return images * keep.unsqueeze(1).to(images.dtype)
