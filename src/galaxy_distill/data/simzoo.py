"""SimZoo: simulated SDSS-like galaxy images in the nine GZ2 classes, with their ground truth.

Every image is drawn with GalSim from physically motivated components in the SDSS g, r and
i bands at the SDSS pixel scale, then made into a colour cutout the way SDSS colour images
are made (Lupton et al. 2004 asinh stretch; i -> red, r -> green, g -> blue):

- spheroids and bulges: Sersic profiles truncated at 8 half-light radii (as SDSS model fits
  are), red; a bulge is an oblate spheroid seen at the disk's inclination;
- disks: exponential with a sech^2 vertical profile at a random inclination
  (galsim.InclinedExponential), bluer than bulges;
- bars: elongated low-index (n 0.3-0.8: flat, sharp-ended) Sersic components in the disk plane;
- spiral arms: a logarithmic-spiral modulation of the disk light (arm number, pitch angle,
  share of the disk light, arm width) drawn in the disk plane and projected like the disk;
  with a bar, the arms start at the bar ends;
- star-forming knots: galsim.RandomKnots sampled from the arm light (or from the disk), bluest;
- colours are observed-frame g-r and r-i at the redshifts of Galaxy Zoo galaxies (z ~ 0.05-0.1):
  g-r ~ 0.85 for spheroids and bulges, ~0.5 for star-forming disks, ~0.3 for arms, ~0 for knots;
- observation: Kolmogorov PSF (r-band seeing 1.2-1.6 arcsec, scaling as wavelength^-0.2 across
  bands, slightly elliptical), sky background with Poisson noise, foreground stars and faint
  neighbour galaxies, a random position angle and small centring offsets.

A share of the barred and spiral galaxies get weak bars or low-contrast arms, and disks are
seen up to 65 degrees inclined, so the class-defining features are subtle in part of the
sample, as in real data.

Each image has its own seed, derived from (dataset seed, class, index), so a dataset is the
same whatever the number of worker processes, and `render_stamp(row)` redraws an image from its
table row alone: the row holds every generative parameter, including the noise seed.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import galsim
import numpy as np
import pandas as pd
from astropy.visualization import make_lupton_rgb

from galaxy_distill.data.base import GZ2_CLASSES, SourceImages
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.images import crop_and_resize, default_workers
from galaxy_distill.progress import progress
from galaxy_distill.data.registry import with_defaults

GENERATOR_VERSION = "1.0"
PIXEL_SCALE = 0.396
"""SDSS imaging camera, arcsec per pixel."""
STAMP_PIXELS = 96
"""Side of the rendered stamp in native pixels (38 arcsec), before crop_and_resize."""
BANDS = ("g", "r", "i")
EFFECTIVE_WAVELENGTH_NM = {"g": 477.0, "r": 623.0, "i": 763.0}
ELECTRONS_PER_NANOMAGGY = {"g": 1180.0, "r": 1000.0, "i": 740.0}
"""A 53.9 s SDSS exposure with typical photometric zero points and CCD gains."""
SKY_MINUS_R = {"g": 0.8, "r": 0.0, "i": -0.7}
"""Dark-sky surface brightness of each band relative to r, in mag/arcsec^2."""
SERSIC_TRUNCATION = 8.0
SERSIC_INDEX_STEP = 0.1
"""GalSim tabulates each Sersic index once per process; keeping indices on a grid keeps that cache hot."""
COLOUR_COMPOSITE = {"scale_g": 1.9, "scale_r": 1.0, "scale_i": 0.85, "stretch": 0.4, "Q": 8.0}
"""Band weights balance a red elliptical to yellow-orange and a star-forming disk to blue-white, as in SDSS images."""
GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=3e-3)
"""Looser than GalSim's defaults: the changes stay far below the sky noise (0.2 grey levels on average) and drawing is ~10% faster."""

Range = tuple[float, float]


