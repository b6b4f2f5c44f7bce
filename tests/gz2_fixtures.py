"""Tiny Galaxy Zoo 2 catalogues in the published schemas, with planted vote fractions.

gz2_hart16 (Hart et al. 2016, columns as in Willett et al. 2013: 9 identification columns,
then _count, _weight, _fraction, _weighted_fraction, _debiased and _flag for all 37 answers),
gz2_filename_mapping (objid, sample, asset_id) and the Kaggle Galaxy Challenge
training_solutions_rev1.csv (GalaxyID, Class1.1 ... Class11.6, cumulative fractions).
Every galaxy's image is a uniform colour of its own, so a test can tell which file was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table
from PIL import Image

FIRST = ("t01_smooth_or_features", "a01_smooth")
FEATURES = ("t01_smooth_or_features", "a02_features_or_disk")
# The whole GZ2 tree: question, Kaggle class, answers, answers that lead to the question.
TREE: list[tuple[str, str, list[str], list[tuple[str, str]]]] = [
    ("t01_smooth_or_features", "Class1", ["a01_smooth", "a02_features_or_disk", "a03_star_or_artifact"], []),
    ("t02_edgeon", "Class2", ["a04_yes", "a05_no"], [FEATURES]),
    ("t03_bar", "Class3", ["a06_bar", "a07_no_bar"], [FEATURES, ("t02_edgeon", "a05_no")]),
    ("t04_spiral", "Class4", ["a08_spiral", "a09_no_spiral"], [FEATURES, ("t02_edgeon", "a05_no")]),
    ("t05_bulge_prominence", "Class5", ["a10_no_bulge", "a11_just_noticeable", "a12_obvious", "a13_dominant"],
     [FEATURES, ("t02_edgeon", "a05_no")]),
    ("t06_odd", "Class6", ["a14_yes", "a15_no"], []),
    ("t07_rounded", "Class7", ["a16_completely_round", "a17_in_between", "a18_cigar_shaped"], [FIRST]),
    ("t08_odd_feature", "Class8",
     ["a19_ring", "a20_lens_or_arc", "a21_disturbed", "a22_irregular", "a23_other", "a24_merger", "a38_dust_lane"],
     [("t06_odd", "a14_yes")]),
    ("t09_bulge_shape", "Class9", ["a25_rounded", "a26_boxy", "a27_no_bulge"], [FEATURES, ("t02_edgeon", "a04_yes")]),
    ("t10_arms_winding", "Class10", ["a28_tight", "a29_medium", "a30_loose"],
     [FEATURES, ("t02_edgeon", "a05_no"), ("t04_spiral", "a08_spiral")]),
    ("t11_arms_number", "Class11", ["a31_1", "a32_2", "a33_3", "a34_4", "a36_more_than_4", "a37_cant_tell"],
     [FEATURES, ("t02_edgeon", "a05_no"), ("t04_spiral", "a08_spiral")]),
]
SUFFIXES = ("count", "weight", "fraction", "weighted_fraction", "debiased", "flag")
HART16_ID_COLUMNS = ["dr7objid", "ra", "dec", "rastring", "decstring", "sample", "gz2_class",
                     "total_classifications", "total_votes"]
CLASSIFICATIONS = 60

# Written out independently of galaxy_distill.data.gz2 so the tests check it, not copy it.
PATHS: dict[str, list[tuple[str, list[str]]]] = {
    "smooth-round": [("t01_smooth_or_features", ["a01_smooth"]), ("t07_rounded", ["a16_completely_round"])],
    "smooth-in-between": [("t01_smooth_or_features", ["a01_smooth"]), ("t07_rounded", ["a17_in_between"])],
    "smooth-cigar": [("t01_smooth_or_features", ["a01_smooth"]), ("t07_rounded", ["a18_cigar_shaped"])],
    "edge-on-bulge": [("t01_smooth_or_features", ["a02_features_or_disk"]), ("t02_edgeon", ["a04_yes"]),
                      ("t09_bulge_shape", ["a25_rounded", "a26_boxy"])],
    "edge-on-no-bulge": [("t01_smooth_or_features", ["a02_features_or_disk"]), ("t02_edgeon", ["a04_yes"]),
                         ("t09_bulge_shape", ["a27_no_bulge"])],
    "barred-spiral": [("t01_smooth_or_features", ["a02_features_or_disk"]), ("t02_edgeon", ["a05_no"]),
                      ("t03_bar", ["a06_bar"]), ("t04_spiral", ["a08_spiral"])],
    "barred-no-spiral": [("t01_smooth_or_features", ["a02_features_or_disk"]), ("t02_edgeon", ["a05_no"]),
                         ("t03_bar", ["a06_bar"]), ("t04_spiral", ["a09_no_spiral"])],
    "unbarred-spiral": [("t01_smooth_or_features", ["a02_features_or_disk"]), ("t02_edgeon", ["a05_no"]),
                        ("t03_bar", ["a07_no_bar"]), ("t04_spiral", ["a08_spiral"])],
    "unbarred-no-spiral": [("t01_smooth_or_features", ["a02_features_or_disk"]), ("t02_edgeon", ["a05_no"]),
                           ("t03_bar", ["a07_no_bar"]), ("t04_spiral", ["a09_no_spiral"])],
}
CLASSES = list(PATHS)
LEVELS = (0.9, 0.8, 0.7, 0.6, 0.3)
"""Planted confidences: each class gets one galaxy at each level."""


@dataclass
class Galaxy:
    fractions: dict[str, list[float]]
    """Conditional answer fractions of every question."""
    votes: dict[str, int] = field(default_factory=dict)
    """Votes on a question, where not CLASSIFICATIONS x the probability of reaching it."""
    index: int = 0

    @property
    def dr7objid(self) -> str:
        return str(587722981736000000 + 7 * self.index)

    @property
    def asset_id(self) -> str:
        return str(1000 + 3 * self.index)

    @property
    def galaxy_id(self) -> str:
        return str(100008 + 11 * self.index)

    @property
    def colour(self) -> tuple[int, int, int]:
        return 16 + 8 * (self.index % 28), 16 + 8 * (self.index // 28), 160

    def reach(self, question: str) -> float:
        parents = next(p for q, _, _, p in TREE if q == question)
        return float(np.prod([self.answer(q, a) for q, a in parents])) if parents else 1.0

    def answer(self, question: str, answer: str) -> float:
        answers = next(a for q, _, a, _ in TREE if q == question)
        return self.fractions[question][answers.index(answer)]

    def question_votes(self, question: str) -> int:
        return self.votes.get(question, round(CLASSIFICATIONS * self.reach(question)))


def uniform() -> dict[str, list[float]]:
    return {question: [1.0 / len(answers)] * len(answers) for question, _, answers, _ in TREE}


def planted(class_name: str, confidence: float) -> Galaxy:
    """A galaxy whose confidence for `class_name` is `confidence`, split evenly over the path's steps."""
    fractions = uniform()
    steps = PATHS[class_name]
    share = confidence ** (1.0 / len(steps))
    for question, chosen in steps:
        answers = next(a for q, _, a, _ in TREE if q == question)
        others = len(answers) - len(chosen)
        fractions[question] = [share / len(chosen) if a in chosen else (1 - share) / others for a in answers]
    return Galaxy(fractions)


