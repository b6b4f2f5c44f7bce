"""The report's figures: matplotlib (Agg) figures and Pillow animations, returned as PNG/GIF bytes.

Images are drawn with nearest-neighbour upsampling so every pixel of a prototype stays visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from galaxy_distill.data.preview import show_image

DPI = 100
CELL = 1.25
"""Inches per image cell."""
SAME_CLASS_COLOUR = "#1a7f37"
OTHER_CLASS_COLOUR = "#cf222e"
GRID_CELL_PIXELS = 128
"""Prototype grids upsample each image by the largest whole factor that keeps it within this many pixels."""
GRID_GAP = 4
MAX_GIF_FRAMES = 40
MAX_GIF_PIXELS = 12_000_000
"""Pixels summed over the GIF's frames: bounds the animation's size (big grids get fewer frames)."""
STRIP_FRAMES = 6
STRIP_FRAME_WIDTH = 320
GIF_FRAME_SECONDS = 0.4


def png_bytes(figure: Figure) -> bytes:
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def prototype_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], per_class: int, title: str) -> Figure:
    """One row per class of up to `per_class` uint8 NHWC images, each upsampled by a whole factor (pixels stay square).

    The figure is laid out in pixels so that one image pixel maps to exactly `factor` screen pixels.
    """
    size = images.shape[1]
    factor = max(1, GRID_CELL_PIXELS // size)
    cell = size * factor
    rows, columns = len(class_names), max(1, per_class)
    canvas = np.full((rows * (cell + GRID_GAP) - GRID_GAP, columns * (cell + GRID_GAP) - GRID_GAP, 3), 255, dtype=np.uint8)
    for row in range(rows):
        for column, index in enumerate(np.flatnonzero(labels == row)[:columns]):
            picture = np.repeat(np.repeat(images[index], factor, axis=0), factor, axis=1)
            top, left = row * (cell + GRID_GAP), column * (cell + GRID_GAP)
            canvas[top : top + cell, left : left + cell] = picture if picture.shape[-1] == 3 else picture.repeat(3, axis=-1)
    left_margin = 12 + 7 * max(len(name) for name in class_names)
    top_margin = 30
    width, height = canvas.shape[1] + left_margin + 8, canvas.shape[0] + top_margin + 8
    figure = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    axis = figure.add_axes((left_margin / width, 8 / height, canvas.shape[1] / width, canvas.shape[0] / height))
    axis.imshow(canvas, interpolation="nearest", aspect="equal")
    axis.axis("off")
    for row, name in enumerate(class_names):
        axis.text(-8, row * (cell + GRID_GAP) + cell / 2, name, ha="right", va="center", fontsize=9, clip_on=False)
    figure.suptitle(title, fontsize=10, y=1 - 6 / height, va="top")
    return figure


def _cell_inches(picture: np.ndarray) -> float:
    """Inches per image cell: CELL, or enough that big images are not shrunk (titles take ~10% of a cell)."""
    return max(CELL, 1.1 * picture.shape[0] / DPI)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _series(metrics: list[dict[str, float | None]], column: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(row["iteration"], row[column]) for row in metrics if row[column] is not None and row["iteration"] is not None]
    if not points:
        return np.empty(0), np.empty(0)
    iterations, values = zip(*points)
    return np.asarray(iterations, dtype=float), np.asarray(values, dtype=float)


def curves_figure(metrics: list[dict[str, float | None]]) -> Figure:
    """Matching loss, learned step size (and pixel learning rate), checkpoint accuracy, against iteration."""
    figure, (loss_axis, step_axis, accuracy_axis) = plt.subplots(1, 3, figsize=(13, 3.4))
    iterations, loss = _series(metrics, "loss")
    loss_axis.plot(iterations, loss, color="#9ecae1", linewidth=0.8, label="per iteration")
    loss_axis.plot(iterations, _moving_average(loss, max(1, len(loss) // 20)), color="#08519c", label="moving average")
    loss_axis.set(title="normalised matching loss", xlabel="iteration", ylabel="loss")
    loss_axis.legend(fontsize=7)

    iterations, step_size = _series(metrics, "step_size")
    step_axis.plot(iterations, step_size, color="#2ca25f")
    step_axis.set(title="learned inner step size (student lr)", xlabel="iteration", ylabel="step size")
    iterations, pixel_lr = _series(metrics, "pixel_lr")
    if len(pixel_lr):
        pixel_axis = step_axis.twinx()
        pixel_axis.plot(iterations, pixel_lr, color="#756bb1", linestyle="--", linewidth=1)
        pixel_axis.set_ylabel("pixel learning rate (dashed)", color="#756bb1")
        pixel_axis.set_ylim(0, 1.1 * pixel_lr.max())

    for column, colour, label in (("val_accuracy", "#e6550d", "validation"), ("test_accuracy", "#636363", "test")):
        iterations, accuracy = _series(metrics, column)
        if len(accuracy):
            accuracy_axis.plot(iterations, 100 * accuracy, marker="o", color=colour, label=label)
    accuracy_axis.set(title="checkpoint evaluation accuracy", xlabel="iteration", ylabel="accuracy (%)")
    if accuracy_axis.lines:
        accuracy_axis.legend(fontsize=7)
    else:
        accuracy_axis.text(0.5, 0.5, "no checkpoint evaluations in this run", ha="center", va="center",
                           transform=accuracy_axis.transAxes, fontsize=9, color="#666666")
    figure.tight_layout()
    return figure


def schedule_figure(metrics: list[dict[str, float | None]], events: list[dict[str, Any]], method: str) -> Figure:
    """Start epochs and their cap against iteration, the STM probe loss, growth and fine-tuning events."""
    figure, axis = plt.subplots(figsize=(13, 3.6))
    iterations, start_epoch = _series(metrics, "start_epoch")
    axis.scatter(iterations, start_epoch, s=6, color="#bdbdbd", label="start epoch of the iteration", zorder=1)
    iterations, cap = _series(metrics, "cap")
    axis.step(iterations, cap, where="post", color="#08519c", linewidth=2,
              label="cap (start epochs < cap)" if method == "stm" else "max start epoch", zorder=2)
    axis.set(xlabel="iteration", ylabel="expert epoch", title=f"{method.upper()} start-epoch schedule")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    iterations, probe = _series(metrics, "probe_loss")
    handles, labels = axis.get_legend_handles_labels()
    if len(probe):
        probe_axis = axis.twinx()
        (line,) = probe_axis.plot(iterations, probe, color="#e6550d", linewidth=0.9, alpha=0.8)
        probe_axis.set_ylabel("probe loss (epoch cap -> cap + M)", color="#e6550d")
        handles.append(line)
        labels.append("probe loss")
    all_iterations = [row["iteration"] for row in metrics if row["iteration"] is not None]
    last = max(max(all_iterations, default=0), max((e["iteration"] for e in events), default=0))
    for event in events:
        detail = event.get("detail", {})
        near_end = event["iteration"] > 0.9 * last
        if event["kind"] == "grow":
            axis.axvline(event["iteration"], color="#31a354", linestyle="--", linewidth=1.2)
            axis.annotate(f"grow {detail.get('from_cap', '?')}→{detail.get('to_cap', '?')}\nr={detail.get('r', float('nan')):.2f}",
                          (event["iteration"], 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="#31a354",
                          ha="right" if near_end else "left", va="top", xytext=(-2 if near_end else 2, -2),
                          textcoords="offset points")
        elif event["kind"] == "fine_tune":
            axis.axvspan(event["iteration"], last, color="#fdae6b", alpha=0.25, zorder=0)
            axis.annotate("fine-tuning:\npixel lr decays", (event["iteration"], 0.5), xycoords=("data", "axes fraction"),
                          fontsize=7, color="#a63603", xytext=(3, 0), textcoords="offset points", va="center")
    axis.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.06, 1.0))
    figure.tight_layout()
    return figure


def per_class_figure(labels: Sequence[str], accuracies: Sequence[dict[str, float]], class_names: list[str]) -> Figure:
    """Grouped bars: per-class test accuracy of each evaluated image set."""
    figure, axis = plt.subplots(figsize=(min(13, 2 + 0.35 * len(class_names) * (len(labels) + 1)), 3.6))
    width = 0.8 / max(1, len(labels))
    positions = np.arange(len(class_names))
    for k, (label, per_class) in enumerate(zip(labels, accuracies)):
        values = [100 * per_class.get(name, np.nan) for name in class_names]
        axis.bar(positions + (k - (len(labels) - 1) / 2) * width, values, width, label=label)
    axis.set_xticks(positions, class_names, rotation=30 if len(class_names) > 4 else 0, ha="right" if len(class_names) > 4 else "center",
                    fontsize=8)
    axis.set(ylabel="test accuracy (%)", ylim=(0, 100), title="per-class accuracy")
    axis.axhline(100 / len(class_names), color="#999999", linestyle=":", linewidth=1, label="chance")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def confusion_figure(labels: Sequence[str], matrices: Sequence[np.ndarray], class_names: list[str]) -> Figure:
    """Row-normalised confusion matrices (true class down, predicted across), counts written in the cells."""
    columns = min(3, len(labels))
    rows = -(-len(labels) // columns)
    side = min(5.0, 1.8 + 0.35 * len(class_names))
    figure, axes = plt.subplots(rows, columns, figsize=(side * columns, side * rows), squeeze=False)
    for axis, label, matrix in zip(axes.flat, labels, matrices):
        fractions = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
        axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
        if len(class_names) <= 12:
            for (i, j), count in np.ndenumerate(matrix):
                axis.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=7,
                          color="white" if fractions[i, j] > 0.6 else "black")
        ticks = np.arange(len(class_names))
        axis.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(ticks, class_names, fontsize=7)
        axis.set(xlabel="predicted", ylabel="true", title=label)
    for axis in list(axes.flat)[len(labels):]:
        axis.axis("off")
    figure.tight_layout()
    return figure


@dataclass
class Neighbour:
    image: np.ndarray
    class_name: str
    distance: float
    same_class: bool


def neighbours_figure(class_name: str, prototypes: Sequence[np.ndarray], by_features: Sequence[Sequence[Neighbour]] | None,
                      by_pixels: Sequence[Sequence[Neighbour]]) -> Figure:
    """One row per prototype: the prototype, its nearest real images in feature space, then in pixel space."""
    k = len(by_pixels[0])
    groups = [("features", by_features)] if by_features is not None else []
    groups.append(("pixels", by_pixels))
    columns = 1 + sum(k + 1 for _ in groups)
    cell = _cell_inches(prototypes[0])
    figure, axes = plt.subplots(len(prototypes), columns, figsize=(cell * columns, (cell + 0.35) * len(prototypes) + 0.4),
                                squeeze=False)
    for row, prototype in enumerate(prototypes):
        show_image(axes[row, 0], prototype, f"prototype {row + 1}")
        column = 1
        for space, neighbours in groups:
            show_image(axes[row, column], None)
            axes[row, column].text(0.5, 0.5, f"nearest\nin {space}\n→", ha="center", va="center", fontsize=8,
                                   transform=axes[row, column].transAxes)
            column += 1
            for neighbour in neighbours[row]:
                show_image(axes[row, column], neighbour.image, f"{neighbour.class_name}\nd={neighbour.distance:.3f}",
                           SAME_CLASS_COLOUR if neighbour.same_class else OTHER_CLASS_COLOUR)
                column += 1
    figure.suptitle(class_name, fontsize=10)
    figure.tight_layout()
    return figure


@dataclass
class Explained:
    image: np.ndarray
    grad_cam: np.ndarray
    smooth_grad: np.ndarray
    probability: float
    caption: str


def saliency_figure(class_name: str, prototypes: Sequence[Explained], real: Sequence[Explained]) -> Figure:
    """Prototypes (left) and real images of the class (right): image, Grad-CAM over the image, SmoothGrad."""
    rows = max(len(prototypes), len(real))
    cell = _cell_inches((list(prototypes) + list(real))[0].image)
    figure, axes = plt.subplots(rows, 7, figsize=(cell * 6.25, (cell + 0.1) * rows + 0.6), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1, 1, 0.25, 1, 1, 1]})
    for row in range(rows):
        show_image(axes[row, 3], None)
        for offset, items in ((0, prototypes), (4, real)):
            if row >= len(items):
                for column in range(3):
                    show_image(axes[row, offset + column], None)
                continue
            item = items[row]
            show_image(axes[row, offset], item.image, f"{item.caption}\np({class_name})={item.probability:.2f}")
            show_image(axes[row, offset + 1], item.image, "Grad-CAM" if item.grad_cam.max() > 0 else "Grad-CAM: no positive evidence")
            axes[row, offset + 1].imshow(item.grad_cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="nearest")
            show_image(axes[row, offset + 2], None, "SmoothGrad")
            axes[row, offset + 2].imshow(item.smooth_grad, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    figure.suptitle(f"{class_name}: prototypes (left) and real test images (right)", fontsize=10)
    figure.tight_layout()
    return figure


def radial_profiles_figure(class_names: list[str], radii: np.ndarray, real: dict[str, np.ndarray],
                           prototypes: dict[str, np.ndarray]) -> Figure:
    """Per class: mean radial light profile of real images (± 1 std band) and each prototype's profile."""
    columns = min(3, len(class_names))
    rows = -(-len(class_names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False, sharex=True)
    for axis, name in zip(axes.flat, class_names):
        profiles = real[name]
        if len(profiles):
            mean, spread = profiles.mean(axis=0), profiles.std(axis=0)
            axis.fill_between(radii, mean - spread, mean + spread, color="#c6dbef", label="real ± 1 std")
            axis.plot(radii, mean, color="#08519c", label=f"real mean (n={len(profiles)})")
        for k, profile in enumerate(prototypes[name]):
            axis.plot(radii, profile, color="#e6550d", linewidth=1, label="prototypes" if k == 0 else None)
        axis.axhline(0, color="#999999", linewidth=0.6)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("radius (pixels)", fontsize=8)
        axis.set_ylabel("mean luminance", fontsize=8)
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(class_names):]:
        axis.axis("off")
    figure.tight_layout()
    return figure


