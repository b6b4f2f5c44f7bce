"""The nine Galaxy Zoo 2 classes of Guan et al. 2023, curated from GZ2 vote fractions.

Two sources, chosen by `gz2_source` ("auto" takes whichever layout ROOT holds, hart16 first):

hart16 (Hart et al. 2016; the schema of Willett et al. 2013):
    ROOT/gz2_hart16.csv (or .csv.gz, .fits, .fits.gz; column names matched case-insensitively)
        dr7objid, and for every answer A of the questions below the columns A_debiased,
        A_weighted_fraction, A_fraction (the first of these kinds present for all answers is
        used, in that order) and A_count (vote counts; needed unless min_votes is 0).
        The optional `sample` column picks among several mapping rows of one galaxy.
    ROOT/gz2_filename_mapping.csv with columns objid (= dr7objid), asset_id (and sample)
    ROOT/images_gz2/images/<asset_id>.jpg (or ROOT/images_gz2/<asset_id>.jpg)

kaggle ("Galaxy Zoo - The Galaxy Challenge"):
    ROOT/training_solutions_rev1.csv with GalaxyID and Class1.1-1.3, Class2.1-2.2, Class3.1-3.2,
        Class4.1-4.2, Class7.1-7.3, Class9.1-9.3. These are cumulative: each answer is already
        multiplied by the probability of reaching its question, so the fraction of an answer
        given its question is its value divided by the sum of that question's values.
        The table has no vote counts, so min_votes cannot be applied.
    ROOT/images_training_rev1/<GalaxyID>.jpg

Questions used (hart16 prefix / Kaggle class, answers in order):
    t01_smooth_or_features / Class1: a01_smooth, a02_features_or_disk, a03_star_or_artifact
    t02_edgeon / Class2: a04_yes, a05_no
    t03_bar / Class3: a06_bar, a07_no_bar
    t04_spiral / Class4: a08_spiral, a09_no_spiral
    t07_rounded / Class7: a16_completely_round, a17_in_between, a18_cigar_shaped
    t09_bulge_shape / Class9: a25_rounded, a26_boxy, a27_no_bulge

The confidence of a galaxy for a class is the product of the answer fractions along the
class's path down the decision tree (CLASS_PATHS), e.g. barred-spiral =
p(features) p(not edge-on) p(bar) p(spiral); edge-on-bulge counts a rounded or boxy bulge.
GZ2 asks the bar and spiral questions one after the other, so p(spiral) is the fraction
among everyone who reached that question, whatever they answered about the bar.
A galaxy joins only its best class, and only if every question on that path has at least
min_votes votes (Willett et al. 2013 use 20). Each class keeps its per_class most
confident galaxies; unreadable images (with skip_bad_images) are replaced by the next ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from galaxy_distill.data.base import GZ2_CLASSES, SourceImages
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.images import BadImageError, crop_and_resize, load_cutouts, read_rgb
from galaxy_distill.data.locations import default_root, require_dir, require_file
from galaxy_distill.errors import GalaxyDistillError

HART16_LAYOUT = (
    "gz2_hart16.csv (or .csv.gz, .fits, .fits.gz; Hart et al. 2016), gz2_filename_mapping.csv "
    "(columns objid,sample,asset_id) and images_gz2/images/<asset_id>.jpg"
)
KAGGLE_LAYOUT = "training_solutions_rev1.csv (columns GalaxyID,Class1.1,...,Class11.6) and images_training_rev1/<GalaxyID>.jpg"
HART16_CATALOGUES = ("gz2_hart16.csv", "gz2_hart16.csv.gz", "gz2_hart16.fits", "gz2_hart16.fits.gz")
MAPPING_FILE = "gz2_filename_mapping.csv"
KAGGLE_FILE = "training_solutions_rev1.csv"
FRACTION_KINDS = ("debiased", "weighted_fraction", "fraction")

QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "t01_smooth_or_features": ("Class1", ("a01_smooth", "a02_features_or_disk", "a03_star_or_artifact")),
    "t02_edgeon": ("Class2", ("a04_yes", "a05_no")),
    "t03_bar": ("Class3", ("a06_bar", "a07_no_bar")),
    "t04_spiral": ("Class4", ("a08_spiral", "a09_no_spiral")),
    "t07_rounded": ("Class7", ("a16_completely_round", "a17_in_between", "a18_cigar_shaped")),
    "t09_bulge_shape": ("Class9", ("a25_rounded", "a26_boxy", "a27_no_bulge")),
}
"""hart16 question prefix -> (Kaggle class, answers in the order of both tables)."""

Step = tuple[str, tuple[str, ...]]
SMOOTH: Step = ("t01_smooth_or_features", ("a01_smooth",))
FEATURES: Step = ("t01_smooth_or_features", ("a02_features_or_disk",))
EDGE_ON: Step = ("t02_edgeon", ("a04_yes",))
NOT_EDGE_ON: Step = ("t02_edgeon", ("a05_no",))
BAR: Step = ("t03_bar", ("a06_bar",))
NO_BAR: Step = ("t03_bar", ("a07_no_bar",))
SPIRAL: Step = ("t04_spiral", ("a08_spiral",))
NO_SPIRAL: Step = ("t04_spiral", ("a09_no_spiral",))

CLASS_PATHS: dict[str, tuple[Step, ...]] = {
    "smooth-round": (SMOOTH, ("t07_rounded", ("a16_completely_round",))),
    "smooth-in-between": (SMOOTH, ("t07_rounded", ("a17_in_between",))),
    "smooth-cigar": (SMOOTH, ("t07_rounded", ("a18_cigar_shaped",))),
    "edge-on-bulge": (FEATURES, EDGE_ON, ("t09_bulge_shape", ("a25_rounded", "a26_boxy"))),
    "edge-on-no-bulge": (FEATURES, EDGE_ON, ("t09_bulge_shape", ("a27_no_bulge",))),
    "barred-spiral": (FEATURES, NOT_EDGE_ON, BAR, SPIRAL),
    "barred-no-spiral": (FEATURES, NOT_EDGE_ON, BAR, NO_SPIRAL),
    "unbarred-spiral": (FEATURES, NOT_EDGE_ON, NO_BAR, SPIRAL),
    "unbarred-no-spiral": (FEATURES, NOT_EDGE_ON, NO_BAR, NO_SPIRAL),
}
"""Decision-tree path of each class: (question, answers whose fractions add up) per step."""


@dataclass
class VoteTable:
    """One source's catalogue, reduced to what the curation needs; rows in catalogue order."""

    ids: np.ndarray
    """Catalogue ids as strings (dr7objid or GalaxyID)."""
    fractions: dict[tuple[str, str], np.ndarray]
    """(question, answer) -> fraction of that answer among the votes on its question."""
    votes: dict[str, np.ndarray] | None
    """question -> number of votes on it; None when the source has no counts."""
    image_paths: list[Path]
    columns: pd.DataFrame
    """Per-row columns copied into the output table (the id, asset_id, ...)."""
    provenance: dict[str, Any]
    notes: list[str]