@dataclass(frozen=True)
class ClassRecipe:
    """Parameter ranges (low, high) of one class, drawn uniformly unless stated.

    `radius`: half-light radius in arcsec of the dominant component (the spheroid of smooth
    classes, the disk otherwise) of an r = 16 galaxy, drawn log-uniformly.
    `spheroid_axis_ratio` is set for the smooth classes (pure spheroids, apparent axis ratio);
    `inclination_deg` for the disk classes (isotropic orientations within the range).
    """

    radius: Range
    bulge_fraction: Range
    bulge_sersic_n: Range
    bulge_g_r: Range
    spheroid_axis_ratio: Range | None = None
    inclination_deg: Range | None = None
    bulge_radius_ratio: Range = (0.15, 0.35)
    bulge_flattening: Range = (0.55, 0.85)
    disk_thickness: Range = (0.1, 0.2)
    disk_g_r: Range = (0.4, 0.6)
    barred: bool = False
    spiral: bool = False
    knot_count: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class SharedRecipe:
    """Ranges shared by all classes: photometry, observing conditions, field, bar and arm shapes."""

    r_mag: Range = (14.5, 17.0)
    radius_per_magnitude_dex: float = -0.08
    seeing_fwhm_arcsec: Range = (1.2, 1.6)
    psf_shear_sigma: float = 0.02
    sky_r_mag_arcsec2: Range = (20.6, 21.3)
    centring_offset_sigma_arcsec: float = 0.4
    stars_per_stamp: float = 0.8
    star_r_mag: Range = (15.5, 22.0)
    star_g_r: Range = (0.3, 1.4)
    star_min_distance_arcsec: float = 5.0
    neighbours_per_stamp: float = 1.5
    neighbour_r_mag: Range = (18.5, 22.5)
    neighbour_radius_arcsec: Range = (0.4, 1.8)
    neighbour_g_r: Range = (0.3, 1.1)
    neighbour_min_distance_arcsec: float = 7.0
    weak_feature_probability: float = 0.3
    bar_fraction: Range = (0.15, 0.3)
    weak_bar_fraction: Range = (0.06, 0.12)
    bar_sersic_n: Range = (0.3, 0.8)
    bar_length_ratio: Range = (0.7, 1.3)
    bar_axis_ratio: Range = (0.18, 0.35)
    bar_g_r: Range = (0.7, 0.85)
    arm_fraction: Range = (0.25, 0.6)
    weak_arm_fraction: Range = (0.08, 0.25)
    arm_numbers: tuple[int, ...] = (2, 3, 4)
    arm_number_weights: tuple[float, ...] = (0.6, 0.25, 0.15)
    pitch_angle_deg: Range = (10.0, 30.0)
    arm_width_power: Range = (2.0, 6.0)
    arm_inner_radius_ratio: Range = (0.3, 0.8)
    arm_g_r: Range = (0.2, 0.4)
    knot_fraction: Range = (0.03, 0.1)
    knot_g_r: Range = (-0.1, 0.2)


DISK_INCLINATION: Range = (0.0, 65.0)
EDGE_ON_INCLINATION: Range = (80.0, 90.0)
SPIRAL_KNOTS = (10, 40)

CLASS_RECIPES: dict[str, ClassRecipe] = {
    "smooth-round": ClassRecipe(radius=(2.0, 5.0), bulge_fraction=(1.0, 1.0), bulge_sersic_n=(3.0, 5.5),
                                bulge_g_r=(0.8, 0.95), spheroid_axis_ratio=(0.8, 1.0)),
    "smooth-in-between": ClassRecipe(radius=(2.0, 5.0), bulge_fraction=(1.0, 1.0), bulge_sersic_n=(2.5, 5.0),
                                     bulge_g_r=(0.78, 0.93), spheroid_axis_ratio=(0.5, 0.8)),
    "smooth-cigar": ClassRecipe(radius=(2.5, 5.5), bulge_fraction=(1.0, 1.0), bulge_sersic_n=(1.5, 4.0),
                                bulge_g_r=(0.75, 0.9), spheroid_axis_ratio=(0.22, 0.5)),
    "edge-on-bulge": ClassRecipe(radius=(4.0, 8.0), bulge_fraction=(0.25, 0.6), bulge_sersic_n=(2.0, 4.0),
                                 bulge_g_r=(0.78, 0.93), inclination_deg=EDGE_ON_INCLINATION,
                                 bulge_radius_ratio=(0.25, 0.5), bulge_flattening=(0.65, 0.9),
                                 disk_thickness=(0.08, 0.15), disk_g_r=(0.6, 0.8)),
    "edge-on-no-bulge": ClassRecipe(radius=(4.0, 8.0), bulge_fraction=(0.0, 0.04), bulge_sersic_n=(1.5, 3.0),
                                    bulge_g_r=(0.7, 0.85), inclination_deg=(83.0, 90.0), disk_thickness=(0.06, 0.12),
                                    disk_g_r=(0.35, 0.55), knot_count=(5, 25)),
    "barred-spiral": ClassRecipe(radius=(3.5, 7.5), bulge_fraction=(0.05, 0.3), bulge_sersic_n=(1.5, 4.0),
                                 bulge_g_r=(0.75, 0.9), inclination_deg=DISK_INCLINATION, barred=True, spiral=True,
                                 knot_count=SPIRAL_KNOTS),
    "barred-no-spiral": ClassRecipe(radius=(3.0, 6.5), bulge_fraction=(0.1, 0.35), bulge_sersic_n=(2.0, 4.0),
                                    bulge_g_r=(0.78, 0.93), inclination_deg=DISK_INCLINATION, disk_g_r=(0.65, 0.8),
                                    barred=True),
    "unbarred-spiral": ClassRecipe(radius=(3.5, 7.5), bulge_fraction=(0.03, 0.3), bulge_sersic_n=(1.5, 4.0),
                                   bulge_g_r=(0.75, 0.9), inclination_deg=DISK_INCLINATION, spiral=True,
                                   knot_count=SPIRAL_KNOTS),
    "unbarred-no-spiral": ClassRecipe(radius=(3.0, 6.5), bulge_fraction=(0.15, 0.5), bulge_sersic_n=(2.0, 4.0),
                                      bulge_g_r=(0.78, 0.93), inclination_deg=DISK_INCLINATION, disk_g_r=(0.65, 0.8)),
}
SHARED = SharedRecipe()


