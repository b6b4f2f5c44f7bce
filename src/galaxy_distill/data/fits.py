"""FITS cutouts to 8-bit pictures: asinh stretch for one band, Lupton et al. (2004) colour for g, r, i.

FITS holds linear fluxes in arbitrary units, so every picture is scaled by its own statistics:
  * sky: the 3-sigma-clipped median of each band (robust to the galaxy covering part of the frame);
  * one band: the interval [sky, 99.5th percentile] is mapped to [0, 1] (clipped), then
    AsinhStretch(a=0.1);
  * g, r, i: each band minus its sky, all three divided by one common factor (the 99.5th
    percentile of their mean, so colours are kept), then make_lupton_rgb(i, r, g, stretch=0.5, Q=8):
    i -> red, r -> green, g -> blue, as in SDSS colour images.
A 3 x H x W cube holds its planes in order of increasing wavelength (g, r, i).
Non-finite pixels (NaN, inf: masked or missing data) are replaced by the median of the finite
pixels of their band and counted. Statistics are measured on the whole image, before any crop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.stats import sigma_clipped_stats
from astropy.visualization import AsinhStretch, ManualInterval, make_lupton_rgb

from galaxy_distill.data.images import MAX_IMAGE_PIXELS, BadImageError

FITS_SUFFIX = r"(?:\.(?:fits|fit|fts)(?:\.gz|\.fz)?|\.fz)"
FITS_NAME = re.compile(FITS_SUFFIX + "$", re.IGNORECASE)
BAND_FILE_NAME = re.compile(r"^(?P<stem>.+)_(?P<band>[gri])" + FITS_SUFFIX + "$", re.IGNORECASE)
BANDS = ("g", "r", "i")
"""Bands of a colour FITS picture, in order of increasing wavelength (the plane order of a cube)."""

SKY_SIGMA = 3.0
SKY_ITERATIONS = 5
UPPER_PERCENTILE = 99.5
ASINH_A = 0.1
LUPTON_STRETCH = 0.5
LUPTON_Q = 8.0

STRETCH_PARAMETERS: dict[str, Any] = {
    "sky": f"per band: {SKY_SIGMA:g}-sigma-clipped median ({SKY_ITERATIONS} iterations) of the whole image",
    "non_finite_pixels": "replaced by the median of the finite pixels of their band",
    "single_band": {
        "interval": f"[sky, {UPPER_PERCENTILE:g}th percentile] -> [0, 1], clipped",
        "lower": "sky",
        "upper_percentile": UPPER_PERCENTILE,
        "stretch": "astropy.visualization.AsinhStretch",
        "a": ASINH_A,
    },
    "multi_band": {
        "bands": list(BANDS),
        "cube_plane_order": list(BANDS),
        "band_files": "<stem>_g.fits, <stem>_r.fits, <stem>_i.fits (also .fit, .fts, .gz, .fz)",
        "scale": f"each band minus its sky, divided by the {UPPER_PERCENTILE:g}th percentile of the three bands' mean",
        "function": "astropy.visualization.make_lupton_rgb",
        "channels": {"red": "i", "green": "r", "blue": "g"},
        "minimum": 0.0,
        "stretch": LUPTON_STRETCH,
        "Q": LUPTON_Q,
    },
}
"""How FITS pixels became 8-bit values; stored in a prepared dataset's provenance."""


def is_fits(path: Path) -> bool:
    return FITS_NAME.search(path.name) is not None


def band_of(path: Path) -> tuple[str, str] | None:
    """(stem, band) when the file name marks one band of a g, r, i group, e.g. ngc4414_r.fits."""
    match = BAND_FILE_NAME.match(path.name)
    if match is None:
        return None
    return match["stem"], match["band"].lower()