def class_confidences(fractions: dict[tuple[str, str], np.ndarray]) -> np.ndarray:
    """N x 9 confidences, columns in GZ2_CLASSES order: products of fractions along each path."""
    columns = []
    for name in GZ2_CLASSES:
        confidence = 1.0
        for question, answers in CLASS_PATHS[name]:
            confidence = confidence * sum(fractions[question, answer] for answer in answers)
        columns.append(confidence)
    return np.stack(columns, axis=1)


def path_has_votes(votes: dict[str, np.ndarray] | None, min_votes: int, rows: int) -> np.ndarray:
    """N x 9 booleans: every question on the class's path has at least min_votes votes."""
    if votes is None:
        return np.ones((rows, len(GZ2_CLASSES)), dtype=bool)
    return np.stack(
        [np.all([votes[question] >= min_votes for question, _ in CLASS_PATHS[name]], axis=0) for name in GZ2_CLASSES],
        axis=1,
    )


def rank_candidates(confidence: np.ndarray, has_votes: np.ndarray, ids: np.ndarray) -> list[np.ndarray]:
    """Per class, the rows whose best class it is (and that pass the vote cut), most confident first.

    A galaxy counts only for its single best class, so no galaxy lands in two classes;
    ties are broken by id so the order never depends on the catalogue's row order.
    """
    rows = np.arange(len(confidence))
    best = confidence.argmax(axis=1)
    best_confidence = confidence[rows, best]
    eligible = has_votes[rows, best] & (best_confidence > 0)
    ranked = []
    for k in range(len(GZ2_CLASSES)):
        members = np.flatnonzero(eligible & (best == k))
        order = np.lexsort((ids[members], -best_confidence[members]))
        ranked.append(members[order])
    return ranked


