"""Differentiable siamese augmentation: draws, each op on planted images, modes and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from galaxy_distill.data.augment import (
    ANGLE,
    BRIGHTNESS,
    CONTRAST,
    CUTOUT_LEFT,
    CUTOUT_TOP,
    FLIP,
    OPS,
    SATURATION,
    SCALE_X,
    SCALE_Y,
    SHIFT_COL,
    SHIFT_ROW,
    THETA,
    AugmentDraw,
    DiffAugment,
    warp,
)
from galaxy_distill.errors import GalaxyDistillError


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(count: int = 6, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, channels, size, size, generator=seeded(seed))


def blobs(centres: list[tuple[float, float]], size: int = 64, sigma: float = 3.0) -> torch.Tensor:
    """One single-channel image per (row, col) centre holding a Gaussian spot there."""
    grid = torch.arange(size, dtype=torch.float64)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")
    spots = [torch.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2)) for r, c in centres]
    return torch.stack(spots)[:, None].float()


def centroid(image: torch.Tensor) -> tuple[float, float]:
    grid = torch.arange(image.shape[-1], dtype=torch.float64)
    weights = image.double().squeeze()
    total = weights.sum()
    return float((weights.sum(1) * grid).sum() / total), float((weights.sum(0) * grid).sum() / total)


def test_defaults_are_mtt_param_diff_aug() -> None:
    augment = DiffAugment()
    assert augment.strategy == "color_crop_cutout_flip_scale_rotate" and augment.mode == "single"
    assert (augment.scale_ratio, augment.rotate_degrees, augment.crop_ratio, augment.cutout_ratio) == (1.2, 15.0, 0.125, 0.5)
    assert (augment.flip_probability, augment.brightness, augment.saturation, augment.contrast) == (0.5, 1.0, 2.0, 0.5)
    assert augment.ops == OPS


@pytest.mark.parametrize("mode", ["single", "all"])
def test_same_seed_gives_same_augmentation_and_another_seed_does_not(mode: str) -> None:
    augment = DiffAugment(mode=mode)
    x = random_images()
    first, again, other = (augment(x, seeded(seed)) for seed in (1, 1, 2))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("mode", ["single", "all"])
def test_draw_many_equals_successive_draws(mode: str) -> None:
    augment = DiffAugment(mode=mode)
    many_generator, single_generator = seeded(3), seeded(3)
    many = augment.draw_many(5, 4, 32, many_generator, "cpu")
    for index in range(5):
        single = augment.draw(4, 32, single_generator, "cpu")
        assert many.step(index).ops == single.ops
        torch.testing.assert_close(many.step(index).params, single.params, rtol=0, atol=0)
    assert torch.equal(torch.rand(3, generator=many_generator), torch.rand(3, generator=single_generator))
    with pytest.raises(IndexError):
        many.step(5)


def test_single_mode_picks_one_op_per_call_uniformly_and_parameters_per_image() -> None:
    draws = DiffAugment().draw_many(600, 8, 32, seeded(4), "cpu")
    assert all(len(ops) == 1 for ops in draws.ops)
    counts = {op: sum(ops == (op,) for ops in draws.ops) for op in OPS}
    assert all(60 <= count <= 140 for count in counts.values()), counts
    assert (draws.params[:, :, FLIP] == -1).any(dim=1).logical_and((draws.params[:, :, FLIP] == 1).any(dim=1)).any()
    assert draws.params[:, :, BRIGHTNESS].std(dim=1).min() > 0


def test_single_mode_resamples_with_the_chosen_op_alone() -> None:
    draws = DiffAugment().draw_many(60, 4, 32, seeded(15), "cpu")
    assert {ops[0] for ops in draws.ops} == set(OPS)
    for index, ops in enumerate(draws.ops):
        applied = draws.step(index)
        torch.testing.assert_close(applied.params[0, :, THETA].view(4, 2, 3), applied.theta_of(ops)[0], rtol=0, atol=0)
        if ops[0] not in ("crop", "flip", "scale", "rotate"):
            assert applied.params[0, :, THETA].tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]] * 4


def only(op: str, **ratios: float) -> DiffAugment:
    return DiffAugment(strategy=op, **ratios)


def test_flip_mirrors_left_right_for_the_drawn_images() -> None:
    x = random_images(count=16)
    augment = only("flip")
    draw = augment.draw(16, 32, seeded(5), "cpu")
    flipped = draw.params[0, :, FLIP] == -1
    assert flipped.any() and (~flipped).any()
    out = augment.apply(x, draw)
    torch.testing.assert_close(out[flipped], x[flipped].flip(-1))
    torch.testing.assert_close(out[~flipped], x[~flipped])
    torch.testing.assert_close(only("flip", flip_probability=1.0)(x, seeded(5)), x.flip(-1))


def test_crop_translates_by_whole_pixels_with_zero_fill() -> None:
    x = random_images(count=40, size=32)
    augment = only("crop")
    draw = augment.draw(40, 32, seeded(6), "cpu")
    shifts = draw.params[0, :, [SHIFT_ROW, SHIFT_COL]].long()
    assert shifts.abs().max() == 4 and shifts.abs().sum() > 0  # 0.125 * 32
    out = augment.apply(x, draw)
    padded = torch.nn.functional.pad(x, [4, 4, 4, 4])
    for image, expected_source, (row, col) in zip(out, padded, shifts.tolist(), strict=True):
        torch.testing.assert_close(image, expected_source[:, 4 + row : 36 + row, 4 + col : 36 + col])


@pytest.mark.parametrize(("size", "side"), [(32, 16), (30, 15)])
def test_cutout_zeros_one_square_of_half_the_size(size: int, side: int) -> None:
    count = 40
    augment = only("cutout")
    draw = augment.draw(count, size, seeded(7), "cpu")
    assert draw.cutout_size == side
    out = augment.apply(torch.ones(count, 3, size, size), draw)
    assert torch.equal(out[:, 0], out[:, 2])
    origins = draw.params[0, :, [CUTOUT_TOP, CUTOUT_LEFT]].long().tolist()
    fully_inside = 0
    for image, (top, left) in zip(out[:, 0], origins, strict=True):
        expected = torch.ones(size, size)
        expected[max(top, 0) : top + side, max(left, 0) : left + side] = 0
        assert torch.equal(image, expected)
        if top >= 0 and left >= 0 and top + side <= size and left + side <= size:
            fully_inside += 1
            assert (image == 0).sum() == side * side
    assert 0 < fully_inside < count


def test_rotate_and_scale_move_a_planted_point_as_their_angle_and_factors_say() -> None:
    size, centre = 64, 31.5
    spots = [(20.0, 44.0), (40.0, 16.0), (31.5, 50.0), (50.0, 31.5)]
    x = blobs(spots, size)
    rotate = only("rotate", rotate_degrees=60.0)
    rotate_draw = rotate.draw(len(spots), size, seeded(8), "cpu")
    scale = only("scale", scale_ratio=1.5)
    scale_draw = scale.draw(len(spots), size, seeded(9), "cpu")
    rotated, scaled = rotate.apply(x, rotate_draw), scale.apply(x, scale_draw)
    for index, (row, col) in enumerate(spots):
        # Output pixel p samples the input at theta @ p, so a point at q moves to theta^-1 @ q.
        angle = float(rotate_draw.params[0, index, ANGLE])
        x0, y0 = col - centre, row - centre
        moved = (centre + y0 * math.cos(angle) - x0 * math.sin(angle), centre + x0 * math.cos(angle) + y0 * math.sin(angle))
        assert centroid(rotated[index]) == pytest.approx(moved, abs=0.3)
        sx, sy = float(scale_draw.params[0, index, SCALE_X]), float(scale_draw.params[0, index, SCALE_Y])
        assert centroid(scaled[index]) == pytest.approx((centre + y0 / sy, centre + x0 / sx), abs=0.3)
    assert rotate_draw.params[0, :, ANGLE].abs().max() > math.radians(10)


def test_rotation_by_a_positive_angle_turns_the_picture_anticlockwise() -> None:
    x = blobs([(31.5, 50.0)])  # right of centre
    theta = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # MTT's matrix for +90 degrees
    assert centroid(warp(x, theta)[0]) == pytest.approx((13.0, 31.5), abs=0.05)  # now above centre


def test_color_shifts_brightness_and_scales_saturation_and_contrast() -> None:
    x = random_images(count=8)
    augment = only("color")
    draw = augment.draw(8, 32, seeded(10), "cpu")
    out = augment.apply(x, draw)
    b, s, c = (draw.params[0, :, column].view(-1, 1, 1, 1) for column in (BRIGHTNESS, SATURATION, CONTRAST))
    assert b.abs().max() <= 0.5 and 0 <= s.min() and s.max() < 2 and 0.5 <= c.min() and c.max() < 1.5
    mean, channel_mean = x.mean(dim=(1, 2, 3), keepdim=True), x.mean(dim=1, keepdim=True)
    out_mean, out_channel_mean = out.mean(dim=(1, 2, 3), keepdim=True), out.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out_mean, mean + b)
    torch.testing.assert_close(out - out_channel_mean, (x - channel_mean) * s * c)
    torch.testing.assert_close(out_channel_mean - out_mean, (channel_mean - mean) * c)


@pytest.mark.parametrize("strategy", [*OPS, "color_crop_cutout_flip_scale_rotate"])
@pytest.mark.parametrize("mode", ["single", "all"])
def test_gradient_flows_to_the_images(strategy: str, mode: str) -> None:
    x = random_images(count=4).requires_grad_()
    weights = random_images(count=4, seed=1)
    (DiffAugment(strategy, mode)(x, seeded(11)) * weights).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_all_mode_is_differentiable_exactly() -> None:
    augment = DiffAugment(mode="all")
    draw = augment.draw(2, 8, seeded(12), "cpu")
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=seeded(13), requires_grad=True)
    assert torch.autograd.gradcheck(lambda images: augment.apply(images, draw), (x,))


def test_none_is_the_identity() -> None:
    x = random_images()
    augment = DiffAugment("none")
    assert augment.ops == () and augment.draw(6, 32, seeded(0), "cpu").ops == ((),)
    assert torch.equal(augment(x, seeded(0)), x)


@pytest.mark.parametrize(
    ("strategy", "compared"),
    [
        ("crop_flip_scale_rotate", slice(None)),
        # Colour lifts the background, which each extra resampling clips at the border, so
        # compare only the centre that no intermediate step moves off the image.
        ("color_crop_cutout_flip_scale_rotate", slice(20, 44)),
    ],
)
def test_all_mode_fuses_geometry_like_the_ops_one_by_one(strategy: str, compared: slice) -> None:
    size = 64
    x = blobs([(24.0, 40.0), (36.0, 28.0), (30.0, 30.0)], size, sigma=4.0).repeat(1, 3, 1, 1)
    x[:, 1] *= 0.5
    augment = DiffAugment(strategy, mode="all", scale_ratio=1.1, rotate_degrees=30.0)
    draw = augment.draw(3, size, seeded(14), "cpu")
    fused = augment.apply(x, draw)

    def with_ops(*ops: str) -> AugmentDraw:
        return AugmentDraw((ops,), draw.params, draw.image_size, draw.cutout_size)

    one_by_one = augment.apply(x, with_ops("color")) if "color" in augment.ops else x
    for op in ("crop", "flip", "scale", "rotate"):
        one_by_one = warp(one_by_one, draw.theta_of([op])[0])
    if "cutout" in augment.ops:
        one_by_one = augment.apply(one_by_one, with_ops("cutout"))
    assert (draw.params[0, :, FLIP] == -1).any() and draw.params[0, :, SHIFT_ROW].abs().sum() > 0
    torch.testing.assert_close(fused[..., compared, compared], one_by_one[..., compared, compared], rtol=0, atol=0.02)
    assert (fused - x).abs().max() > 0.3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"strategy": "color_blur"}, "unknown op 'blur'"),
        ({"strategy": "flip_flip"}, "an op listed twice"),
        ({"strategy": ""}, "unknown op ''"),
        ({"mode": "multiple"}, "mode 'multiple' is not one of single, all"),
        ({"scale_ratio": 0.8}, "scale_ratio must be in"),
        ({"flip_probability": 1.5}, "flip_probability must be in"),
    ],
)
def test_bad_settings_are_rejected(settings: dict, message: str) -> None:
    with pytest.raises(GalaxyDistillError, match=message):
        DiffAugment(**settings)


def test_apply_rejects_a_draw_for_other_images_or_several_steps() -> None:
    augment = DiffAugment()
    draw = augment.draw_many(2, 4, 32, seeded(0), "cpu")
    with pytest.raises(GalaxyDistillError, match="one-step draw"):
        augment.apply(random_images(count=4), draw)
    with pytest.raises(GalaxyDistillError, match="drawn for 4 images of 32x32 px cannot apply to a batch of shape"):
        augment.apply(random_images(count=5), draw.step(0))
    with pytest.raises(GalaxyDistillError, match="cannot apply"):
        augment.apply(random_images(count=4, size=16), draw.step(0))
