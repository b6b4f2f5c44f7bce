"""bench/carry_dataset.py: a prepared dataset packed as WebP grids unpacks bit-identical in another workspace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from galaxy_distill.data import PrepareSettings, load_prepared, prepare

CARRY = Path(__file__).resolve().parents[1] / "bench" / "carry_dataset.py"


def run_carry(*args: str, home: Path) -> subprocess.CompletedProcess:
    environment = {"GALAXY_DISTILL_HOME": str(home), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(CARRY), *args], env=environment, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("zca", [False, True])
def test_pack_then_unpack_elsewhere_reproduces_the_prepared_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   zca: bool) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(here))
    original = prepare(PrepareSettings(dataset="simzoo", per_class=16, size=24, workers=1, name="tiny", zca=zca))
    packed = tmp_path / "packed"
    assert run_carry("pack", "tiny", str(packed), home=here).returncode == 0
    assert sorted(p.name for p in packed.glob("train_images_*.webp")) == ["train_images_0000.webp", "train_images_0001.webp"]
    unpacked = run_carry("unpack", str(packed), home=there)
    assert unpacked.returncode == 0, unpacked.stderr
    copy = load_prepared(there / "datasets" / "tiny")
    assert (there / "datasets" / "tiny" / "meta.json").read_bytes() == (original.directory / "meta.json").read_bytes()
    assert sorted(copy.arrays) == sorted(original.arrays)
    for key, array in original.arrays.items():
        np.testing.assert_array_equal(copy.arrays[key], array)


def test_unpacking_altered_pixels_is_refused_and_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(here))
    prepare(PrepareSettings(dataset="simzoo", per_class=10, size=16, workers=1, name="tiny"))
    packed = tmp_path / "packed"
    assert run_carry("pack", "tiny", str(packed), home=here).returncode == 0
    labels = np.load(packed / "train_labels.npy")
    np.save(packed / "train_labels.npy", (labels + 1) % 9)
    result = run_carry("unpack", str(packed), home=there)
    assert result.returncode != 0
    assert "differ from the prepared original" in result.stderr
    assert not (there / "datasets" / "tiny" / "meta.json").exists()