def image_seed(seed: int, class_index: int, index: int) -> int:
    """The seed of one image: it depends on nothing but (dataset seed, class, index)."""
    return int(np.random.SeedSequence([seed, class_index, index]).generate_state(1)[0])


def _r_minus_i(g_r: float, rng: np.random.Generator) -> float:
    """r-i follows g-r along the galaxy colour sequence (r-i ~ 0.45 (g-r) + 0.05), with a little scatter."""
    return round(0.45 * g_r + 0.05 + rng.normal(0.0, 0.02), 4)


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(*bounds))


def _sersic_index(rng: np.random.Generator, bounds: Range) -> float:
    return round(round(_uniform(rng, bounds) / SERSIC_INDEX_STEP) * SERSIC_INDEX_STEP, 2)


def _field_position(rng: np.random.Generator, min_distance: float) -> tuple[float, float]:
    """A uniform position in the stamp at least `min_distance` arcsec from its centre."""
    half = 0.5 * STAMP_PIXELS * PIXEL_SCALE
    while True:
        x, y = rng.uniform(-half, half, size=2)
        if math.hypot(x, y) >= min_distance:
            return round(float(x), 3), round(float(y), 3)


def sample_parameters(seed: int, class_index: int, index: int) -> dict[str, Any]:
    """Every generative parameter of one image, as one flat table row.

    Angles in degrees, sizes in arcsec, magnitudes AB; fractions are shares of the r-band light.
    Components a class lacks have fraction 0 (or count 0) and NaN shape parameters.
    """
    class_name = GZ2_CLASSES[class_index]
    recipe = CLASS_RECIPES[class_name]
    own_seed = image_seed(seed, class_index, index)
    rng = np.random.default_rng(own_seed)
    nan = float("nan")
    row: dict[str, Any] = {"class_name": class_name, "class_index": class_index, "index": index, "seed": seed,
                           "image_seed": own_seed, "knot_seed": int(rng.integers(1, 2**31)),
                           "noise_seed": int(rng.integers(1, 2**31))}

    r_mag = _uniform(rng, SHARED.r_mag)
    radius = math.exp(_uniform(rng, tuple(math.log(b) for b in recipe.radius)))
    radius *= 10 ** (SHARED.radius_per_magnitude_dex * (r_mag - 16.0))
    row.update(r_mag=r_mag, position_angle_deg=_uniform(rng, (0.0, 180.0)),
               offset_x_arcsec=float(np.clip(rng.normal(0, SHARED.centring_offset_sigma_arcsec), -1.5, 1.5)),
               offset_y_arcsec=float(np.clip(rng.normal(0, SHARED.centring_offset_sigma_arcsec), -1.5, 1.5)),
               seeing_fwhm_arcsec=_uniform(rng, SHARED.seeing_fwhm_arcsec),
               psf_g1=float(rng.normal(0, SHARED.psf_shear_sigma)), psf_g2=float(rng.normal(0, SHARED.psf_shear_sigma)),
               sky_r_mag_arcsec2=_uniform(rng, SHARED.sky_r_mag_arcsec2))

    row.update(_bulge_and_disk(rng, recipe, radius))
    bar = _bar(rng, recipe, row["disk_scale_radius_arcsec"])
    row.update(bar)
    row.update(_arms(rng, recipe, row["disk_scale_radius_arcsec"], bar))

    knot_count = int(rng.integers(recipe.knot_count[0], recipe.knot_count[1] + 1))
    knot_g_r = _uniform(rng, SHARED.knot_g_r)
    row.update(knot_count=knot_count, knot_fraction=_uniform(rng, SHARED.knot_fraction) if knot_count else 0.0,
               knot_g_r=knot_g_r if knot_count else nan, knot_r_i=_r_minus_i(knot_g_r, rng) if knot_count else nan)
    row.update(arm_contrast=_arm_contrast(row))

    row.update(_field(rng))
    row.update(_total_magnitudes(row))
    return row


