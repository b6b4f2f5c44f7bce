"""Reading image files and turning them into square cutouts, with errors that name the file."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from galaxy_distill.progress import progress

from galaxy_distill.errors import GalaxyDistillError

MAX_IMAGE_PIXELS = 50_000_000
# Our own, lower limit raises a clear error for every image Pillow would only warn about.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class BadImageError(GalaxyDistillError):
    """An image file that cannot be decoded into pixels."""


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to uint8 HxWx3. Raises BadImageError naming the file."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadImageError(f"{path}: image is {width}x{height} pixels, larger than the {MAX_IMAGE_PIXELS} allowed")
            image.load()
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise BadImageError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def crop_and_resize(pixels: np.ndarray, crop_fraction: float, size: int, where: Path | str = "image") -> np.ndarray:
    """Keep the central `crop_fraction` of the image, then resample to size x size with antialiasing.

    Lanczos resampling in Pillow widens its kernel by the reduction factor, so downscaling
    averages properly instead of aliasing fine structure (spiral arms) into noise.
    """
    height, width = pixels.shape[:2]
    side = int(round(min(height, width) * crop_fraction))
    if side < 2:
        raise BadImageError(f"{where}: image of {width}x{height} pixels is too small to crop {crop_fraction:g} of it")
    top, left = (height - side) // 2, (width - side) // 2
    cropped = pixels[top : top + side, left : left + side]
    mode = "L" if cropped.ndim == 2 or cropped.shape[-1] == 1 else "RGB"
    image = Image.fromarray(cropped.squeeze(-1) if mode == "L" and cropped.ndim == 3 else cropped, mode=mode)
    resized = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))
    return resized[..., None] if resized.ndim == 2 else resized


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def load_cutouts(
    paths: Sequence[Path],
    to_cutout: Callable[[Path], np.ndarray],
    skip_bad: bool,
    workers: int | None = None,
    description: str = "reading images",
    require_some: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Apply `to_cutout` to every path in parallel.

    Returns (stacked cutouts, indices of the paths that worked, messages about skipped files).
    With skip_bad=False the first bad file stops everything with its name in the error; with
    require_some=False a call whose every file is bad returns no cutouts instead of failing.
    """
    if not paths:
        raise GalaxyDistillError("no image files to read")
    results: list[np.ndarray | None] = [None] * len(paths)
    problems: list[str] = []

    def work(index: int) -> None:
        try:
            results[index] = to_cutout(paths[index])
        except BadImageError as exc:
            if not skip_bad:
                raise BadImageError(f"{exc} (--skip-bad-images leaves unreadable files out)") from None
            problems.append(str(exc))

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        futures = [pool.submit(work, i) for i in range(len(paths))]
        try:
            for future in progress(futures, desc=description, unit="img", leave=False):
                future.result()
        except BaseException:
            # Without this the pool would still decode every remaining image before the error shows.
            for future in futures:
                future.cancel()
            raise
    kept = np.array([i for i, r in enumerate(results) if r is not None], dtype=np.int64)
    if len(kept) == 0:
        if not require_some:
            return np.zeros((0, 0, 0, 0), dtype=np.uint8), kept, sorted(problems)
        raise GalaxyDistillError(f"none of the {len(paths)} images could be read; first problem: {problems[0]}")
    return np.stack([results[i] for i in kept]), kept, sorted(problems)