def measures_figure(class_names: list[str], real: dict[str, dict[str, np.ndarray]],
                    prototypes: dict[str, dict[str, np.ndarray]], has_colour: bool) -> Figure:
    """Left: colour of the centre against the outskirts; right: ellipticity per class (real box, prototypes ◆)."""
    figure, (colour_axis, shape_axis) = plt.subplots(1, 2, figsize=(13, 4.2))
    palette = plt.get_cmap("tab10")
    if has_colour:
        for k, name in enumerate(class_names):
            outskirts, centre = real[name]["colour_outskirts"], real[name]["colour_centre"]
            colour_axis.errorbar(np.nanmean(outskirts), np.nanmean(centre), xerr=np.nanstd(outskirts), yerr=np.nanstd(centre),
                                 fmt="o", color=palette(k % 10), capsize=3, label=f"{name} (real mean ± std)")
            colour_axis.scatter(prototypes[name]["colour_outskirts"], prototypes[name]["colour_centre"], marker="*", s=120,
                                color=palette(k % 10), edgecolor="black", linewidth=0.5)
        limits = np.array([colour_axis.get_xlim(), colour_axis.get_ylim()])
        span = (limits[:, 0].min(), limits[:, 1].max())
        colour_axis.plot(span, span, color="#999999", linestyle=":", linewidth=1)
        colour_axis.set(xlabel="outskirts colour (1-2 R50)", ylabel="centre colour (< 0.5 R50)",
                        title="g−r proxy: −2.5 log10(B/G); ★ prototypes, above the diagonal = redder centre")
        colour_axis.title.set_fontsize(9)
        colour_axis.legend(fontsize=6)
    else:
        colour_axis.text(0.5, 0.5, "single-channel images: no colour", ha="center", va="center", transform=colour_axis.transAxes)
        colour_axis.axis("off")
    positions = np.arange(len(class_names))
    shape_axis.boxplot([real[name]["ellipticity"][np.isfinite(real[name]["ellipticity"])] for name in class_names],
                       positions=positions, widths=0.5, showfliers=False)
    for k, name in enumerate(class_names):
        values = prototypes[name]["ellipticity"]
        shape_axis.scatter(np.full(len(values), k), values, marker="D", color="#e6550d", zorder=3,
                           label="prototypes" if k == 0 else None)
    shape_axis.set_xticks(positions, class_names, rotation=30 if len(class_names) > 4 else 0, fontsize=8,
                          ha="right" if len(class_names) > 4 else "center")
    shape_axis.set(ylabel="ellipticity 1 − b/a", ylim=(0, 1), title="ellipticity from second moments (real: box)")
    shape_axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _frames(paths: Sequence[Path], limit: int) -> list[Image.Image]:
    chosen = [paths[round(i)] for i in np.linspace(0, len(paths) - 1, min(limit, len(paths)))]
    images = [Image.open(path).convert("RGB") for path in chosen]
    width, height = max(i.width for i in images), max(i.height for i in images)
    canvases = []
    for image in images:
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(image, (0, 0))
        canvases.append(canvas)
    return canvases


