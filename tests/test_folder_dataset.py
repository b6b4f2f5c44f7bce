"""The `folder` dataset: class-folder trees of real SDSS JPEGs, their PNG/WebP/TIFF conversions and FITS files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image

from galaxy_distill.data import PrepareSettings, load_prepared, prepare
from galaxy_distill.data.fits import read_fits_picture
from galaxy_distill.data.images import crop_and_resize, read_rgb
from galaxy_distill.errors import GalaxyDistillError

GZ1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gz1_sdss"
GZ1_CLASS = {"elliptical": 0, "spiral": 1, "edge-on": 3}


@pytest.fixture(scope="module")
def gz1_files() -> dict[str, list[Path]]:
    """A few dozen real SDSS cutouts of each GZ1 class used here, in catalogue order."""
    assert GZ1.is_dir(), f"real data expected at {GZ1} (shared/data beside the repository)"
    labels = pd.read_csv(GZ1 / "labels.csv", dtype={"OBJID": str})
    return {
        name: [GZ1 / "images" / f"{objid}.jpeg" for objid in labels.loc[labels["CLASS"] == code, "OBJID"].iloc[:40]]
        for name, code in GZ1_CLASS.items()
    }


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(home))
    return home


def copy_class(files: list[Path], folder: Path, start: int, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(source, folder / source.name)) for source in files[start : start + count]]


def convert(source: Path, target: Path, mode: str = "RGB") -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        converted = image.convert(mode)
    options = {"lossless": True} if target.suffix == ".webp" else {}
    converted.save(target, **options)
    return target


def galaxy_planes(seed: int, size: int = 48, fluxes: tuple[float, ...] = (300.0, 500.0, 800.0)) -> np.ndarray:
    """float32 planes x size x size: an inclined exponential disk on a sky of 100 with Gaussian noise (sigma 0.2)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    radius = np.hypot(x * np.cos(0.5) + y * np.sin(0.5), (y * np.cos(0.5) - x * np.sin(0.5)) / 0.5)
    profile = np.exp(-radius / 4.0)
    profile /= profile.sum()
    return np.stack([100.0 + flux * profile + rng.normal(0, 0.2, profile.shape) for flux in fluxes]).astype(np.float32)