def _bulge_and_disk(rng: np.random.Generator, recipe: ClassRecipe, radius: float) -> dict[str, Any]:
    """The bulge, and the disk of classes with one (NaN for the others), from the galaxy's half-light radius."""
    nan = float("nan")
    row: dict[str, Any] = {}
    bulge_fraction = _uniform(rng, recipe.bulge_fraction)
    bulge_g_r = _uniform(rng, recipe.bulge_g_r)
    row.update(bulge_fraction=bulge_fraction, bulge_sersic_n=_sersic_index(rng, recipe.bulge_sersic_n),
               bulge_g_r=bulge_g_r, bulge_r_i=_r_minus_i(bulge_g_r, rng))

    disk = {key: nan for key in ("disk_half_light_arcsec", "disk_scale_radius_arcsec", "disk_scale_height_arcsec",
                                 "inclination_deg", "disk_g_r", "disk_r_i", "bulge_intrinsic_axis_ratio")}
    if recipe.inclination_deg is None:
        row.update(bulge_half_light_arcsec=radius, bulge_axis_ratio=_uniform(rng, recipe.spheroid_axis_ratio))
    else:
        cos_bounds = tuple(math.cos(math.radians(a)) for a in reversed(recipe.inclination_deg))
        inclination = math.degrees(math.acos(_uniform(rng, cos_bounds)))
        scale_radius = radius / 1.678
        flattening = _uniform(rng, recipe.bulge_flattening)
        cos_i = math.cos(math.radians(inclination))
        disk_g_r = _uniform(rng, recipe.disk_g_r)
        disk.update(disk_half_light_arcsec=radius, disk_scale_radius_arcsec=scale_radius,
                    disk_scale_height_arcsec=scale_radius * _uniform(rng, recipe.disk_thickness),
                    inclination_deg=inclination, disk_g_r=disk_g_r, disk_r_i=_r_minus_i(disk_g_r, rng),
                    bulge_intrinsic_axis_ratio=flattening)
        row.update(bulge_half_light_arcsec=radius * _uniform(rng, recipe.bulge_radius_ratio),
                   bulge_axis_ratio=math.sqrt(cos_i**2 + flattening**2 * (1 - cos_i**2)))
    row.update(disk)
    return row


def _bar(rng: np.random.Generator, recipe: ClassRecipe, disk_scale_radius: float) -> dict[str, Any]:
    nan = float("nan")
    bar = {"bar_fraction": 0.0, "bar_weak": False, "bar_sersic_n": nan, "bar_length_arcsec": nan,
           "bar_axis_ratio": nan, "bar_angle_deg": nan, "bar_g_r": nan, "bar_r_i": nan}
    if recipe.barred:
        weak = bool(rng.random() < SHARED.weak_feature_probability)
        bar_g_r = _uniform(rng, SHARED.bar_g_r)
        bar.update(bar_fraction=_uniform(rng, SHARED.weak_bar_fraction if weak else SHARED.bar_fraction),
                   bar_weak=weak, bar_sersic_n=_sersic_index(rng, SHARED.bar_sersic_n),
                   bar_length_arcsec=disk_scale_radius * _uniform(rng, SHARED.bar_length_ratio),
                   bar_axis_ratio=_uniform(rng, SHARED.bar_axis_ratio), bar_angle_deg=_uniform(rng, (0.0, 180.0)),
                   bar_g_r=bar_g_r, bar_r_i=_r_minus_i(bar_g_r, rng))
    return bar


