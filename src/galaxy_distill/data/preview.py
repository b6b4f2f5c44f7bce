"""Grids of example images per class, for people to look at."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from galaxy_distill.atomic_io import atomic_write_bytes  # noqa: E402


def show_image(axis: Axes, picture: np.ndarray | None, title: str = "", colour: str = "black") -> None:
    """One uint8 HWC image (grey if one channel) in `axis`, pixels unsmoothed, without ticks or frame."""
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)
    if picture is not None:
        axis.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture,
                    cmap="gray" if picture.shape[-1] == 1 else None, interpolation="nearest")
    if title:
        axis.set_title(title, fontsize=7, color=colour)


def class_grid_png(
    images: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path, per_class: int = 8, title: str = ""
) -> Path:
    """One row per class of up to `per_class` uint8 NHWC images; nearest-neighbour upsampling keeps pixels sharp."""
    columns = max(1, min(per_class, max(int((labels == k).sum()) for k in range(len(class_names)))))
    cell = 1.3
    figure, axes = plt.subplots(
        len(class_names), columns, figsize=(cell * columns + 1.6, cell * len(class_names) + 0.4), squeeze=False
    )
    for row, name in enumerate(class_names):
        members = np.flatnonzero(labels == row)[:columns]
        for column in range(columns):
            show_image(axes[row, column], images[members[column]] if column < len(members) else None)
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path
