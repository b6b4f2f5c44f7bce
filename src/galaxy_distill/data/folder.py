"""Your own images: ROOT/<class name>/ holds the images of each class (torchvision ImageFolder layout).

* Classes are the sub-folders of ROOT, sorted by name; their images may sit in nested folders.
  Names starting with "." (hidden files and folders) are skipped.
* Formats: JPEG, PNG, WebP, TIFF (8 bits per channel, via Pillow) and FITS (.fits, .fit, .fts,
  optionally .gz or .fz). A FITS file is one band (greyscale) or a 3 x H x W g, r, i cube (colour);
  the files <stem>_g.fits, <stem>_r.fits and <stem>_i.fits of one folder form one colour image.
  fits.py says how FITS fluxes are stretched; those parameters are stored in the provenance.
  Files of other types are ignored and counted in the notes.
* Channels: a set whose images are all greyscale stays 1-channel. Greyscale and colour images are
  never mixed: copying grey into three channels would hand a network a "no colour" cue that says
  nothing about morphology, so such a set is refused with one file of each kind named.
* --test-root DIR2, laid out the same way with the same class names, is used whole as the test
  split; --per-class balancing applies to ROOT only.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from galaxy_distill.data.base import SourceImages, choose_per_class, load_with_replacements
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.fits import BANDS, STRETCH_PARAMETERS, band_of, is_fits, read_fits_picture
from galaxy_distill.data.images import BadImageError, crop_and_resize, load_cutouts, read_rgb
from galaxy_distill.errors import GalaxyDistillError

LAYOUT = "one sub-folder per class (DIR/<class name>/) holding JPEG, PNG, WebP, TIFF or FITS images"
PILLOW_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
GREY_MODES = {"1", "L", "LA"}
HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MIN_CROPPED_SIDE = 8
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class Picture:
    """One image of the set: one file, or the g, r, i files of one object."""

    files: tuple[Path, ...]
    label: int
    name: Path
    """The file, or DIR/<stem>_{g,r,i}.fits for a band group: used in messages and the table."""

    @property
    def format(self) -> str:
        if len(self.files) > 1:
            return "fits-band-files"
        return "fits" if is_fits(self.files[0]) else PILLOW_FORMATS[self.files[0].suffix.lower()]


@dataclass
class ClassTree:
    """What a class-folder root holds."""

    root: Path
    class_names: list[str]
    pictures: list[Picture]
    ignored: list[Path]

    @property
    def labels(self) -> np.ndarray:
        return np.array([picture.label for picture in self.pictures], dtype=np.int64)


def require_directory(path: Path, option: str) -> Path:
    if not path.exists():
        raise GalaxyDistillError(f"{option} {path}: directory not found; expected {LAYOUT}")
    if not path.is_dir():
        raise GalaxyDistillError(f"{option} {path}: is a file, not a directory; expected {LAYOUT}")
    return path


def visible(name: str) -> bool:
    return not name.startswith(".")


def find_pictures(class_dir: Path, label: int) -> tuple[list[Picture], list[Path]]:
    """The pictures under one class folder (nested folders included) and the files that are not images."""
    pictures: list[Picture] = []
    ignored: list[Path] = []
    band_groups: dict[tuple[Path, str], dict[str, Path]] = defaultdict(dict)
    for directory, subdirs, files in os.walk(class_dir):
        subdirs[:] = sorted(name for name in subdirs if visible(name))
        for file_name in sorted(filter(visible, files)):
            path = Path(directory) / file_name
            band = band_of(path)
            if band is not None:
                stem, band_name = band
                group = band_groups[(path.parent, stem)]
                if band_name in group:
                    raise GalaxyDistillError(f"{path}: a second {band_name}-band file for '{stem}' besides {group[band_name].name}")
                group[band_name] = path
            elif is_fits(path) or path.suffix.lower() in PILLOW_FORMATS:
                pictures.append(Picture((path,), label, path))
            else:
                ignored.append(path)
    for (folder, stem), group in band_groups.items():
        missing = [band for band in BANDS if band not in group]
        if missing:
            present = min(group.values())
            raise GalaxyDistillError(
                f"{present}: band group '{stem}' lacks the {', '.join(missing)} band(s); a colour FITS image needs "
                f"{', '.join(f'{stem}_{band}' for band in BANDS)} in {folder} "
                f"(name a single-band file without a _g/_r/_i suffix)"
            )
        first = group[BANDS[0]]
        name = first.with_name(f"{stem}_{{{','.join(BANDS)}}}{first.name[len(stem) + 2:]}")
        pictures.append(Picture(tuple(group[band] for band in BANDS), label, name))
    return sorted(pictures, key=lambda picture: str(picture.name)), ignored


def scan_tree(root: Path, option: str) -> ClassTree:
    require_directory(root, option)
    class_dirs = sorted((entry for entry in root.iterdir() if visible(entry.name) and entry.is_dir()), key=lambda p: p.name)
    if not class_dirs:
        files = sorted(entry.name for entry in root.iterdir() if visible(entry.name))
        found = f"; found only files such as {files[0]}" if files else " (it is empty)"
        raise GalaxyDistillError(f"{option} {root}: no class folders{found}; expected {LAYOUT}")
    if len(class_dirs) == 1:
        raise GalaxyDistillError(f"{option} {root}: only one class folder ({class_dirs[0].name}); at least two classes are needed")
    pictures: list[Picture] = []
    ignored: list[Path] = []
    for label, class_dir in enumerate(class_dirs):
        found, skipped = find_pictures(class_dir, label)
        if not found:
            raise GalaxyDistillError(f"{class_dir}: class folder holds no JPEG, PNG, WebP, TIFF or FITS image")
        pictures += found
        ignored += skipped
    return ClassTree(root, [entry.name for entry in class_dirs], pictures, ignored)


def read_pillow_picture(path: Path) -> np.ndarray:
    """uint8 H x W x 1 for greyscale files, H x W x 3 otherwise."""
    pixels = read_rgb(path)
    with Image.open(path) as image:
        mode = image.mode
    if mode in HIGH_DEPTH_MODES:
        raise BadImageError(f"{path}: {mode} pixels (more than 8 bits) are not supported; save it with 8 bits or as FITS")
    return pixels[..., :1] if mode in GREY_MODES else pixels


@dataclass
class LoadedPictures:
    images: np.ndarray
    """uint8 N x H x W x 3; greyscale pictures are copied into three channels until all are known."""
    pictures: list[Picture]
    channels: list[int]
    problems: list[str]
    non_finite: dict[Path, int]

    def table(self, root: Path) -> pd.DataFrame:
        return pd.DataFrame({
            "file": [picture.name.relative_to(root).as_posix() for picture in self.pictures],
            "format": [picture.format for picture in self.pictures],
        })


def load_pictures(pictures: list[Picture], settings: PrepareSettings, description: str,
                  require_some: bool = True) -> LoadedPictures:
    by_name = {picture.name: picture for picture in pictures}
    channels: dict[Path, int] = {}
    non_finite: dict[Path, int] = {}

    def cutout(name: Path) -> np.ndarray:
        picture = by_name[name]
        if picture.format.startswith("fits"):
            pixels, non_finite[name] = read_fits_picture(picture.files)
        else:
            pixels = read_pillow_picture(picture.files[0])
        height, width = pixels.shape[:2]
        side = round(min(height, width) * settings.crop_fraction)
        if side < MIN_CROPPED_SIDE:
            raise BadImageError(
                f"{name}: image of {width}x{height} pixels keeps only {side} pixel(s) across after the central crop of "
                f"{settings.crop_fraction:g}; at least {MIN_CROPPED_SIDE} are needed"
            )
        resized = crop_and_resize(pixels, settings.crop_fraction, settings.size, name)
        channels[name] = resized.shape[-1]
        return np.repeat(resized, 3, axis=-1) if resized.shape[-1] == 1 else resized

    images, kept, problems = load_cutouts(
        [picture.name for picture in pictures], cutout, settings.skip_bad_images, settings.workers, description,
        require_some,
    )
    kept_pictures = [pictures[i] for i in kept]
    kept_names = {picture.name for picture in kept_pictures}
    return LoadedPictures(
        images,
        kept_pictures,
        [channels[picture.name] for picture in kept_pictures],
        problems,
        {name: count for name, count in non_finite.items() if count and name in kept_names},
    )


def merged(parts: list[LoadedPictures]) -> LoadedPictures:
    """Pictures loaded in several rounds as one, in the order of their names within each class."""
    kept = [part for part in parts if part.pictures]
    order = sorted(((picture.label, str(picture.name)), p, i) for p, part in enumerate(kept)
                   for i, picture in enumerate(part.pictures))
    return LoadedPictures(
        np.stack([kept[p].images[i] for _, p, i in order]),
        [kept[p].pictures[i] for _, p, i in order],
        [kept[p].channels[i] for _, p, i in order],
        sorted(problem for part in parts for problem in part.problems),
        {name: count for part in parts for name, count in part.non_finite.items()},
    )


def load_balanced(tree: ClassTree, settings: PrepareSettings) -> tuple[LoadedPictures, list[str]]:
    """The same number of readable pictures per class, and notes on what balancing left out.

    An unreadable picture (skipped with --skip-bad-images) is replaced by another of its class, so that it
    takes no place in the balanced set; replacements are drawn in a seeded order.
    """
    class_count = len(tree.class_names)
    chosen = choose_per_class(tree.labels, tree.class_names, settings.per_class, settings.seed, str(tree.root))
    wanted = len(chosen) // class_count
    parts: list[LoadedPictures] = []

    def load(indices: np.ndarray) -> np.ndarray:
        part = load_pictures([tree.pictures[i] for i in indices], settings,
                             "folder replacement images" if parts else "folder images", require_some=not parts)
        parts.append(part)
        read = {id(picture) for picture in part.pictures}
        return np.array([i for i in indices if id(tree.pictures[i]) in read], dtype=np.int64)

    load_with_replacements(np.asarray(tree.labels), chosen, settings.seed, load)
    loaded = merged(parts)
    notes = []
    total = np.bincount(tree.labels, minlength=class_count)
    left_out = total - np.bincount([picture.label for picture in loaded.pictures], minlength=class_count)
    if left_out.sum():
        detail = ", ".join(f"{name} {count}" for name, count in zip(tree.class_names, left_out) if count)
        notes.append(f"balanced to {wanted} images per class: left out {int(left_out.sum())} of {int(total.sum())} ({detail})")
    return loaded, notes


def require_every_class(loaded: LoadedPictures, tree: ClassTree) -> None:
    """After skipping unreadable files, every class must still have an image."""
    counts = np.bincount([picture.label for picture in loaded.pictures], minlength=len(tree.class_names))
    for label in np.flatnonzero(counts == 0):
        raise GalaxyDistillError(f"{tree.root / tree.class_names[label]}: none of its chosen images could be read")


def common_channels(parts: list[LoadedPictures]) -> int:
    """1 if every picture is greyscale, 3 if every one is colour; a mix is refused."""
    first_of: dict[int, Path] = {}
    for part in parts:
        for picture, count in zip(part.pictures, part.channels):
            first_of.setdefault(count, picture.name)
    if len(first_of) > 1:
        raise GalaxyDistillError(
            f"greyscale and colour images are mixed: {first_of[1]} is greyscale but {first_of[3]} is colour; "
            "convert them all to one kind"
        )
    return next(iter(first_of))


def notes_about(tree: ClassTree, loaded: LoadedPictures, prefix: str) -> list[str]:
    notes = []
    if tree.ignored:
        notes.append(f"{prefix}ignored {len(tree.ignored)} file(s) that are not JPEG, PNG, WebP, TIFF or FITS "
                     f"images, e.g. {tree.ignored[0]}")
    if loaded.non_finite:
        worst = max(loaded.non_finite, key=loaded.non_finite.__getitem__)
        notes.append(f"{prefix}replaced {sum(loaded.non_finite.values())} non-finite FITS pixel(s) (NaN or inf) in "
                     f"{len(loaded.non_finite)} image(s) by their band's median; most in {worst} "
                     f"({loaded.non_finite[worst]})")
    if loaded.problems:
        notes.append(f"{prefix}skipped {len(loaded.problems)} unreadable image(s)")
        notes += [prefix + problem for problem in loaded.problems[:SHOWN_PROBLEMS]]
    return notes


def matching_test_tree(test_root: Path, tree: ClassTree) -> ClassTree:
    test_tree = scan_tree(test_root, "--test-root")
    if test_tree.root.resolve() == tree.root.resolve():
        raise GalaxyDistillError(f"--test-root {test_tree.root} is the same folder as --root; test images must be other images")
    if test_tree.class_names != tree.class_names:
        missing = sorted(set(tree.class_names) - set(test_tree.class_names))
        extra = sorted(set(test_tree.class_names) - set(tree.class_names))
        raise GalaxyDistillError(
            f"--test-root {test_tree.root}: class folders differ from --root {tree.root} "
            f"(missing: {', '.join(missing) or 'none'}; not in --root: {', '.join(extra) or 'none'})"
        )
    return test_tree


def build(settings: PrepareSettings) -> SourceImages:
    """Read ROOT/<class>/ (and --test-root) into SourceImages; see the module docstring for the rules."""
    if settings.root is None:
        raise GalaxyDistillError(f"folder: pass --root DIR where DIR holds {LAYOUT}")
    tree = scan_tree(settings.root, "--root")
    test_tree = None if settings.test_root is None else matching_test_tree(settings.test_root, tree)
    train, balance_notes = load_balanced(tree, settings)
    require_every_class(train, tree)
    parts, notes = [train], balance_notes + notes_about(tree, train, "")
    if test_tree is not None:
        test_loaded = load_pictures(test_tree.pictures, settings, "folder test images")
        require_every_class(test_loaded, test_tree)
        parts.append(test_loaded)
        notes += notes_about(test_tree, test_loaded, "test root: ")

    channels = common_channels(parts)
    formats = Counter(picture.format for part in parts for picture in part.pictures)
    provenance: dict[str, Any] = {
        "source": str(tree.root.resolve()),
        "layout": LAYOUT,
        "channels": channels,
        "formats": dict(sorted(formats.items())),
    }
    if test_tree is not None:
        provenance["test_source"] = str(test_tree.root.resolve())
    if any(name.startswith("fits") for name in formats):
        provenance["fits_stretch"] = STRETCH_PARAMETERS

    def source_images(loaded: LoadedPictures, root: Path) -> SourceImages:
        return SourceImages(
            images=loaded.images[..., :channels],
            labels=np.array([picture.label for picture in loaded.pictures], dtype=np.int64),
            class_names=tree.class_names,
            provenance=provenance,
            table=loaded.table(root),
        )

    result = source_images(train, tree.root)
    result.test = None if test_tree is None else source_images(parts[1], test_tree.root)
    result.notes = notes
    return result