def _arms(rng: np.random.Generator, recipe: ClassRecipe, disk_scale_radius: float, bar: dict[str, Any]) -> dict[str, Any]:
    nan = float("nan")
    arms = {"arm_fraction": 0.0, "arms_weak": False, "arm_number": 0, "pitch_angle_deg": nan, "arm_width_power": nan,
            "arm_winding": 0, "arm_phase_deg": nan, "arm_inner_radius_arcsec": nan, "arm_g_r": nan, "arm_r_i": nan}
    if recipe.spiral:
        weak = bool(rng.random() < SHARED.weak_feature_probability)
        arm_number = int(rng.choice(SHARED.arm_numbers, p=SHARED.arm_number_weights))
        pitch = _uniform(rng, SHARED.pitch_angle_deg)
        winding = int(rng.choice([-1, 1]))
        scale_radius = disk_scale_radius
        if recipe.barred:
            inner = bar["bar_length_arcsec"]
            # Arms start at the bar ends: put an arm crest on the bar's major axis at the inner radius.
            log_term = winding * math.log(inner / scale_radius) / math.tan(math.radians(pitch))
            phase = math.degrees(arm_number * (math.radians(bar["bar_angle_deg"]) - log_term)) % 360.0
        else:
            inner = scale_radius * _uniform(rng, SHARED.arm_inner_radius_ratio)
            phase = _uniform(rng, (0.0, 360.0))
        arm_g_r = _uniform(rng, SHARED.arm_g_r)
        arms.update(arm_fraction=_uniform(rng, SHARED.weak_arm_fraction if weak else SHARED.arm_fraction),
                    arms_weak=weak, arm_number=arm_number, pitch_angle_deg=pitch,
                    arm_width_power=_uniform(rng, SHARED.arm_width_power), arm_winding=winding, arm_phase_deg=phase,
                    arm_inner_radius_arcsec=inner, arm_g_r=arm_g_r, arm_r_i=_r_minus_i(arm_g_r, rng))
    return arms


def _field(rng: np.random.Generator) -> dict[str, Any]:
    """Foreground stars and neighbouring galaxies in the stamp."""
    stars = []
    for _ in range(rng.poisson(SHARED.stars_per_stamp)):
        x, y = _field_position(rng, SHARED.star_min_distance_arcsec)
        g_r = round(_uniform(rng, SHARED.star_g_r), 3)
        stars.append([x, y, round(_uniform(rng, SHARED.star_r_mag), 3), g_r, round(0.4 * g_r - 0.05, 3)])
    neighbours = []
    for _ in range(rng.poisson(SHARED.neighbours_per_stamp)):
        x, y = _field_position(rng, SHARED.neighbour_min_distance_arcsec)
        g_r = round(_uniform(rng, SHARED.neighbour_g_r), 3)
        neighbours.append([x, y, round(_uniform(rng, SHARED.neighbour_r_mag), 3), g_r, _r_minus_i(g_r, rng),
                           float(rng.choice([1.0, 4.0])), round(_uniform(rng, SHARED.neighbour_radius_arcsec), 3),
                           round(_uniform(rng, (0.3, 1.0)), 3), round(_uniform(rng, (0.0, 180.0)), 2)])
    return {"star_count": len(stars), "neighbour_count": len(neighbours), "stars_json": json.dumps(stars),
            "neighbours_json": json.dumps(neighbours)}


def _arm_contrast(p: Mapping[str, Any]) -> float:
    """Surface brightness of the disk on an arm crest over that between arms at the same radius (1: no arms).

    The pattern ((1 + cos)/2)^w averages Gamma(w + 1/2) / (sqrt(pi) Gamma(w + 1)) around a ring, so the
    arm light, a share f of the disk's, peaks at f / that mean above the smooth part's (1 - f - knots).
    """
    if p["arm_fraction"] == 0:
        return 1.0
    power = p["arm_width_power"]
    ring_mean = math.gamma(power + 0.5) / (math.sqrt(math.pi) * math.gamma(power + 1.0))
    return 1.0 + p["arm_fraction"] / ((1.0 - p["arm_fraction"] - p["knot_fraction"]) * ring_mean)


STAR_FIELDS = ("x_arcsec", "y_arcsec", "r_mag", "g_r", "r_i")
NEIGHBOUR_FIELDS = ("x_arcsec", "y_arcsec", "r_mag", "g_r", "r_i", "sersic_n", "half_light_arcsec", "axis_ratio",
                    "position_angle_deg")


def _band_flux(r_flux: float, g_r: float, r_i: float) -> dict[str, float]:
    """Fluxes in the three bands of a source with r-band flux `r_flux` and the given AB colours."""
    return {"g": r_flux * 10 ** (-0.4 * g_r), "r": r_flux, "i": r_flux * 10 ** (0.4 * r_i)}