def read_fits_planes(path: Path) -> np.ndarray:
    """The first HDU with image data, as float64 planes x H x W (1 plane, or 3 planes g, r, i)."""
    try:
        with fits.open(path, memmap=False) as hdus:
            for index, hdu in enumerate(hdus):
                if not hdu.is_image or hdu.data is None or hdu.data.size == 0:
                    continue
                data = np.asarray(hdu.data, dtype=np.float64)
                break
            else:
                raise BadImageError(f"{path}: no HDU holds image data (found {len(hdus)} HDU(s) without an image)")
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(f"{path}: FITS file not found") from None
    except (OSError, ValueError, TypeError, IndexError, KeyError, VerifyError) as exc:
        raise BadImageError(f"{path}: not a readable FITS file ({exc.__class__.__name__}: {exc})") from None
    original_shape = data.shape
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[0] not in (1, len(BANDS)):
        raise BadImageError(
            f"{path}: HDU {index} holds data of shape {original_shape}; expected a 2-D image (H x W) "
            f"or a {len(BANDS)}-band cube ({len(BANDS)} x H x W, planes {', '.join(BANDS)})"
        )
    if data.shape[1] * data.shape[2] > MAX_IMAGE_PIXELS:
        raise BadImageError(f"{path}: image is {data.shape[2]}x{data.shape[1]} pixels, larger than the {MAX_IMAGE_PIXELS} allowed")
    return data


def fill_non_finite(planes: np.ndarray, path: Path) -> int:
    """Replace NaN/inf in place by the median of the finite pixels of the same plane; return how many."""
    replaced = 0
    for plane in planes:
        bad = ~np.isfinite(plane)
        count = int(bad.sum())
        if count == plane.size:
            raise BadImageError(f"{path}: no finite pixel in a band (all NaN or inf)")
        if count:
            plane[bad] = np.median(plane[~bad])
            replaced += count
    return replaced


def sky_level(plane: np.ndarray) -> float:
    return float(sigma_clipped_stats(plane, sigma=SKY_SIGMA, maxiters=SKY_ITERATIONS)[1])


def positive_scale(values: np.ndarray, path: Path) -> float:
    """The upper percentile of sky-subtracted values (their maximum if that is not positive)."""
    scale = float(np.percentile(values, UPPER_PERCENTILE))
    if scale <= 0:
        scale = float(values.max())
    if scale <= 0:
        raise BadImageError(f"{path}: no pixel lies above the sky level (a constant or empty image?)")
    return scale


def stretch_single_band(plane: np.ndarray, path: Path) -> np.ndarray:
    """One band -> uint8 H x W x 1 with the asinh stretch of STRETCH_PARAMETERS['single_band']."""
    sky = sky_level(plane)
    upper = sky + positive_scale(plane - sky, path)
    unit = ManualInterval(vmin=sky, vmax=upper)(plane, clip=True)
    stretched = AsinhStretch(a=ASINH_A)(unit, clip=True)
    return np.round(stretched * 255.0).astype(np.uint8)[..., None]


def lupton_colour(planes: np.ndarray, path: Path) -> np.ndarray:
    """g, r, i planes -> uint8 H x W x 3 (i -> red, r -> green, g -> blue) with make_lupton_rgb."""
    subtracted = np.stack([plane - sky_level(plane) for plane in planes])
    subtracted /= positive_scale(subtracted.mean(axis=0), path)
    g, r, i = subtracted
    return make_lupton_rgb(i, r, g, stretch=LUPTON_STRETCH, Q=LUPTON_Q)


def read_fits_picture(paths: Sequence[Path]) -> tuple[np.ndarray, int]:
    """One FITS file (single band or g, r, i cube), or the g, r, i files of one object, as uint8 H x W x C.

    Returns (picture, number of non-finite pixels replaced).
    """
    replaced = 0
    per_file = []
    for path in paths:
        planes = read_fits_planes(path)
        replaced += fill_non_finite(planes, path)
        per_file.append(planes)
    if len(paths) == 1:
        planes = per_file[0]
    else:
        for band, path, planes in zip(BANDS, paths, per_file):
            if planes.shape[0] != 1:
                raise BadImageError(f"{path}: the {band}-band file of a group must hold one 2-D image, not {planes.shape[0]} planes")
        sizes = [f"{band} {planes.shape[2]}x{planes.shape[1]}" for band, planes in zip(BANDS, per_file)]
        if len({planes.shape for planes in per_file}) > 1:
            raise BadImageError(f"{paths[0]}: the band files of this group differ in size ({', '.join(sizes)})")
        planes = np.concatenate(per_file)
    where = paths[0]
    picture = stretch_single_band(planes[0], where) if planes.shape[0] == 1 else lupton_colour(planes, where)
    return picture, replaced
