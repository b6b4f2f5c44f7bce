"""CIFAR-10 (the real set, via the shared converter) and CIFAR-100 (fixture files) in their python layouts."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shared_paths import CIFAR10_SCRIPT

from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.cifar import build_cifar10, build_cifar100, read_batch
from galaxy_distill.data.registry import prepare
from galaxy_distill.errors import GalaxyDistillError

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


pytestmark = pytest.mark.usefixtures("workspace")


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official cifar-10-batches-py layout, written once per session by the shared converter (~6 s)."""
    root = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(CIFAR10_SCRIPT), str(root)], check=True, capture_output=True)
    return root


def cifar_settings(dataset: str, root: Path, **changes: object) -> PrepareSettings:
    values = {"dataset": dataset, "root": root, "size": 32, "crop_fraction": 1.0, **changes}
    return PrepareSettings(**values)


def linked_copy(cifar10_root: Path, target: Path, leave_out: str | None = None) -> Path:
    """A cifar-10-batches-py folder of links to the real files, without `leave_out`."""
    folder = target / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in CIFAR10_FILES:
        if name != leave_out:
            (folder / name).symlink_to(cifar10_root / "cifar-10-batches-py" / name)
    return folder


def write_pickle(path: Path, payload: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    """cifar-100-python/{train,test,meta}: 3 train and 1 test image per fine class; pixel values encode the index."""
    folder = tmp_path / "c100" / "cifar-100-python"
    rng = np.random.default_rng(0)
    for name, per_class in (("train", 3), ("test", 1)):
        fine = np.repeat(np.arange(100), per_class)
        order = rng.permutation(len(fine))
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        write_pickle(folder / name, {
            "filenames": [f"img_{i}.png" for i in range(len(fine))], "batch_label": f"{name} batch",
            "fine_labels": fine[order].tolist(), "coarse_labels": (fine[order] // 5).tolist(), "data": data,
        })
    write_pickle(folder / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)],
                                   "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    return tmp_path / "c100"


def test_cifar10_keeps_the_official_order_and_statistics(cifar10_root: Path, tmp_path: Path) -> None:
    # per_class None keeps every image; test_fraction 0 is fine because CIFAR brings its own test split.
    prepared = prepare(cifar_settings("cifar10", cifar10_root, val_fraction=0.0), out_dir=tmp_path / "c10")
    assert prepared.meta["settings"]["per_class"] is None
    assert prepared.meta["settings"]["test_fraction"] == 0.0
    assert prepared.labels("train")[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert np.round(prepared.meta["channel_mean"], 4).tolist() == [0.4914, 0.4822, 0.4465]
    assert prepared.meta["counts"] == {"train": [5000] * 10, "val": [0] * 10, "test": [1000] * 10}
    assert prepared.class_names[:3] == ["airplane", "automobile", "bird"]
    assert prepared.images("train").shape == (50000, 32, 32, 3)


def test_cifar10_per_class_subset_is_balanced_seeded_and_in_order(cifar10_root: Path) -> None:
    source = build_cifar10(cifar_settings("cifar10", cifar10_root, per_class=7))
    again = build_cifar10(cifar_settings("cifar10", cifar10_root, per_class=7))
    other = build_cifar10(cifar_settings("cifar10", cifar10_root, per_class=7, seed=1))
    assert np.bincount(source.labels).tolist() == [7] * 10
    np.testing.assert_array_equal(source.images, again.images)
    assert not np.array_equal(source.images, other.images)
    assert source.test is not None and len(source.test.labels) == 10000


def test_cifar10_more_per_class_than_exist_is_an_error(cifar10_root: Path) -> None:
    with pytest.raises(GalaxyDistillError, match=r"6000 images per class requested but airplane has 5000, automobile has 5000"):
        build_cifar10(cifar_settings("cifar10", cifar10_root, per_class=6000))


def test_cifar_needs_a_root_and_native_size(cifar10_root: Path) -> None:
    with pytest.raises(GalaxyDistillError, match=r"pass --root DIR where DIR holds cifar-10-batches-py/"):
        build_cifar10(cifar_settings("cifar10", None))
    with pytest.raises(GalaxyDistillError, match="native 32x32"):
        build_cifar10(cifar_settings("cifar10", cifar10_root, size=16))


def test_cifar10_missing_directory_names_it_and_the_layout(tmp_path: Path) -> None:
    with pytest.raises(GalaxyDistillError, match=r"nowhere: directory not found; expected cifar-10-batches-py/ with data_batch_1"):
        build_cifar10(cifar_settings("cifar10", tmp_path / "nowhere"))


def test_cifar10_missing_batch_file_is_named(cifar10_root: Path, tmp_path: Path) -> None:
    folder = linked_copy(cifar10_root, tmp_path, leave_out="data_batch_3")
    with pytest.raises(GalaxyDistillError, match=rf"{folder / 'data_batch_3'}: file not found; expected cifar-10-batches-py/"):
        build_cifar10(cifar_settings("cifar10", tmp_path))


def test_cifar10_truncated_batch_is_named(cifar10_root: Path, tmp_path: Path) -> None:
    folder = linked_copy(cifar10_root, tmp_path, leave_out="data_batch_2")
    whole = (cifar10_root / "cifar-10-batches-py" / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(GalaxyDistillError, match=rf"{folder / 'data_batch_2'}: not a valid CIFAR batch file"):
        build_cifar10(cifar_settings("cifar10", tmp_path))


def test_cifar100_layout_is_read_channel_major(cifar100_root: Path) -> None:
    source = build_cifar100(cifar_settings("cifar100", cifar100_root))
    entry = read_batch(cifar100_root / "cifar-100-python" / "train")
    assert source.class_names[:2] == ["fine_0", "fine_1"] and len(source.class_names) == 100
    np.testing.assert_array_equal(source.labels, entry["fine_labels"])
    first = entry["data"][0]
    np.testing.assert_array_equal(source.images[0, 0, 0], [first[0], first[1024], first[2048]])
    np.testing.assert_array_equal(source.images[0, 1, 2], [first[34], first[1024 + 34], first[2048 + 34]])
    assert source.test is not None and source.test.images.shape == (100, 32, 32, 3)


def test_cifar100_prepares_through_the_registry(cifar100_root: Path, tmp_path: Path) -> None:
    prepared = prepare(PrepareSettings(dataset="cifar100", root=cifar100_root, val_fraction=1 / 3), out_dir=tmp_path / "c100")
    assert prepared.meta["counts"] == {"train": [2] * 100, "val": [1] * 100, "test": [1] * 100}


def test_cifar100_meta_without_class_names(cifar100_root: Path) -> None:
    meta = write_pickle(cifar100_root / "cifar-100-python" / "meta", {"coarse_label_names": ["a"] * 20})
    with pytest.raises(GalaxyDistillError, match=rf"{meta}: expected 'fine_label_names', a list of 100 class names"):
        build_cifar100(cifar_settings("cifar100", cifar100_root))


def test_cifar100_wrong_data_shape(cifar100_root: Path) -> None:
    train = write_pickle(cifar100_root / "cifar-100-python" / "train",
                         {"data": np.zeros((4, 100), dtype=np.uint8), "fine_labels": [0, 1, 2, 3]})
    with pytest.raises(GalaxyDistillError, match=rf"{train}: 'data' must be N x 3072 uint8"):
        build_cifar100(cifar_settings("cifar100", cifar100_root))


class RunsACommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_restricted_unpickler_refuses_code(cifar100_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "it-ran"
    train = write_pickle(cifar100_root / "cifar-100-python" / "train", {"data": RunsACommand(f"touch {marker}")})
    with pytest.raises(GalaxyDistillError, match=rf"{train}: not a valid CIFAR batch file \(refusing to load posix\.system"):
        build_cifar100(cifar_settings("cifar100", cifar100_root))
    assert not marker.exists()
