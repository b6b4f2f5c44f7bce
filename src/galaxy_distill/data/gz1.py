"""Real SDSS galaxies with Galaxy Zoo 1 classes (the layout of shared/data/gz1_sdss).

Layout: ROOT/labels.csv with columns OBJID,CLASS and ROOT/images/<OBJID>.jpeg.
GZ1 classes: 0 elliptical, 1 clockwise spiral, 2 anticlockwise spiral, 3 edge-on disk,
4 don't know, 5 merger. Spin direction is not a morphology, so 1 and 2 become one
"spiral" class; "don't know" is dropped; mergers are optional.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_distill.data.base import SourceImages, choose_per_class, load_with_replacements
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.images import crop_and_resize, load_cutouts, read_rgb
from galaxy_distill.data.locations import default_root, require_dir, require_file
from galaxy_distill.errors import GalaxyDistillError

LAYOUT = "labels.csv (columns OBJID,CLASS) and images/<OBJID>.jpeg"
GZ1_TO_CLASS = {0: "elliptical", 1: "spiral", 2: "spiral", 3: "edge-on", 5: "merger"}


def read_labels(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"OBJID": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise GalaxyDistillError(f"{path}: not a readable CSV table ({exc})") from None
    missing = [column for column in ("OBJID", "CLASS") if column not in table.columns]
    if missing:
        raise GalaxyDistillError(f"{path}: missing column(s) {', '.join(missing)}; expected OBJID,CLASS")
    classes = pd.to_numeric(table["CLASS"], errors="coerce")
    bad = table.index[classes.isna() | ~classes.isin(range(6))]
    if len(bad):
        rows = ", ".join(str(i + 2) for i in bad[:10])
        raise GalaxyDistillError(f"{path}: CLASS must be an integer 0-5; bad value on line(s) {rows}")
    objids = table["OBJID"].fillna("").str.strip()
    unusable = table.index[(objids == "") | objids.str.contains(r"[/\\]|^\.", regex=True)]
    if len(unusable):
        rows = ", ".join(str(i + 2) for i in unusable[:10])
        raise GalaxyDistillError(f"{path}: OBJID must be a plain name (an SDSS object id); missing or unusable on line(s) {rows}")
    duplicated = table["OBJID"][table["OBJID"].duplicated()]
    if len(duplicated):
        raise GalaxyDistillError(f"{path}: duplicated OBJID(s) {', '.join(duplicated.iloc[:5])}")
    return table.assign(CLASS=classes.astype(int))


def build(settings: PrepareSettings) -> SourceImages:
    root = settings.root or default_root("gz1_sdss", "gz1-sdss", LAYOUT)
    require_dir(root, LAYOUT)
    table = read_labels(require_file(root / "labels.csv", "a CSV with columns OBJID,CLASS"))
    class_names = ["elliptical", "spiral", "edge-on"] + (["merger"] if settings.include_merger else [])
    table = table[table["CLASS"].map(GZ1_TO_CLASS).isin(class_names)].reset_index(drop=True)
    labels = table["CLASS"].map(GZ1_TO_CLASS).map(class_names.index).to_numpy(np.int64)
    chosen = choose_per_class(labels, class_names, settings.per_class, settings.seed, str(root / "labels.csv"))
    paths = [root / "images" / f"{objid}.jpeg" for objid in table["OBJID"]]
    cutouts: dict[int, np.ndarray] = {}
    problems: list[str] = []

    def cutout(path: Path) -> np.ndarray:
        return crop_and_resize(read_rgb(path), settings.crop_fraction, settings.size, path)

    def load(indices: np.ndarray) -> np.ndarray:
        # An unreadable image (with --skip-bad-images) is replaced by another of its class, keeping the classes balanced.
        images, kept, skipped = load_cutouts([paths[i] for i in indices], cutout, settings.skip_bad_images,
                                             settings.workers, "gz1-sdss images", require_some=not cutouts)
        cutouts.update(zip(indices[kept].tolist(), images))
        problems.extend(skipped)
        return indices[kept]

    read = load_with_replacements(labels, chosen, settings.seed, load)
    images = np.stack([cutouts[i] for i in read.tolist()])
    table = table.iloc[read].reset_index(drop=True)
    notes = [f"skipped {len(problems)} unreadable image(s), replaced by others of their class"] + problems[:20] if problems else []
    return SourceImages(
        images=images,
        labels=labels[read],
        class_names=class_names,
        provenance={
            "source": str(root),
            "catalogue": "Galaxy Zoo 1 (Lintott et al. 2008, 2011); images: SDSS DR7",
            "gz1_class_map": {str(k): v for k, v in GZ1_TO_CLASS.items() if v in class_names},
        },
        table=table.rename(columns={"OBJID": "objid", "CLASS": "gz1_class"}),
        notes=notes,
    )
