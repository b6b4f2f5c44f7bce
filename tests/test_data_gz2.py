"""GZ2 curation (galaxy_distill.data.gz2) on tiny catalogues written in the published schemas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gz2_fixtures import (
    CLASSES,
    LEVELS,
    Catalogue,
    Galaxy,
    hart16_table,
    kaggle_table,
    make_hart16_root,
    make_kaggle_root,
    standard_catalogue,
    write_table,
)

from galaxy_distill.data import gz2
from galaxy_distill.data.base import GZ2_CLASSES, stratified_split
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.registry import prepare, with_defaults
from galaxy_distill.errors import GalaxyDistillError


pytestmark = pytest.mark.usefixtures("workspace")


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return standard_catalogue()


@pytest.fixture(scope="module")
def hart16_root(tmp_path_factory: pytest.TempPathFactory, catalogue: Catalogue) -> Path:
    return make_hart16_root(tmp_path_factory.mktemp("hart16"), catalogue)


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory, catalogue: Catalogue) -> Path:
    return make_kaggle_root(tmp_path_factory.mktemp("kaggle"), catalogue)


def settings(root: Path | None, **changes: object) -> PrepareSettings:
    values = {"dataset": "gz2", "root": root, "size": 8, "crop_fraction": 0.5, "per_class": 3, **changes}
    return PrepareSettings(**values)


def rows_of(source: gz2.SourceImages, class_name: str) -> pd.DataFrame:
    return source.table[source.table["class_name"] == class_name]


def assert_images_are(source: gz2.SourceImages, galaxies: list[Galaxy]) -> None:
    """Each fixture image is one flat colour, so the mean colour tells whose file was read."""
    means = source.images.reshape(len(source.images), -1, 3).mean(axis=1)
    np.testing.assert_allclose(means, [g.colour for g in galaxies], atol=4)


def tampered_root(tmp_path: Path, catalogue: Catalogue, table: pd.DataFrame, name: str = "gz2_hart16.csv") -> Path:
    root = make_hart16_root(tmp_path / "root", catalogue)
    write_table(table, root / name)
    return root


def test_class_paths_cover_the_nine_classes_in_order() -> None:
    assert tuple(gz2.CLASS_PATHS) == GZ2_CLASSES == tuple(CLASSES)


def test_hart16_planted_galaxies_land_in_their_classes_in_rank_order(hart16_root: Path, catalogue: Catalogue) -> None:
    source = gz2.build(settings(hart16_root))

    assert source.class_names == list(GZ2_CLASSES)
    np.testing.assert_array_equal(source.labels, np.repeat(np.arange(9), 3))
    expected: list[Galaxy] = []
    for name in GZ2_CLASSES:
        rows = rows_of(source, name)
        top = catalogue.planted[name][:3]
        assert rows["dr7objid"].tolist() == [g.dr7objid for g in top]
        assert rows["asset_id"].tolist() == [g.asset_id for g in top]
        assert rows["rank"].tolist() == [1, 2, 3]
        np.testing.assert_allclose(rows["confidence"], LEVELS[:3], atol=1e-4)
        expected += top
    assert_images_are(source, expected)
    assert source.images.shape == (27, 8, 8, 3)
    assert source.table["path"].iloc[0] == f"images_gz2/images/{catalogue.planted['smooth-round'][0].asset_id}.jpg"
    assert source.provenance["gz2_source"] == "hart16"
    assert source.provenance["fractions"] == "_debiased columns"
    assert source.provenance["min_votes"] == 20
    assert "t03_bar_a06_bar" in source.provenance["class_definitions"]["barred-spiral"]


def test_mapping_row_of_the_galaxys_own_sample_wins(hart16_root: Path, catalogue: Catalogue) -> None:
    # The fixture's mapping lists a stripe82_coadd_1 row (no image) for this galaxy first.
    source = gz2.build(settings(hart16_root, per_class=2))
    first = catalogue.planted["smooth-round"][0]
    assert rows_of(source, "smooth-round")["asset_id"].iloc[0] == first.asset_id
    assert any("repeat an earlier objid" in note for note in source.notes)


def test_each_galaxy_joins_only_its_best_class(hart16_root: Path, catalogue: Catalogue) -> None:
    source = gz2.build(settings(hart16_root, per_class=5))

    assert not source.table["dr7objid"].duplicated().any()
    # The double galaxy: smooth-round 0.495, smooth-in-between 0.475. Both beat the 0.3 level,
    # so it would be 5th in both classes if a galaxy could join more than one.
    round_rows, between_rows = rows_of(source, "smooth-round"), rows_of(source, "smooth-in-between")
    assert round_rows["dr7objid"].iloc[4] == catalogue.double.dr7objid
    assert round_rows["confidence"].iloc[4] == pytest.approx(0.495, abs=1e-4)
    assert between_rows["dr7objid"].iloc[4] == catalogue.planted["smooth-in-between"][4].dr7objid
    assert catalogue.double.dr7objid not in between_rows["dr7objid"].tolist()
    for name in GZ2_CLASSES:
        assert rows_of(source, name)["confidence"].is_monotonic_decreasing


@pytest.mark.parametrize(("min_votes", "kept"), [(20, False), (11, False), (10, True), (0, True)])
def test_min_votes_applies_to_every_question_on_the_path(
    hart16_root: Path, catalogue: Catalogue, min_votes: int, kept: bool
) -> None:
    # The few-votes galaxy is the most confident barred spiral (0.95) but has 10 votes on t03_bar.
    source = gz2.build(settings(hart16_root, min_votes=min_votes))
    barred = rows_of(source, "barred-spiral")["dr7objid"].tolist()
    assert (barred[0] == catalogue.few_votes.dr7objid) is kept
    assert catalogue.few_votes.dr7objid not in rows_of(source, "barred-no-spiral")["dr7objid"].tolist()
    if min_votes == 0:
        assert source.provenance["vote_counts"] == "not used (min_votes 0)"


def test_kaggle_cumulative_fractions_give_the_same_classes(kaggle_root: Path, catalogue: Catalogue) -> None:
    source = gz2.build(settings(kaggle_root))

    assert source.provenance["gz2_source"] == "kaggle"
    assert "min_votes not applied" in source.provenance["vote_counts"]
    assert source.provenance["class_definitions"]["edge-on-bulge"] == "Class1.2 * Class2.1 * (Class9.1 + Class9.2)"
    expected: list[Galaxy] = []
    for name in GZ2_CLASSES:
        # Kaggle has no vote counts, so the few-votes galaxy now leads the barred spirals.
        top = ([catalogue.few_votes] if name == "barred-spiral" else []) + catalogue.planted[name]
        top = top[:3]
        rows = rows_of(source, name)
        assert rows["GalaxyID"].tolist() == [g.galaxy_id for g in top]
        expected += top
    assert_images_are(source, expected)
    np.testing.assert_allclose(rows_of(source, "smooth-cigar")["confidence"], LEVELS[:3], atol=1e-4)
    assert source.table["path"].iloc[0].startswith("images_training_rev1/")


def test_hart16_fits_table_and_flat_image_folder(tmp_path: Path, catalogue: Catalogue, hart16_root: Path) -> None:
    root = make_hart16_root(tmp_path / "fits", catalogue, catalogue_name="gz2_hart16.fits", nested_images=False)
    from_fits = gz2.build(settings(root))
    from_csv = gz2.build(settings(hart16_root))

    assert from_fits.provenance["catalogue"].endswith("gz2_hart16.fits")
    pd.testing.assert_frame_equal(from_fits.table.drop(columns="path"), from_csv.table.drop(columns="path"))
    np.testing.assert_array_equal(from_fits.images, from_csv.images)
    assert from_fits.table["path"].iloc[0].startswith("images_gz2/") and "/images/" not in from_fits.table["path"].iloc[0]


def test_debiased_fractions_win_then_weighted_then_raw(tmp_path: Path, catalogue: Catalogue) -> None:
    table = hart16_table(catalogue.galaxies)
    impostor = catalogue.background[0]
    row = table["dr7objid"] == int(impostor.dr7objid)
    for kind in ("fraction", "weighted_fraction"):
        table.loc[row, f"t01_smooth_or_features_a01_smooth_{kind}"] = 1.0
        table.loc[row, f"t07_rounded_a16_completely_round_{kind}"] = 1.0

    with_debiased = gz2.build(settings(tampered_root(tmp_path / "a", catalogue, table)))
    assert impostor.dr7objid not in with_debiased.table["dr7objid"].tolist()

    table = table.drop(columns=[c for c in table.columns if c.endswith("_debiased")])
    weighted = gz2.build(settings(tampered_root(tmp_path / "b", catalogue, table)))
    assert weighted.provenance["fractions"].startswith("_weighted_fraction columns")
    assert rows_of(weighted, "smooth-round")["dr7objid"].iloc[0] == impostor.dr7objid

    table = table.drop(columns=[c for c in table.columns if c.endswith("_weighted_fraction")])
    raw = gz2.build(settings(tampered_root(tmp_path / "c", catalogue, table)))
    assert raw.provenance["fractions"].startswith("_fraction columns")
    assert rows_of(raw, "smooth-round")["dr7objid"].iloc[0] == impostor.dr7objid
    assert rows_of(raw, "barred-spiral")["dr7objid"].iloc[0] == catalogue.planted["barred-spiral"][0].dr7objid


def test_auto_prefers_hart16_and_explicit_source_is_obeyed(tmp_path: Path, catalogue: Catalogue) -> None:
    root = make_kaggle_root(make_hart16_root(tmp_path / "both", catalogue), catalogue)
    assert gz2.build(settings(root)).provenance["gz2_source"] == "hart16"
    assert gz2.build(settings(root, gz2_source="kaggle")).provenance["gz2_source"] == "kaggle"


def test_registry_defaults_and_prepare(hart16_root: Path) -> None:
    defaults = with_defaults(PrepareSettings(dataset="gz2"))
    assert (defaults.size, defaults.crop_fraction, defaults.per_class) == (128, 0.5, 600)
    train, test = stratified_split(np.repeat(np.arange(9), defaults.per_class), defaults.test_fraction, seed=0)
    assert (len(train), len(test)) == (9 * 500, 9 * 100)

    prepared = prepare(settings(hart16_root, per_class=5, test_fraction=None, val_fraction=0.25))
    assert prepared.meta["counts"] == {"train": [3] * 9, "val": [1] * 9, "test": [1] * 9}
    assert prepared.meta["provenance"]["gz2_source"] == "hart16"
    table = pd.read_csv(prepared.directory / "train_table.csv", dtype={"dr7objid": str})
    assert table["dr7objid"].str.len().eq(18).all()
    assert set(table.columns) >= {"dr7objid", "asset_id", "class_name", "confidence", "rank", "path"}


# --- bad input -------------------------------------------------------------------------------


def test_no_root_and_no_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GalaxyDistillError, match=r"no data for 'gz2' found .*pass --root DIR"):
        gz2.build(settings(None))


def test_missing_root_directory(tmp_path: Path) -> None:
    with pytest.raises(GalaxyDistillError, match=r"nowhere: directory not found; expected either gz2_hart16\.csv.*training_solutions_rev1\.csv"):
        gz2.build(settings(tmp_path / "nowhere"))


def test_root_without_any_catalogue(tmp_path: Path) -> None:
    with pytest.raises(GalaxyDistillError, match=r"no GZ2 catalogue found; expected either gz2_hart16.*or training_solutions_rev1"):
        gz2.build(settings(tmp_path))


def test_explicit_source_whose_files_are_missing(hart16_root: Path) -> None:
    with pytest.raises(GalaxyDistillError, match=r"training_solutions_rev1\.csv: file not found; expected .*images_training_rev1"):
        gz2.build(settings(hart16_root, gz2_source="kaggle"))


def test_missing_mapping_file(tmp_path: Path, catalogue: Catalogue) -> None:
    root = make_hart16_root(tmp_path / "root", catalogue)
    (root / "gz2_filename_mapping.csv").unlink()
    with pytest.raises(GalaxyDistillError, match=r"gz2_filename_mapping\.csv: file not found; expected .*objid,sample,asset_id"):
        gz2.build(settings(root))


def test_missing_image_folder(tmp_path: Path, catalogue: Catalogue) -> None:
    root = make_hart16_root(tmp_path / "root", catalogue)
    for path in (root / "images_gz2" / "images").iterdir():
        path.unlink()
    (root / "images_gz2" / "images").rmdir()
    (root / "images_gz2").rmdir()
    with pytest.raises(GalaxyDistillError, match=r"images_gz2: directory not found; expected .*images_gz2/images/<asset_id>\.jpg"):
        gz2.build(settings(root))


def test_missing_hart16_columns_are_all_listed(tmp_path: Path, catalogue: Catalogue) -> None:
    dropped = ["t03_bar_a06_bar_debiased", "t03_bar_a06_bar_weighted_fraction", "t03_bar_a06_bar_fraction",
               "t04_spiral_a09_no_spiral_count", "dr7objid"]
    table = hart16_table(catalogue.galaxies).drop(columns=dropped)
    with pytest.raises(GalaxyDistillError) as error:
        gz2.build(settings(tampered_root(tmp_path, catalogue, table)))
    message = str(error.value)
    assert "missing 3 column(s)" in message
    for column in ("dr7objid", "t03_bar_a06_bar_debiased", "t04_spiral_a09_no_spiral_count"):
        assert column in message


def test_count_columns_not_needed_without_min_votes(tmp_path: Path, catalogue: Catalogue) -> None:
    table = hart16_table(catalogue.galaxies)
    table = table.drop(columns=[c for c in table.columns if c.endswith("_count")])
    root = tampered_root(tmp_path, catalogue, table)
    with pytest.raises(GalaxyDistillError, match="t01_smooth_or_features_a01_smooth_count"):
        gz2.build(settings(root))
    assert len(gz2.build(settings(root, min_votes=0)).images) == 27


def test_missing_kaggle_columns_are_all_listed(tmp_path: Path, catalogue: Catalogue) -> None:
    root = make_kaggle_root(tmp_path / "root", catalogue)
    write_table(kaggle_table(catalogue.galaxies).drop(columns=["Class3.1", "Class9.3"]), root / "training_solutions_rev1.csv")
    with pytest.raises(GalaxyDistillError, match=r"missing 2 column\(s\) .*Class3\.1, Class9\.3"):
        gz2.build(settings(root))


def test_nan_and_negative_hart16_fractions_are_rejected_with_ids(tmp_path: Path, catalogue: Catalogue) -> None:
    table = hart16_table(catalogue.galaxies)
    first, second = catalogue.galaxies[3], catalogue.galaxies[7]
    table.loc[table["dr7objid"] == int(first.dr7objid), "t02_edgeon_a04_yes_debiased"] = np.nan
    table.loc[table["dr7objid"] == int(second.dr7objid), "t07_rounded_a17_in_between_debiased"] = -0.1
    with pytest.raises(GalaxyDistillError) as error:
        gz2.build(settings(tampered_root(tmp_path, catalogue, table)))
    message = str(error.value)
    assert "vote fractions must lie in [0, 1] in 2 row(s)" in message
    assert f"dr7objid {first.dr7objid}: t02_edgeon_a04_yes_debiased=nan" in message
    assert f"dr7objid {second.dr7objid}: t07_rounded_a17_in_between_debiased=-0.1" in message


def test_negative_vote_counts_are_rejected(tmp_path: Path, catalogue: Catalogue) -> None:
    table = hart16_table(catalogue.galaxies)
    table.loc[0, "t03_bar_a07_no_bar_count"] = -3
    with pytest.raises(GalaxyDistillError, match=rf"vote counts must be numbers >= 0 .*dr7objid {table.loc[0, 'dr7objid']}"):
        gz2.build(settings(tampered_root(tmp_path, catalogue, table)))


def test_kaggle_fraction_above_one_is_rejected_with_id(tmp_path: Path, catalogue: Catalogue) -> None:
    root = make_kaggle_root(tmp_path / "root", catalogue)
    table = kaggle_table(catalogue.galaxies)
    table.loc[5, "Class7.2"] = 1.2
    write_table(table, root / "training_solutions_rev1.csv")
    with pytest.raises(GalaxyDistillError, match=rf"GalaxyID {table.loc[5, 'GalaxyID']}: Class7\.2=1\.2"):
        gz2.build(settings(root))


def test_too_few_qualifying_galaxies_reports_the_counts(hart16_root: Path) -> None:
    # Background galaxies have too few votes on the disc questions, so each disc class has just its 5.
    with pytest.raises(GalaxyDistillError) as error:
        gz2.build(settings(hart16_root, per_class=6))
    message = str(error.value)
    assert "6 galaxies per class requested but" in message
    assert "barred-spiral has 5" in message and "edge-on-bulge has 5" in message
    assert "smooth-round" not in message  # it has 8 with the double galaxy and background


@pytest.mark.parametrize("source", ["hart16", "kaggle"])
def test_duplicated_ids_are_rejected(tmp_path: Path, catalogue: Catalogue, source: str) -> None:
    if source == "hart16":
        table = hart16_table(catalogue.galaxies)
        root = tampered_root(tmp_path, catalogue, pd.concat([table, table.iloc[[4]]]))
        duplicate = rf"1 duplicated dr7objid\(s\): {table['dr7objid'].iloc[4]}"
    else:
        root = make_kaggle_root(tmp_path / "root", catalogue)
        table = kaggle_table(catalogue.galaxies)
        write_table(pd.concat([table, table.iloc[[4]]]), root / "training_solutions_rev1.csv")
        duplicate = rf"1 duplicated GalaxyID\(s\): {table['GalaxyID'].iloc[4]}"
    with pytest.raises(GalaxyDistillError, match=duplicate):
        gz2.build(settings(root))


def test_corrupt_image_is_named_or_replaced_by_the_next_ranked(tmp_path: Path, catalogue: Catalogue) -> None:
    root = make_hart16_root(tmp_path / "root", catalogue)
    best = catalogue.planted["barred-spiral"][0]
    broken = root / "images_gz2" / "images" / f"{best.asset_id}.jpg"
    broken.write_bytes(broken.read_bytes()[:40])

    with pytest.raises(GalaxyDistillError, match=f"{broken}: not a readable image"):
        gz2.build(settings(root))

    source = gz2.build(settings(root, skip_bad_images=True))
    replaced = catalogue.planted["barred-spiral"][1:4]
    assert rows_of(source, "barred-spiral")["dr7objid"].tolist() == [g.dr7objid for g in replaced]
    assert rows_of(source, "barred-spiral")["rank"].tolist() == [1, 2, 3]
    assert source.notes[-2].startswith("skipped 1 unreadable image(s), replaced by the next-ranked")
    assert str(broken) in source.notes[-1]
    assert np.bincount(source.labels).tolist() == [3] * 9