def _is_fits(path: Path) -> bool:
    return path.name.lower().endswith((".fits", ".fits.gz"))


def _header(path: Path) -> list[str]:
    """Column names of a CSV table or of the first table extension of a FITS file."""
    try:
        if _is_fits(path):
            with fits.open(path) as units:
                table = next((unit for unit in units if isinstance(unit, (fits.BinTableHDU, fits.TableHDU))), None)
                if table is None:
                    raise GalaxyDistillError(f"{path}: no table extension in this FITS file")
                return list(table.columns.names)
        return list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError, TypeError) as exc:
        raise GalaxyDistillError(f"{path}: not a readable {'FITS' if _is_fits(path) else 'CSV'} table ({exc})") from None


def _read_table(path: Path, wanted: list[str], text_columns: list[str]) -> pd.DataFrame:
    """The `wanted` columns (lower-case names; the file's may differ in case) of a CSV or FITS table.

    `text_columns` come back as stripped strings (missing stays NaN), so 18-digit ids never
    pass through floating point.
    """
    by_lower = {name.lower(): name for name in _header(path)}
    columns = {by_lower[lower]: lower for lower in wanted}
    try:
        if _is_fits(path):
            table = Table.read(path, format="fits", character_as_bytes=False)
            frame = table[list(columns)].to_pandas()
        else:
            frame = pd.read_csv(path, usecols=list(columns), dtype={by_lower[c]: str for c in text_columns})
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, TypeError) as exc:
        raise GalaxyDistillError(f"{path}: not a readable {'FITS' if _is_fits(path) else 'CSV'} table ({exc})") from None
    frame = frame.rename(columns=columns)
    for column in text_columns:
        values = frame[column]
        frame[column] = values.where(values.isna(), values.astype(str).str.strip())
    return frame


def _missing_columns(path: Path, header: list[str], needed: list[str], what: str) -> None:
    present = {name.lower() for name in header}
    missing = [name for name in needed if name.lower() not in present]
    if missing:
        raise GalaxyDistillError(f"{path}: missing {len(missing)} column(s) {what}: {', '.join(missing)}")


def _check_ids(path: Path, ids: pd.Series, id_column: str) -> None:
    empty = np.flatnonzero(ids.isna().to_numpy() | (ids.astype(str).str.len() == 0).to_numpy())
    if len(empty):
        raise GalaxyDistillError(f"{path}: empty {id_column} in data row(s) {', '.join(str(i + 1) for i in empty[:10])}")
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise GalaxyDistillError(
            f"{path}: {len(duplicated)} duplicated {id_column}(s): {', '.join(map(str, duplicated[:10]))}"
        )


def _checked_numbers(path: Path, frame: pd.DataFrame, columns: list[str], id_column: str, upper: float | None, what: str) -> dict[str, np.ndarray]:
    """Columns as float arrays; NaN, negative or (with `upper`) too large values stop with the row ids."""
    values = {column: pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64) for column in columns}
    bad_rows: dict[int, str] = {}
    for column, array in values.items():
        bad = np.isnan(array) | (array < 0) | ((array > upper) if upper is not None else False)
        for row in np.flatnonzero(bad):
            bad_rows.setdefault(int(row), f"{column}={frame[column].iloc[row]}")
    if bad_rows:
        rows = sorted(bad_rows)
        detail = "; ".join(f"{id_column} {frame[id_column].iloc[r]}: {bad_rows[r]}" for r in rows[:5])
        raise GalaxyDistillError(f"{path}: {what} in {len(rows)} row(s): {detail}")
    return values