def background(rng: np.random.Generator) -> Galaxy:
    """An ambiguous galaxy: every question's fractions near uniform, so every confidence stays low."""
    return Galaxy({question: rng.dirichlet([30.0] * len(answers)).tolist() for question, _, answers, _ in TREE})


@dataclass
class Catalogue:
    galaxies: list[Galaxy]
    """In catalogue row order (shuffled, so row order says nothing about rank)."""
    planted: dict[str, list[Galaxy]]
    """Per class, the planted galaxies in LEVELS order (most confident first)."""
    double: Galaxy
    """Best class smooth-round (0.495), second smooth-in-between (0.475)."""
    few_votes: Galaxy
    """Barred-spiral at 0.95, but only 10 votes on t03_bar."""
    background: list[Galaxy]
    """Ambiguous galaxies whose every confidence stays below the planted levels."""


def standard_catalogue(seed: int = 0) -> Catalogue:
    rng = np.random.default_rng(seed)
    planted_galaxies = {name: [planted(name, level) for level in LEVELS] for name in CLASSES}
    double = Galaxy({**uniform(), "t01_smooth_or_features": [0.99, 0.005, 0.005], "t07_rounded": [0.5, 0.48, 0.02]})
    few_votes = planted("barred-spiral", 0.95)
    few_votes.votes["t03_bar"] = 10
    ambiguous = [background(rng) for _ in range(12)]
    everything = [g for name in CLASSES for g in planted_galaxies[name]] + [double, few_votes] + ambiguous
    for index, galaxy in enumerate(everything):
        galaxy.index = index
    order = rng.permutation(len(everything))
    return Catalogue([everything[i] for i in order], planted_galaxies, double, few_votes, ambiguous)