def evolution_gif(paths: Sequence[Path]) -> bytes:
    """The snapshot grids as a looping GIF (evenly spread frames, always the first and last; see MAX_GIF_PIXELS)."""
    with Image.open(paths[-1]) as last:
        limit = max(2, min(MAX_GIF_FRAMES, MAX_GIF_PIXELS // (last.width * last.height)))
    frames = [frame.quantize(colors=256, method=Image.Quantize.MEDIANCUT) for frame in _frames(paths, limit)]
    buffer = BytesIO()
    durations = [int(GIF_FRAME_SECONDS * 1000)] * len(frames)
    durations[-1] *= 4
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buffer.getvalue()


def frame_strip(paths: Sequence[Path]) -> bytes:
    """Up to STRIP_FRAMES snapshot grids side by side (first to last), as one PNG."""
    frames = _frames(paths, STRIP_FRAMES)
    scale = STRIP_FRAME_WIDTH / frames[0].width
    size = (STRIP_FRAME_WIDTH, max(1, round(frames[0].height * scale)))
    resized = [frame.resize(size, Image.Resampling.LANCZOS) for frame in frames]
    strip = Image.new("RGB", (size[0] * len(resized), size[1]), "white")
    for k, frame in enumerate(resized):
        strip.paste(frame, (k * size[0], 0))
    buffer = BytesIO()
    strip.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