def _hart16_catalogue(root: Path) -> Path | None:
    return next((root / name for name in HART16_CATALOGUES if (root / name).is_file()), None)


def read_hart16(root: Path, min_votes: int) -> VoteTable:
    """Vote fractions (and counts) of gz2_hart16 joined to image files through gz2_filename_mapping."""
    catalogue = _hart16_catalogue(root)
    if catalogue is None:
        raise GalaxyDistillError(f"{root}: no {' / '.join(HART16_CATALOGUES)} found; expected {HART16_LAYOUT}")
    mapping_path = require_file(root / MAPPING_FILE, f"{HART16_LAYOUT}")
    image_dir = root / "images_gz2" / "images"
    image_dir = image_dir if image_dir.is_dir() else require_dir(root / "images_gz2", HART16_LAYOUT)

    header = _header(catalogue)
    present = {name.lower() for name in header}
    answers = [f"{question}_{answer}" for question, (_, names) in QUESTIONS.items() for answer in names]
    kind = next((k for k in FRACTION_KINDS if all(f"{a}_{k}" in present for a in answers)), None)
    closest = kind or min(FRACTION_KINDS, key=lambda k: sum(f"{a}_{k}" not in present for a in answers))
    fraction_columns = [f"{a}_{closest}" for a in answers]
    count_columns = [f"{a}_count" for a in answers] if min_votes > 0 else []
    _missing_columns(
        catalogue, header, ["dr7objid", *fraction_columns, *count_columns],
        "(dr7objid; one complete set of _debiased, _weighted_fraction or _fraction columns of the questions used; "
        f"their _count columns for --min-votes {min_votes}, which --min-votes 0 skips)",
    )
    optional = ["sample"] if "sample" in present else []
    frame = _read_table(catalogue, ["dr7objid", *optional, *fraction_columns, *count_columns], ["dr7objid", *optional])
    _check_ids(catalogue, frame["dr7objid"], "dr7objid")
    fraction_values = _checked_numbers(catalogue, frame, fraction_columns, "dr7objid", 1.0, "vote fractions must lie in [0, 1]")
    count_values = _checked_numbers(catalogue, frame, count_columns, "dr7objid", None, "vote counts must be numbers >= 0")

    asset_ids, mapping_note = _asset_ids(mapping_path, frame)
    mapped = asset_ids.notna().to_numpy()
    notes = [mapping_note] if mapping_note else []
    if not mapped.all():
        notes.append(f"{int((~mapped).sum())} catalogue galaxies have no row in {MAPPING_FILE} and were left out")
    frame = frame[mapped].reset_index(drop=True)
    keep = np.flatnonzero(mapped)
    asset_ids = asset_ids[mapped].reset_index(drop=True)

    fractions = {
        (question, answer): fraction_values[f"{question}_{answer}_{closest}"][keep]
        for question, (_, names) in QUESTIONS.items()
        for answer in names
    }
    votes = None
    if min_votes > 0:
        votes = {
            question: sum(count_values[f"{question}_{answer}_count"][keep] for answer in names)
            for question, (_, names) in QUESTIONS.items()
        }
    return VoteTable(
        ids=frame["dr7objid"].to_numpy(str),
        fractions=fractions,
        votes=votes,
        image_paths=[image_dir / f"{asset}.jpg" for asset in asset_ids],
        columns=pd.DataFrame({"dr7objid": frame["dr7objid"].to_numpy(str), "asset_id": asset_ids.to_numpy(str)}),
        provenance={
            "gz2_source": "hart16",
            "catalogue": str(catalogue),
            "mapping": str(mapping_path),
            "images": str(image_dir),
            "fractions": f"_{closest} columns" + ("" if closest == "debiased" else " (no complete set of _debiased columns)"),
            "min_votes": min_votes,
            "vote_counts": "sum of the _count columns of each question's answers" if min_votes > 0 else "not used (min_votes 0)",
        },
        notes=notes,
    )