def _sersic(n: float, half_light_radius: float) -> galsim.GSObject:
    """Profiles with n > 1 are truncated, which keeps the high-n wings (and FFTs) bounded; lower n need no cut."""
    trunc = SERSIC_TRUNCATION * half_light_radius if n > 1 else 0.0
    return galsim.Sersic(n=n, half_light_radius=half_light_radius, trunc=trunc, gsparams=GSPARAMS)


def _spiral_arms(p: Mapping[str, Any]) -> galsim.GSObject:
    """Unit-flux disk light under a logarithmic-spiral pattern, face-on in the disk plane.

    Surface brightness exp(-r/h) * ((1 + cos(m (theta - w ln(r/h) / tan(pitch)) - phase)) / 2)^p,
    faded inside the inner radius where the bulge or bar dominates.
    """
    scale_radius = p["disk_scale_radius_arcsec"]
    half = math.ceil(min(5.0 * scale_radius, STAMP_PIXELS * PIXEL_SCALE) / PIXEL_SCALE)
    axis = np.arange(-half, half + 1) * PIXEL_SCALE
    x, y = np.meshgrid(axis, axis)
    radius = np.hypot(x, y) + 1e-3 * PIXEL_SCALE
    winding = p["arm_winding"] * np.log(radius / scale_radius) / math.tan(math.radians(p["pitch_angle_deg"]))
    phase = p["arm_number"] * (np.arctan2(y, x) - winding) - math.radians(p["arm_phase_deg"])
    pattern = ((1.0 + np.cos(phase)) / 2.0) ** p["arm_width_power"]
    taper = 1.0 - np.exp(-((radius / p["arm_inner_radius_arcsec"]) ** 2))
    light = np.exp(-radius / scale_radius) * pattern * taper
    return galsim.InterpolatedImage(galsim.Image(light / light.sum(), scale=PIXEL_SCALE), flux=1.0, gsparams=GSPARAMS)


def light_shares(p: Mapping[str, Any]) -> dict[str, tuple[float, float, float]]:
    """(share of the r-band light, g-r, r-i) of every component the galaxy of row `p` has."""
    shares = {}
    if p["bulge_fraction"] > 0:
        shares["bulge"] = (p["bulge_fraction"], p["bulge_g_r"], p["bulge_r_i"])
    if not math.isnan(p["inclination_deg"]):
        disk_light = 1.0 - p["bulge_fraction"] - p["bar_fraction"]
        shares["disk"] = (disk_light * (1.0 - p["arm_fraction"] - p["knot_fraction"]), p["disk_g_r"], p["disk_r_i"])
        if p["bar_fraction"] > 0:
            shares["bar"] = (p["bar_fraction"], p["bar_g_r"], p["bar_r_i"])
        if p["arm_fraction"] > 0:
            shares["arms"] = (disk_light * p["arm_fraction"], p["arm_g_r"], p["arm_r_i"])
        if p["knot_count"] > 0:
            shares["knots"] = (disk_light * p["knot_fraction"], p["knot_g_r"], p["knot_r_i"])
    return shares


def _total_magnitudes(p: Mapping[str, Any]) -> dict[str, float]:
    """g and i magnitudes of the whole galaxy, from its r magnitude and its components' shares and colours."""
    flux = {"g": 0.0, "i": 0.0}
    for share, g_r, r_i in light_shares(p).values():
        component = _band_flux(share, g_r, r_i)
        for band in flux:
            flux[band] += component[band]
    return {"g_mag": p["r_mag"] - 2.5 * math.log10(flux["g"]), "i_mag": p["r_mag"] - 2.5 * math.log10(flux["i"])}