def hart16_table(galaxies: list[Galaxy]) -> pd.DataFrame:
    rows = []
    for galaxy in galaxies:
        ra, dec = 150.0 + galaxy.index * 0.01, 2.0 + galaxy.index * 0.01
        row: dict[str, object] = {
            "dr7objid": int(galaxy.dr7objid), "ra": ra, "dec": dec,
            "rastring": f"10:{galaxy.index:02d}:00.00", "decstring": f"+02:{galaxy.index:02d}:00.0",
            "sample": "original" if galaxy.index % 5 else "extra", "gz2_class": "Ei",
            "total_classifications": CLASSIFICATIONS, "total_votes": 0,
        }
        total_votes = 0
        for question, _, answers, _ in TREE:
            votes = galaxy.question_votes(question)
            for answer, fraction in zip(answers, galaxy.fractions[question]):
                count = round(votes * fraction)
                total_votes += count
                prefix = f"{question}_{answer}"
                row.update({
                    f"{prefix}_count": count, f"{prefix}_weight": float(count),
                    f"{prefix}_fraction": count / votes if votes else 0.0,
                    f"{prefix}_weighted_fraction": count / votes if votes else 0.0,
                    f"{prefix}_debiased": round(fraction, 6), f"{prefix}_flag": 0,
                })
        row["total_votes"] = total_votes
        rows.append(row)
    table = pd.DataFrame(rows)
    assert list(table.columns) == HART16_ID_COLUMNS + [
        f"{q}_{a}_{s}" for q, _, answers, _ in TREE for a in answers for s in SUFFIXES
    ]
    return table


def mapping_table(galaxies: list[Galaxy], decoy: Galaxy) -> pd.DataFrame:
    """One row per galaxy, plus a row of another sample for `decoy`, listed first, naming no image."""
    rows = [{"objid": decoy.dr7objid, "sample": "stripe82_coadd_1", "asset_id": "999999"}]
    rows += [{"objid": g.dr7objid, "sample": "original" if g.index % 5 else "extra", "asset_id": g.asset_id} for g in galaxies]
    return pd.DataFrame(rows)


def kaggle_table(galaxies: list[Galaxy]) -> pd.DataFrame:
    rows = []
    for galaxy in galaxies:
        row: dict[str, object] = {"GalaxyID": int(galaxy.galaxy_id)}
        for question, kaggle, answers, _ in TREE:
            reach = galaxy.reach(question)
            for j, fraction in enumerate(galaxy.fractions[question]):
                row[f"{kaggle}.{j + 1}"] = round(reach * fraction, 6)
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".fits":
        Table.from_pandas(table).write(path, format="fits")
    else:
        table.to_csv(path, index=False)
    return path


def write_images(directory: Path, names: list[str], colours: list[tuple[int, int, int]], size: int = 24) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, colour in zip(names, colours):
        Image.new("RGB", (size, size), colour).save(directory / f"{name}.jpg", quality=95)


def make_hart16_root(root: Path, catalogue: Catalogue, catalogue_name: str = "gz2_hart16.csv",
                     nested_images: bool = True) -> Path:
    galaxies = catalogue.galaxies
    write_table(hart16_table(galaxies), root / catalogue_name)
    write_table(mapping_table(galaxies, catalogue.planted["smooth-round"][0]), root / "gz2_filename_mapping.csv")
    image_dir = root / "images_gz2" / "images" if nested_images else root / "images_gz2"
    write_images(image_dir, [g.asset_id for g in galaxies], [g.colour for g in galaxies])
    return root


def make_kaggle_root(root: Path, catalogue: Catalogue) -> Path:
    galaxies = catalogue.galaxies
    write_table(kaggle_table(galaxies), root / "training_solutions_rev1.csv")
    write_images(root / "images_training_rev1", [g.galaxy_id for g in galaxies], [g.colour for g in galaxies])
    return root