def _asset_ids(mapping_path: Path, catalogue: pd.DataFrame) -> tuple[pd.Series, str]:
    """asset_id of each catalogue row (NaN if unmapped), preferring a mapping row of the same sample."""
    header = _header(mapping_path)
    _missing_columns(mapping_path, header, ["objid", "asset_id"], "(expected objid,sample,asset_id)")
    has_sample = "sample" in {name.lower() for name in header} and "sample" in catalogue.columns
    mapping = _read_table(mapping_path, ["objid", "asset_id", *(["sample"] if has_sample else [])],
                          ["objid", "asset_id", *(["sample"] if has_sample else [])])
    mapping = mapping.dropna(subset=["objid", "asset_id"]).rename(columns={"objid": "dr7objid"})
    repeated = int(mapping["dr7objid"].duplicated().sum())
    if has_sample:
        joined = catalogue[["dr7objid", "sample"]].merge(
            mapping.rename(columns={"sample": "mapping_sample"}), on="dr7objid", how="left"
        )
        joined["other_sample"] = joined["sample"] != joined["mapping_sample"]
        joined = joined.sort_values("other_sample", kind="stable")
    else:
        joined = catalogue[["dr7objid"]].merge(mapping, on="dr7objid", how="left")
    chosen = joined.drop_duplicates("dr7objid").set_index("dr7objid")["asset_id"]
    note = (
        f"{repeated} {MAPPING_FILE} row(s) repeat an earlier objid; each galaxy took the row of its own "
        "sample, else its first row"
        if repeated
        else ""
    )
    return chosen.reindex(catalogue["dr7objid"]).reset_index(drop=True), note


def read_kaggle(root: Path) -> VoteTable:
    """Conditional vote fractions from the cumulative values of training_solutions_rev1.csv."""
    path = require_file(root / KAGGLE_FILE, KAGGLE_LAYOUT)
    image_dir = require_dir(root / "images_training_rev1", KAGGLE_LAYOUT)
    class_columns = {
        (question, answer): f"{kaggle}.{j + 1}"
        for question, (kaggle, names) in QUESTIONS.items()
        for j, answer in enumerate(names)
    }
    needed = ["GalaxyID", *class_columns.values()]
    header = _header(path)
    _missing_columns(path, header, needed, "(GalaxyID and the Class columns of the questions used)")
    frame = _read_table(path, [name.lower() for name in needed], ["galaxyid"])
    frame = frame.rename(columns={name.lower(): name for name in needed})
    _check_ids(path, frame["GalaxyID"], "GalaxyID")
    values = _checked_numbers(path, frame, list(class_columns.values()), "GalaxyID", 1.0, "vote fractions must lie in [0, 1]")
    fractions = {}
    for question, (_, names) in QUESTIONS.items():
        reached = sum(values[class_columns[question, answer]] for answer in names)
        for answer in names:
            cumulative = values[class_columns[question, answer]]
            fractions[question, answer] = np.divide(cumulative, reached, out=np.zeros_like(cumulative), where=reached > 0)
    ids = frame["GalaxyID"].to_numpy(str)
    return VoteTable(
        ids=ids,
        fractions=fractions,
        votes=None,
        image_paths=[image_dir / f"{galaxy}.jpg" for galaxy in ids],
        columns=pd.DataFrame({"GalaxyID": ids}),
        provenance={
            "gz2_source": "kaggle",
            "catalogue": str(path),
            "images": str(image_dir),
            "fractions": "Class columns (cumulative), each divided by the sum of its question's Class columns",
            "min_votes": None,
            "vote_counts": "none in the Kaggle table: min_votes not applied",
        },
        notes=[],
    )


