"""gz1-sdss on the real shared SDSS cutouts, and the registry's split / augment / whiten / store steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from shared_paths import GZ1_ROOT

from galaxy_distill.data import gz1
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.images import BadImageError
from galaxy_distill.data.registry import PreparedDataset, load_prepared, prepare
from galaxy_distill.errors import GalaxyDistillError

pytestmark = pytest.mark.usefixtures("workspace")


STORED_FILES = {"images.safetensors", "meta.json", "train_table.csv", "val_table.csv", "test_table.csv"}


def gz1_settings(root: Path = GZ1_ROOT, **changes: object) -> PrepareSettings:
    values = {"dataset": "gz1-sdss", "root": root, "per_class": 20, "size": 32, **changes}
    return PrepareSettings(**values)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    assert GZ1_ROOT.is_dir(), f"the shared data must sit beside the repository: {GZ1_ROOT}"
    return prepare(gz1_settings(), out_dir=tmp_path_factory.mktemp("gz1") / "gz1-sdss")


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    """A gz1_sdss layout with 3 real galaxies of each kept class."""
    labels = pd.read_csv(GZ1_ROOT / "labels.csv", dtype={"OBJID": str})
    chosen = labels[labels["CLASS"].isin([0, 1, 3])].groupby("CLASS").head(3)
    root = tmp_path / "gz1"
    (root / "images").mkdir(parents=True)
    for objid in chosen["OBJID"]:
        shutil.copy(GZ1_ROOT / "images" / f"{objid}.jpeg", root / "images")
    chosen.to_csv(root / "labels.csv", index=False)
    return root


def image_path(root: Path, row: int) -> Path:
    return root / "images" / f"{pd.read_csv(root / 'labels.csv', dtype={'OBJID': str})['OBJID'][row]}.jpeg"


def test_classes_are_balanced_and_labels_follow_labels_csv(prepared: PreparedDataset) -> None:
    assert prepared.class_names == ["elliptical", "spiral", "edge-on"]
    assert prepared.meta["counts"] == {"train": [16] * 3, "val": [2] * 3, "test": [2] * 3}
    assert prepared.image_shape == (3, 32, 32)
    catalogue = pd.read_csv(GZ1_ROOT / "labels.csv").set_index("OBJID")["CLASS"]
    seen: set[int] = set()
    for split in ("train", "val", "test"):
        table = prepared.table(split)
        names = [prepared.class_names[k] for k in prepared.labels(split)]
        assert names == [gz1.GZ1_TO_CLASS[c] for c in catalogue.loc[table["objid"]]]
        assert seen.isdisjoint(table["objid"])
        seen |= set(table["objid"])
        assert prepared.images(split).dtype == np.uint8


def test_split_is_determined_by_the_seed(prepared: PreparedDataset, tmp_path: Path) -> None:
    again = prepare(gz1_settings(), out_dir=tmp_path / "again")
    assert again.arrays.keys() == prepared.arrays.keys()
    for key, array in prepared.arrays.items():
        np.testing.assert_array_equal(again.arrays[key], array)
    pd.testing.assert_frame_equal(again.table("test"), prepared.table("test"))

    other = prepare(gz1_settings(seed=1), out_dir=tmp_path / "other")
    assert set(other.table("train")["objid"]) != set(prepared.table("train")["objid"])


def test_second_prepare_reuses_the_stored_copy(prepared: PreparedDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_build(settings: PrepareSettings) -> None:
        raise AssertionError("built again")

    monkeypatch.setattr(gz1, "build", must_not_build)
    reused = prepare(gz1_settings(), out_dir=prepared.directory)
    assert reused.meta["images_sha256"] == prepared.meta["images_sha256"]
    with pytest.raises(AssertionError, match="built again"):
        prepare(gz1_settings(), out_dir=prepared.directory, force=True)


def test_prepare_leaves_no_temporary_files(tmp_path: Path) -> None:
    prepared = prepare(gz1_settings(per_class=4, test_fraction=0.25, val_fraction=0.0), out_dir=tmp_path / "out")
    assert {p.name for p in prepared.directory.iterdir()} == STORED_FILES
    assert load_prepared(prepared.directory).meta["images_sha256"] == prepared.meta["images_sha256"]


def test_four_rotations_are_exact_quarter_turns(prepared: PreparedDataset, tmp_path: Path) -> None:
    rotated = prepare(gz1_settings(rotations=4), out_dir=tmp_path / "rot4")
    images, labels = rotated.images("train"), rotated.labels("train")
    originals = prepared.images("train")
    n = len(originals)
    assert len(images) == 4 * n
    for k in range(4):
        np.testing.assert_array_equal(images[k * n:(k + 1) * n], np.rot90(originals, k, axes=(1, 2)))
        np.testing.assert_array_equal(labels[k * n:(k + 1) * n], prepared.labels("train"))
    assert rotated.table("train")["rotation_deg"].unique().tolist() == [0.0, 90.0, 180.0, 270.0]
    np.testing.assert_array_equal(rotated.images("test"), prepared.images("test"))


def test_three_rotations_turn_by_120_degrees(prepared: PreparedDataset, tmp_path: Path) -> None:
    rotated = prepare(gz1_settings(rotations=3), out_dir=tmp_path / "rot3")
    images = rotated.images("train")
    originals = prepared.images("train").astype(np.float64)
    n = len(originals)
    assert images.shape == (3 * n, 32, 32, 3)
    assert rotated.table("train")["rotation_deg"].unique().tolist() == [0.0, 120.0, 240.0]
    rows, columns = np.mgrid[:32, :32]
    centre = (rows - 15.5) ** 2 + (columns - 15.5) ** 2 < 10**2
    for k, angle in ((1, 120.0), (2, 240.0)):
        copy = images[k * n:(k + 1) * n].astype(np.float64)
        turned_back = ndimage.rotate(copy, -angle, axes=(2, 1), reshape=False, order=3, mode="reflect")
        assert np.abs(turned_back - originals)[:, centre].mean() < 3.0
        assert np.abs(copy - originals)[:, centre].mean() > 5.0


def mean_abs_correlation(features: np.ndarray) -> float:
    correlation = np.corrcoef(features, rowvar=False)
    return float(np.abs(correlation[~np.eye(len(correlation), dtype=bool)]).mean())


def test_zca_whitening_round_trips_to_display(tmp_path: Path) -> None:
    whitened = load_prepared(prepare(gz1_settings(size=8, zca=True), out_dir=tmp_path / "zca").directory)
    assert whitened.uses_zca
    images = whitened.images("train")
    normalized = whitened.normalize(images)
    assert normalized.shape == (len(images), 3, 8, 8)
    np.testing.assert_array_equal(whitened.to_display(normalized), images)

    mean, std = np.array(whitened.meta["channel_mean"]), np.array(whitened.meta["channel_std"])
    standardized = ((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).reshape(len(images), -1)
    assert mean_abs_correlation(normalized.reshape(len(images), -1).double().numpy()) < 0.7 * mean_abs_correlation(standardized)


def test_merger_class_is_optional(tmp_path: Path) -> None:
    source = gz1.build(gz1_settings(include_merger=True, per_class=3, size=8, crop_fraction=0.5))
    assert source.class_names == ["elliptical", "spiral", "edge-on", "merger"]
    assert np.bincount(source.labels).tolist() == [3, 3, 3, 3]


# --- bad input -------------------------------------------------------------------------------


def test_missing_root_names_it_and_the_layout(tmp_path: Path) -> None:
    with pytest.raises(GalaxyDistillError, match=r"nowhere: directory not found; expected labels\.csv \(columns OBJID,CLASS\) and images/<OBJID>\.jpeg"):
        gz1.build(gz1_settings(tmp_path / "nowhere", crop_fraction=0.5))


def test_missing_labels_file_is_named(small_root: Path) -> None:
    (small_root / "labels.csv").unlink()
    with pytest.raises(GalaxyDistillError, match=rf"{small_root / 'labels.csv'}: file not found; expected a CSV with columns OBJID,CLASS"):
        gz1.build(gz1_settings(small_root, per_class=3, crop_fraction=0.5))


def test_missing_columns_are_all_listed(small_root: Path) -> None:
    (small_root / "labels.csv").write_text("ID,TYPE\n1,0\n")
    with pytest.raises(GalaxyDistillError, match=r"missing column\(s\) OBJID, CLASS"):
        gz1.build(gz1_settings(small_root, per_class=3, crop_fraction=0.5))


def test_bad_class_value_names_the_line(small_root: Path) -> None:
    labels = pd.read_csv(small_root / "labels.csv", dtype={"OBJID": str})
    labels.loc[4, "CLASS"] = 9
    labels.to_csv(small_root / "labels.csv", index=False)
    with pytest.raises(GalaxyDistillError, match=r"CLASS must be an integer 0-5; bad value on line\(s\) 6"):
        gz1.build(gz1_settings(small_root, per_class=3, crop_fraction=0.5))


def test_duplicated_objid_is_rejected(small_root: Path) -> None:
    labels = pd.read_csv(small_root / "labels.csv", dtype={"OBJID": str})
    pd.concat([labels, labels.iloc[[2]]]).to_csv(small_root / "labels.csv", index=False)
    with pytest.raises(GalaxyDistillError, match=f"duplicated OBJID\\(s\\) {labels['OBJID'][2]}"):
        gz1.build(gz1_settings(small_root, per_class=3, crop_fraction=0.5))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_is_named(small_root: Path, damage: str) -> None:
    broken = image_path(small_root, 4)
    data = broken.read_bytes()
    broken.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(BadImageError, match=f"{broken}: not a readable image"):
        gz1.build(gz1_settings(small_root, per_class=3, crop_fraction=0.5))


def test_skip_bad_images_counts_what_it_skipped(small_root: Path) -> None:
    broken = image_path(small_root, 4)
    broken.write_bytes(broken.read_bytes()[:500])
    source = gz1.build(gz1_settings(small_root, per_class=3, crop_fraction=0.5, skip_bad_images=True))
    assert len(source.images) == 8  # its class has no other image to take its place
    assert source.notes[0] == "skipped 1 unreadable image(s), replaced by others of their class"
    assert str(broken) in source.notes[1]
    assert broken.stem not in source.table["objid"].tolist()


def test_a_skipped_image_is_replaced_by_another_of_its_class(small_root: Path) -> None:
    settings = gz1_settings(small_root, per_class=2, crop_fraction=0.5, skip_bad_images=True)
    chosen = gz1.build(settings).table["objid"].tolist()
    broken = small_root / "images" / f"{chosen[0]}.jpeg"
    broken.write_bytes(broken.read_bytes()[:500])
    source = gz1.build(settings)
    assert np.bincount(source.labels).tolist() == [2, 2, 2]
    assert chosen[0] not in source.table["objid"].tolist()
    assert chosen[1:] == [objid for objid in source.table["objid"] if objid in chosen]
    assert str(broken) in source.notes[1]


def test_missing_image_file_is_named(small_root: Path) -> None:
    missing = image_path(small_root, 0)
    missing.unlink()
    with pytest.raises(BadImageError, match=f"{missing}: image file not found"):
        gz1.build(gz1_settings(small_root, per_class=3, crop_fraction=0.5))


def test_class_with_too_few_images_reports_the_available_count() -> None:
    # The shared catalogue holds 414 + 436 = 850 spirals and 998 edge-on disks.
    with pytest.raises(GalaxyDistillError, match=r"900 images per class requested but spiral has 850$"):
        gz1.build(gz1_settings(per_class=900, crop_fraction=0.5))