def write_fits(path: Path, data: np.ndarray, in_extension: bool = False) -> Path:
    """Primary HDU image, or an empty primary HDU and the image in an extension (tile-compressed for .fz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extension = fits.CompImageHDU(data) if path.suffix == ".fz" else fits.ImageHDU(data)
    hdus = [fits.PrimaryHDU(), extension] if in_extension or path.suffix == ".fz" else [fits.PrimaryHDU(data)]
    fits.HDUList(hdus).writeto(path)
    return path


def write_band_files(folder: Path, stem: str, planes: np.ndarray) -> list[Path]:
    return [write_fits(folder / f"{stem}_{band}.fits", plane) for band, plane in zip("gri", planes)]


def settings(root: Path, **options: object) -> PrepareSettings:
    return PrepareSettings(dataset="folder", root=root, size=32, **options)


def all_rows(prepared) -> list[tuple[str, np.ndarray]]:
    """(file relative to its root, stored image) for every image of every split."""
    return [(file, image) for split in ("train", "val", "test")
            for file, image in zip(prepared.table(split)["file"], prepared.images(split))]


def total_counts(prepared) -> list[int]:
    return np.sum([prepared.meta["counts"][split] for split in ("train", "val", "test")], axis=0).tolist()


def prepare_error(root: Path, **options: object) -> str:
    with pytest.raises(GalaxyDistillError) as caught:
        prepare(settings(root, **options), force=True)  # force: a set prepared earlier with other settings is replaced
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_jpeg_tree_sorted_classes_balanced_and_hidden_files_skipped(tmp_path: Path, gz1_files, workspace: Path) -> None:
    root = tmp_path / "mine"
    copy_class(gz1_files["spiral"], root / "spiral", 0, 12)
    copy_class(gz1_files["elliptical"], root / "elliptical", 0, 6)
    copy_class(gz1_files["elliptical"], root / "elliptical" / "nested", 10, 5)
    copy_class(gz1_files["edge-on"], root / "edge-on", 0, 11)
    copy_class(gz1_files["edge-on"], root / "edge-on" / ".thumbnails", 20, 5)
    (root / "spiral" / ".DS_Store").write_bytes(b"\0\1")
    (root / "spiral" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()

    prepared = prepare(settings(root, name="mine"))

    assert prepared.directory == workspace / "datasets" / "mine"
    assert prepared.class_names == ["edge-on", "elliptical", "spiral"]
    assert total_counts(prepared) == [11, 11, 11]  # the smallest class; hidden .thumbnails images do not count
    assert prepared.images("train").shape[1:] == (32, 32, 3)
    assert prepared.meta["provenance"]["channels"] == 3
    assert prepared.meta["provenance"]["formats"] == {"jpeg": 33}
    assert "fits_stretch" not in prepared.meta["provenance"]
    assert any("ignored 1 file(s)" in note and "notes.txt" in note for note in prepared.meta["notes"])
    files = [file for file, _ in all_rows(prepared)]
    assert sum(file.startswith("elliptical/nested/") for file in files) == 5
    assert not any(".thumbnails" in file for file in files)
    assert load_prepared("mine").meta["images_sha256"] == prepared.meta["images_sha256"]

    assert total_counts(prepare(settings(root, name="six", per_class=6))) == [6, 6, 6]


def test_png_webp_tiff_conversions_decode_to_the_same_pixels(tmp_path: Path, gz1_files) -> None:
    root = tmp_path / "mixed"
    originals = copy_class(gz1_files["spiral"], tmp_path / "originals", 0, 9)
    for index, source in enumerate(originals):
        suffix = (".png", ".webp", ".tiff")[index % 3]
        convert(source, root / "spiral" / f"{source.stem}{suffix}")
    copy_class(gz1_files["elliptical"], root / "elliptical", 0, 9)

    prepared = prepare(settings(root, crop_fraction=0.5))

    assert prepared.meta["provenance"]["formats"] == {"jpeg": 9, "png": 3, "tiff": 3, "webp": 3}
    converted = [(file, image) for file, image in all_rows(prepared) if file.startswith("spiral/")]
    assert len(converted) == 9
    for file, image in converted:
        original = tmp_path / "originals" / (Path(file).stem + ".jpeg")
        np.testing.assert_array_equal(image, crop_and_resize(read_rgb(original), 0.5, 32))


def test_all_greyscale_set_stays_one_channel(tmp_path: Path, gz1_files) -> None:
    root = tmp_path / "grey"
    for name in ("elliptical", "spiral"):
        for source in gz1_files[name][:6]:
            convert(source, root / name / f"{source.stem}.png", mode="L")

    prepared = prepare(settings(root))

    assert prepared.images("train").shape[1:] == (32, 32, 1)
    assert prepared.meta["provenance"]["channels"] == 1
    assert len(prepared.meta["channel_mean"]) == 1


def test_mixing_greyscale_and_colour_is_refused_naming_one_of_each(tmp_path: Path, gz1_files) -> None:
    root = tmp_path / "mix"
    copy_class(gz1_files["elliptical"], root / "elliptical", 0, 4)
    copy_class(gz1_files["spiral"], root / "spiral", 0, 3)
    grey = convert(gz1_files["spiral"][5], root / "spiral" / "grey one.png", mode="L")

    message = prepare_error(root)

    assert "greyscale and colour images are mixed" in message
    assert str(grey) in message and str(root / "elliptical") in message


def test_single_band_fits_asinh_stretch_nan_and_extension_hdu(tmp_path: Path, workspace: Path) -> None:
    root = tmp_path / "fits single"
    for k in range(4):
        write_fits(root / "compact" / f"c{k}.fits", galaxy_planes(k)[1])
    for k, suffix in enumerate((".fit", ".fits.gz", ".fz", ".FTS", ".fits")):
        write_fits(root / "extended" / f"e{k}{suffix}", galaxy_planes(10 + k, fluxes=(0.0, 2000.0, 0.0))[1], in_extension=True)
    holes = galaxy_planes(99)[1]
    holes[:3, :5] = np.nan
    holes[40, 40] = np.inf
    write_fits(root / "compact" / "holes.fits", holes)

    picture, replaced = read_fits_picture([root / "compact" / "holes.fits"])
    assert replaced == 16
    assert picture.shape == (48, 48, 1) and picture.dtype == np.uint8
    assert np.median(picture) < 40 and picture.max() == 255  # sky near black, core saturated
    assert picture[23, 23, 0] > picture[27, 30, 0] > np.median(picture) + 20  # 8 pixels out along the major axis

    prepared = prepare(settings(root, name="single", test_fraction=0.2))

    assert prepared.images("train").shape[1:] == (32, 32, 1)
    stretch = prepared.meta["provenance"]["fits_stretch"]
    assert stretch["single_band"]["stretch"] == "astropy.visualization.AsinhStretch"
    assert stretch["single_band"]["a"] == 0.1 and stretch["single_band"]["upper_percentile"] == 99.5
    stored = json.loads((workspace / "datasets" / "single" / "meta.json").read_text())
    assert stored["provenance"]["fits_stretch"] == stretch
    assert prepared.meta["provenance"]["formats"] == {"fits": 10}
    assert any("replaced 16 non-finite FITS pixel(s) (NaN or inf) in 1 image(s)" in note and "holes.fits" in note
               for note in prepared.meta["notes"])


def test_cube_and_band_files_make_the_same_lupton_colour_picture(tmp_path: Path, gz1_files) -> None:
    planes = galaxy_planes(3)
    cube = write_fits(tmp_path / "cube.fits", planes)
    bands = write_band_files(tmp_path / "bands", "obj 3", planes)

    from_cube, _ = read_fits_picture([cube])
    from_bands, _ = read_fits_picture(bands)

    np.testing.assert_array_equal(from_cube, from_bands)
    centre = from_cube[22:26, 22:26].reshape(-1, 3).mean(axis=0)
    assert centre[0] > centre[1] > centre[2]  # i brightest -> red, g faintest -> blue

    root = tmp_path / "colour"
    for k in range(4):
        write_fits(root / "red" / f"cube{k}.fits", galaxy_planes(k))
        write_band_files(root / "red", f"obj{k}", galaxy_planes(20 + k))
    copy_class(gz1_files["elliptical"], root / "sdss", 0, 8)

    prepared = prepare(settings(root))

    assert prepared.images("train").shape[1:] == (32, 32, 3)
    provenance = prepared.meta["provenance"]
    assert provenance["formats"] == {"fits": 4, "fits-band-files": 4, "jpeg": 8}
    multi = provenance["fits_stretch"]["multi_band"]
    assert multi["channels"] == {"red": "i", "green": "r", "blue": "g"}
    assert (multi["stretch"], multi["Q"]) == (0.5, 8.0)
    assert "red/obj0_{g,r,i}.fits" in {file for file, _ in all_rows(prepared)}


def test_test_root_gives_the_test_split(tmp_path: Path, gz1_files) -> None:
    root, test_root = tmp_path / "train", tmp_path / "test"
    for name in ("elliptical", "spiral"):
        copy_class(gz1_files[name], root / name, 0, 10)
        copy_class(gz1_files[name], test_root / name, 10, 3 if name == "spiral" else 5)

    prepared = prepare(settings(root, test_root=test_root, val_fraction=0.2))

    assert prepared.meta["counts"]["test"] == [5, 3]
    assert prepared.meta["counts"]["train"] == [8, 8] and prepared.meta["counts"]["val"] == [2, 2]
    assert prepared.meta["provenance"]["test_source"] == str(test_root.resolve())
    test_files = set(prepared.table("test")["file"])
    assert test_files == {f"{name}/{p.name}" for name in ("elliptical", "spiral")
                          for p in (test_root / name).iterdir()}
    train_rows = prepared.table("train")["file"]
    assert not set(train_rows) & test_files

    (test_root / "merger").mkdir()
    shutil.copy(gz1_files["spiral"][30], test_root / "merger")
    message = prepare_error(root, test_root=test_root, name="other")
    assert "class folders differ" in message and "not in --root: merger" in message
    assert "is the same folder" in prepare_error(root, test_root=root, name="same")


def test_paths_with_spaces_and_unicode(tmp_path: Path, gz1_files) -> None:
    root = tmp_path / "my galaxies ü"
    for index, source in enumerate(gz1_files["spiral"][:4]):
        convert(source, root / "spiral arms é" / f"galaxie {index} ø.png")
    (root / "edge on 銀河").mkdir()
    for index, source in enumerate(gz1_files["edge-on"][:4]):
        shutil.copy(source, root / "edge on 銀河" / f"gal {index} ✓.jpeg")
    write_fits(root / "edge on 銀河" / "fits ü.fits", galaxy_planes(1))

    prepared = prepare(settings(root, name="ünï côdé", test_fraction=0.25))

    assert prepared.class_names == ["edge on 銀河", "spiral arms é"]
    assert total_counts(prepared) == [4, 4]
    assert load_prepared("ünï côdé").images("train").shape[1:] == (32, 32, 3)


def test_bad_roots_and_class_folders(tmp_path: Path, gz1_files) -> None:
    assert "directory not found" in prepare_error(tmp_path / "nowhere")
    a_file = tmp_path / "a file"
    a_file.write_text("x")
    assert "is a file, not a directory" in prepare_error(a_file)

    flat = tmp_path / "flat"
    copy_class(gz1_files["spiral"], flat, 0, 2)
    assert "no class folders; found only files such as" in prepare_error(flat)

    root = tmp_path / "tree"
    copy_class(gz1_files["spiral"], root / "spiral", 0, 5)
    assert "only one class folder (spiral)" in prepare_error(root)

    (root / "elliptical").mkdir()
    (root / "elliptical" / ".hidden.jpeg").write_bytes(gz1_files["elliptical"][0].read_bytes())
    message = prepare_error(root)
    assert str(root / "elliptical") in message and "holds no JPEG" in message

    copy_class(gz1_files["elliptical"], root / "elliptical", 0, 3)
    message = prepare_error(root, per_class=4)
    assert str(root) in message and "4 images per class requested but elliptical has 3" in message


def test_unreadable_and_too_small_images(tmp_path: Path, gz1_files) -> None:
    root = tmp_path / "tree"
    copy_class(gz1_files["spiral"], root / "spiral", 0, 5)
    copy_class(gz1_files["elliptical"], root / "elliptical", 0, 6)
    broken = root / "spiral" / "broken.jpeg"
    broken.write_bytes(b"this is not a jpeg")

    message = prepare_error(root)
    assert str(broken) in message and "not a readable image" in message

    skipped = prepare(settings(root, skip_bad_images=True))
    assert "skipped 1 unreadable image(s)" in skipped.meta["notes"]
    assert total_counts(skipped) == [6, 5]

    broken.unlink()
    tiny = convert(gz1_files["spiral"][7], root / "spiral" / "tiny.png")
    Image.open(tiny).resize((20, 20)).save(tiny)
    message = prepare_error(root, crop_fraction=0.3)
    assert str(tiny) in message and "keeps only 6 pixel(s)" in message
    tiny.unlink()

    deep = root / "spiral" / "deep.png"
    Image.fromarray(np.full((40, 40), 4000, dtype=np.uint16)).save(deep)
    message = prepare_error(root)
    assert str(deep) in message and "more than 8 bits" in message


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")  # astropy's own note on the truncated file
def test_bad_fits_files(tmp_path: Path, gz1_files) -> None:
    root = tmp_path / "fits"
    for k in range(4):
        write_fits(root / "a" / f"a{k}.fits", galaxy_planes(k)[0])
    for k in range(3):
        write_fits(root / "b" / f"b{k}.fits", galaxy_planes(5 + k)[0])

    table_only = root / "b" / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.ones(3))])]).writeto(table_only)
    assert str(table_only) in (m := prepare_error(root, per_class=4)) and "no HDU holds image data" in m
    table_only.unlink()

    four_planes = write_fits(root / "b" / "four.fits", np.ones((4, 16, 16), dtype=np.float32))
    assert str(four_planes) in (m := prepare_error(root, per_class=4)) and "shape (4, 16, 16)" in m
    four_planes.unlink()

    spectrum = write_fits(root / "b" / "spectrum.fits", np.ones(50, dtype=np.float32))
    assert str(spectrum) in (m := prepare_error(root, per_class=4)) and "shape (50,)" in m
    spectrum.unlink()

    all_nan = write_fits(root / "b" / "blank.fits", np.full((16, 16), np.nan, dtype=np.float32))
    assert str(all_nan) in (m := prepare_error(root, per_class=4)) and "no finite pixel" in m
    all_nan.unlink()

    truncated = root / "b" / "cut.fits"
    truncated.write_bytes((root / "b" / "b0.fits").read_bytes()[:1000])
    assert str(truncated) in prepare_error(root, per_class=4)
    truncated.unlink()

    bands = write_band_files(root / "b", "pair", galaxy_planes(9))
    bands[2].unlink()
    message = prepare_error(root)
    assert "band group 'pair' lacks the i band" in message and str(bands[0]) in message


def test_cli_prepare_and_show(tmp_path: Path, gz1_files, workspace: Path) -> None:
    root = tmp_path / "cli tree"
    copy_class(gz1_files["elliptical"], root / "elliptical", 0, 6)
    copy_class(gz1_files["edge-on"], root / "edge-on", 0, 6)
    command = str(Path(sys.executable).parent / "galaxy-distill")
    env = {**os.environ, "GALAXY_DISTILL_HOME": str(workspace)}

    made = subprocess.run([command, "data", "prepare", "folder", "--root", str(root), "--name", "mine", "--size", "32"],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "prepared mine" in made.stdout

    shown = subprocess.run([command, "data", "show", "mine"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "images 32x32x3" in shown.stdout and "edge-on" in shown.stdout and "elliptical" in shown.stdout
    assert (workspace / "datasets" / "mine" / "examples.png").is_file()

    failed = subprocess.run([command, "data", "prepare", "folder", "--root", str(tmp_path / "nowhere")],
                            check=False, capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.strip().count("\n") == 0 and "directory not found" in failed.stderr


def test_a_folder_dataset_goes_through_experts_distillation_and_evaluation(tmp_path: Path, gz1_files, workspace: Path) -> None:
    """A user's own class folders (JPEG and FITS mixed) work by name in every later command."""
    root = tmp_path / "mine"
    for name, files in gz1_files.items():
        copy_class(files, root / name, 0, 14)
        write_fits(root / name / "extra.fits", galaxy_planes(len(name)))
    prepare(settings(root, name="mine"))
    env = {**os.environ, "GALAXY_DISTILL_HOME": str(workspace)}
    command = shutil.which("galaxy-distill") or "galaxy-distill"
    steps = [
        ["experts", "--dataset", "mine", "--num-experts", "2", "--epochs", "3", "--width", "8", "--batch-size", "8", "--device", "cpu"],
        ["distill", "--dataset", "mine", "--experts", str(workspace / "experts" / "mine"), "--ipc", "1", "--syn-steps", "4",
         "--max-start-epoch", "2", "--iterations", "4", "--eval-every", "2", "--eval-epochs", "5", "--device", "cpu"],
        ["evaluate", "--run", str(workspace / "runs" / "mine-stm-ipc1"), "--baselines", "random", "--networks", "1",
         "--epochs", "5", "--device", "cpu"],
    ]
    for step in steps:
        done = subprocess.run([command, *step], check=False, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    evaluation = json.loads((workspace / "runs" / "mine-stm-ipc1" / "evaluation.json").read_text())
    assert {entry["method"] for entry in evaluation["results"]} == {"stm", "random"}
    assert set(evaluation["results"][0]["per_class_accuracy"]) == {"edge-on", "elliptical", "spiral"}