def detect_source(root: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    if _hart16_catalogue(root) is not None:
        return "hart16"
    if (root / KAGGLE_FILE).is_file():
        return "kaggle"
    raise GalaxyDistillError(f"{root}: no GZ2 catalogue found; expected either {HART16_LAYOUT}; or {KAGGLE_LAYOUT}")


def _describe_path(name: str, source: str) -> str:
    steps = []
    for question, answers in CLASS_PATHS[name]:
        kaggle, names = QUESTIONS[question]
        labels = [f"{question}_{a}" if source == "hart16" else f"{kaggle}.{names.index(a) + 1}" for a in answers]
        steps.append(" + ".join(labels) if len(labels) == 1 else "(" + " + ".join(labels) + ")")
    return " * ".join(steps)


def build(settings: PrepareSettings) -> SourceImages:
    root = settings.root or default_root("gz2", "gz2", f"either {HART16_LAYOUT}; or {KAGGLE_LAYOUT}")
    require_dir(root, f"either {HART16_LAYOUT}; or {KAGGLE_LAYOUT}")
    source = detect_source(root, settings.gz2_source)
    votes = read_hart16(root, settings.min_votes) if source == "hart16" else read_kaggle(root)

    confidence = class_confidences(votes.fractions)
    ranked = rank_candidates(confidence, path_has_votes(votes.votes, settings.min_votes, len(votes.ids)), votes.ids)
    available = [len(members) for members in ranked]
    per_class = settings.per_class if settings.per_class is not None else max(1, min(available))
    short = [f"{name} has {count}" for name, count in zip(GZ2_CLASSES, available) if count < per_class]
    if short:
        cut = f", at least {settings.min_votes} votes on each question of its path" if votes.votes is not None else ""
        raise GalaxyDistillError(
            f"{votes.provenance['catalogue']}: {per_class} galaxies per class requested but {', '.join(short)} "
            f"qualifying (best class, confidence > 0{cut}); lower --per-class"
            + (" or --min-votes" if cut else "")
        )

    def cutout(path: Path) -> np.ndarray:
        return crop_and_resize(read_rgb(path), settings.crop_fraction, settings.size, path)

    first = np.concatenate([members[:per_class] for members in ranked])
    pixels, kept, problems = load_cutouts(
        [votes.image_paths[i] for i in first], cutout, settings.skip_bad_images, settings.workers, "gz2 images"
    )
    images_by_row = dict(zip(first[kept].tolist(), pixels))
    chosen: list[list[int]] = []
    for k, members in enumerate(ranked):
        rows = [int(i) for i in members[:per_class] if int(i) in images_by_row]
        for row in members[per_class:]:
            if len(rows) == per_class:
                break
            try:
                images_by_row[int(row)] = cutout(votes.image_paths[row])
                rows.append(int(row))
            except BadImageError as exc:
                problems.append(str(exc))
        if len(rows) < per_class:
            raise GalaxyDistillError(
                f"{GZ2_CLASSES[k]}: only {len(rows)} of its {len(members)} qualifying galaxies have readable images "
                f"({per_class} needed); first problem: {problems[0]}"
            )
        chosen.append(rows)

    order = np.array([row for rows in chosen for row in rows], dtype=np.int64)
    labels = np.repeat(np.arange(len(GZ2_CLASSES), dtype=np.int64), per_class)
    table = votes.columns.iloc[order].reset_index(drop=True).assign(
        class_name=[GZ2_CLASSES[k] for k in labels],
        confidence=confidence[order, labels],
        rank=np.concatenate([np.arange(1, per_class + 1)] * len(GZ2_CLASSES)),
        path=[str(votes.image_paths[row].relative_to(root)) for row in order],
    )
    notes = votes.notes + ([f"skipped {len(problems)} unreadable image(s), replaced by the next-ranked galaxies"] + problems[:20] if problems else [])
    return SourceImages(
        images=np.stack([images_by_row[row] for row in order]),
        labels=labels,
        class_names=list(GZ2_CLASSES),
        provenance={
            "source": str(root),
            **votes.provenance,
            "reference": "Galaxy Zoo 2 (Willett et al. 2013; Hart et al. 2016); classes of Guan et al. 2023",
            "class_definitions": {name: _describe_path(name, source) for name in GZ2_CLASSES},
            "selection": "each galaxy joins only its best class; per class the most confident are kept",
            "qualifying_per_class": dict(zip(GZ2_CLASSES, available)),
            "lowest_kept_confidence": {
                name: float(confidence[rows, k].min()) for k, (name, rows) in enumerate(zip(GZ2_CLASSES, chosen))
            },
        },
        table=table,
        notes=notes,
    )