def _galaxy_components(p: Mapping[str, Any]) -> list[tuple[galsim.GSObject, dict[str, float]]]:
    """(unit-flux profile as seen on the sky, its flux per band in nanomaggies) for every component."""
    shares = light_shares(p)
    rotation = galsim.Angle(p["position_angle_deg"], galsim.degrees)
    profiles: dict[str, galsim.GSObject] = {}
    if "bulge" in shares:
        bulge = _sersic(p["bulge_sersic_n"], p["bulge_half_light_arcsec"]).shear(
            q=p["bulge_axis_ratio"], beta=0.0 * galsim.degrees)
        profiles["bulge"] = bulge.rotate(rotation)
    if "disk" in shares:
        inclination = math.radians(p["inclination_deg"])
        cos_pa, sin_pa = math.cos(rotation.rad), math.sin(rotation.rad)
        # Disk plane -> sky: squash along the apparent minor axis by cos(i), then turn to the position angle.
        to_sky = (cos_pa, -sin_pa * math.cos(inclination), sin_pa, cos_pa * math.cos(inclination))
        disk = galsim.InclinedExponential(galsim.Angle(inclination, galsim.radians),
                                          scale_radius=p["disk_scale_radius_arcsec"],
                                          scale_height=p["disk_scale_height_arcsec"], gsparams=GSPARAMS)
        profiles["disk"] = disk.rotate(rotation)
        if "bar" in shares:
            axis_ratio = p["bar_axis_ratio"]
            bar = _sersic(p["bar_sersic_n"], p["bar_length_arcsec"] * math.sqrt(axis_ratio)).shear(
                q=axis_ratio, beta=p["bar_angle_deg"] * galsim.degrees)
            profiles["bar"] = bar.transform(*to_sky)
        knot_source: galsim.GSObject = galsim.Exponential(scale_radius=p["disk_scale_radius_arcsec"], gsparams=GSPARAMS)
        if "arms" in shares:
            knot_source = _spiral_arms(p)
            profiles["arms"] = knot_source.transform(*to_sky)
        if "knots" in shares:
            knots = galsim.RandomKnots(p["knot_count"], profile=knot_source, rng=galsim.BaseDeviate(p["knot_seed"]),
                                       gsparams=GSPARAMS)
            profiles["knots"] = knots.transform(*to_sky)
    total = 10 ** (-0.4 * (p["r_mag"] - 22.5))
    offset = (p["offset_x_arcsec"], p["offset_y_arcsec"])
    return [(profiles[name].shift(*offset), _band_flux(total * share, g_r, r_i))
            for name, (share, g_r, r_i) in shares.items()]


@dataclass(frozen=True)
class _FieldSource:
    profile: galsim.GSObject
    flux: dict[str, float]
    x_arcsec: float
    y_arcsec: float
    extent_arcsec: float


def _field_sources(p: Mapping[str, Any]) -> list[_FieldSource]:
    """Foreground stars (points before the PSF) and faint neighbour galaxies, each with the box it needs."""
    sources = []
    for values in json.loads(p["stars_json"]):
        star = dict(zip(STAR_FIELDS, values))
        flux = _band_flux(10 ** (-0.4 * (star["r_mag"] - 22.5)), star["g_r"], star["r_i"])
        sources.append(_FieldSource(galsim.DeltaFunction(gsparams=GSPARAMS), flux, star["x_arcsec"], star["y_arcsec"], 13.0))
    for values in json.loads(p["neighbours_json"]):
        galaxy = dict(zip(NEIGHBOUR_FIELDS, values))
        profile = _sersic(galaxy["sersic_n"], galaxy["half_light_arcsec"]).shear(
            q=galaxy["axis_ratio"], beta=galaxy["position_angle_deg"] * galsim.degrees)
        flux = _band_flux(10 ** (-0.4 * (galaxy["r_mag"] - 22.5)), galaxy["g_r"], galaxy["r_i"])
        sources.append(_FieldSource(profile, flux, galaxy["x_arcsec"], galaxy["y_arcsec"],
                                    10.0 * galaxy["half_light_arcsec"] + 6.0))
    return sources


def _add_field_source(image: galsim.Image, source: _FieldSource, psf: galsim.GSObject, flux: float) -> None:
    """Draw into the source's own box: shifting it in the full stamp would multiply every FFT of the scene."""
    centre = image.true_center + galsim.PositionD(source.x_arcsec / PIXEL_SCALE, source.y_arcsec / PIXEL_SCALE)
    half = math.ceil(0.5 * source.extent_arcsec / PIXEL_SCALE)
    box = galsim.BoundsI(int(centre.x) - half, int(centre.x) + half, int(centre.y) - half, int(centre.y) + half)
    box = box & image.bounds
    if box.isDefined():
        galsim.Convolve(source.profile.withFlux(flux), psf).drawImage(image=image[box], add_to_image=True, center=centre)


def render_bands(p: Mapping[str, Any]) -> np.ndarray:
    """Sky-subtracted g, r, i images in nanomaggies per pixel, (3, STAMP_PIXELS, STAMP_PIXELS) float32, with noise."""
    galaxy = _galaxy_components(p)
    field = _field_sources(p)
    noise = galsim.BaseDeviate(p["noise_seed"])
    bands = np.empty((len(BANDS), STAMP_PIXELS, STAMP_PIXELS), dtype=np.float32)
    for b, band in enumerate(BANDS):
        electrons = ELECTRONS_PER_NANOMAGGY[band]
        fwhm = p["seeing_fwhm_arcsec"] * (EFFECTIVE_WAVELENGTH_NM[band] / EFFECTIVE_WAVELENGTH_NM["r"]) ** -0.2
        psf = galsim.Kolmogorov(fwhm=fwhm, gsparams=GSPARAMS).shear(g1=p["psf_g1"], g2=p["psf_g2"])
        scene = galsim.Sum([profile.withFlux(flux[band] * electrons) for profile, flux in galaxy])
        image = galsim.Convolve(scene, psf).drawImage(nx=STAMP_PIXELS, ny=STAMP_PIXELS, scale=PIXEL_SCALE)
        for source in field:
            _add_field_source(image, source, psf, source.flux[band] * electrons)
        sky_nanomaggies = 10 ** (-0.4 * (p["sky_r_mag_arcsec2"] + SKY_MINUS_R[band] - 22.5)) * PIXEL_SCALE**2
        image.addNoise(galsim.PoissonNoise(noise, sky_level=sky_nanomaggies * electrons))
        bands[b] = image.array / electrons
    return bands


def colour_composite(bands: np.ndarray) -> np.ndarray:
    """g, r, i nanomaggy images -> uint8 HxWx3 RGB with the Lupton et al. (2004) asinh stretch, as SDSS does."""
    c = COLOUR_COMPOSITE
    return make_lupton_rgb(bands[2] * c["scale_i"], bands[1] * c["scale_r"], bands[0] * c["scale_g"],
                           minimum=0.0, stretch=c["stretch"], Q=c["Q"])


def render_stamp(p: Mapping[str, Any]) -> np.ndarray:
    """The native-resolution colour stamp (STAMP_PIXELS square, uint8 RGB) of one table row."""
    return colour_composite(render_bands(p))


def _simulate(task: tuple[int, int, int, int, float]) -> tuple[np.ndarray, dict[str, Any]]:
    seed, class_index, index, size, crop_fraction = task
    row = sample_parameters(seed, class_index, index)
    return crop_and_resize(render_stamp(row), crop_fraction, size, f"simzoo {GZ2_CLASSES[class_index]} #{index}"), row


def build(settings: PrepareSettings) -> SourceImages:
    """Simulate settings.per_class galaxies of every GZ2 class in settings.workers processes (default: the cores).

    The processes are spawned, so a script calling this with more than one worker needs the usual
    `if __name__ == "__main__":` guard (the CLI, pytest and notebooks need nothing).
    """
    settings = with_defaults(settings)
    tasks = [(settings.seed, k, i, settings.size, settings.crop_fraction)
             for k in range(len(GZ2_CLASSES)) for i in range(settings.per_class)]
    workers = min(settings.workers or default_workers(), len(tasks))
    shown = {"total": len(tasks), "desc": "simulating simzoo", "unit": "img", "leave": False}
    if workers == 1:
        results = [_simulate(task) for task in progress(tasks, **shown)]
    else:
        # Spawned, not forked: the parent may hold OpenMP (torch, GalSim) thread pools that a fork would break.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            chunk = max(1, len(tasks) // (workers * 16))
            results = list(progress(pool.map(_simulate, tasks, chunksize=chunk), **shown))
    table = pd.DataFrame([row for _, row in results])
    return SourceImages(
        images=np.stack([image for image, _ in results]),
        labels=table["class_index"].to_numpy(np.int64),
        class_names=list(GZ2_CLASSES),
        provenance={
            "generator": "simzoo",
            "generator_version": GENERATOR_VERSION,
            "galsim_version": galsim.__version__,
            "seed": settings.seed,
            "per_class": settings.per_class,
            "stamp_pixels": STAMP_PIXELS,
            "pixel_scale_arcsec": PIXEL_SCALE,
            "bands": list(BANDS),
            "electrons_per_nanomaggy": ELECTRONS_PER_NANOMAGGY,
            "colour_composite": COLOUR_COMPOSITE,
            "shared_ranges": asdict(SHARED),
            "class_ranges": {name: asdict(recipe) for name, recipe in CLASS_RECIPES.items()},
            "table_json_columns": {"stars_json": list(STAR_FIELDS), "neighbours_json": list(NEIGHBOUR_FIELDS)},
        },
        table=table,
    )
