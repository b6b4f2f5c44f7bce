"""Pack a prepared dataset compactly (lossless WebP grids) to carry it to another machine, and unpack it there.

    python bench/carry_dataset.py pack gz1-128 .carry/gz1-128        # here, from the workspace
    python bench/carry_dataset.py unpack .carry/gz1-128              # there, into its workspace

The GPU machine takes at most 64 MiB per call; a prepared 128-px galaxy set is ~125 MB of
raw uint8 but ~33 MB as lossless WebP. Unpacking rewrites images.safetensors with the same
arrays and refuses to finish unless its SHA-256 equals the one recorded in meta.json, so the
copy is bit-identical to the prepared original.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from galaxy_distill.data.registry import (
    IMAGES_FILE,
    META_FILE,
    dataset_dir,
    load_prepared,
)
from galaxy_distill.atomic_io import read_json, save_arrays

GRID_SIDE = 10  # images per grid row and column: 100 images a WebP file


def _grid(images: np.ndarray) -> np.ndarray:
    count, height, width, channels = images.shape
    padded = np.zeros((GRID_SIDE * GRID_SIDE, height, width, channels), np.uint8)
    padded[:count] = images
    return padded.reshape(GRID_SIDE, GRID_SIDE, height, width, channels).transpose(0, 2, 1, 3, 4).reshape(
        GRID_SIDE * height, GRID_SIDE * width, channels)


def _ungrid(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    channels = grid.shape[2]
    return grid.reshape(GRID_SIDE, height, GRID_SIDE, width, channels).transpose(0, 2, 1, 3, 4).reshape(
        -1, height, width, channels)


def pack(name: str, out: Path) -> None:
    dataset = load_prepared(name)
    out.mkdir(parents=True, exist_ok=True)
    for path in dataset.directory.iterdir():
        if path.suffix in (".json", ".csv"):
            shutil.copy2(path, out / path.name)
    shapes = {}
    for key, array in dataset.arrays.items():
        if key.endswith("_images") and array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] in (1, 3):
            shapes[key] = list(array.shape)
            per_grid = GRID_SIDE * GRID_SIDE
            for index, start in enumerate(range(0, len(array), per_grid)):
                grid = _grid(array[start : start + per_grid])
                buffer = io.BytesIO()
                Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(
                    buffer, format="WEBP", lossless=True, quality=100, method=6)
                (out / f"{key}_{index:04d}.webp").write_bytes(buffer.getvalue())
        else:
            np.save(out / f"{key}.npy", array, allow_pickle=False)
    np.save(out / "image_shapes.npy", np.array([[*shape] for shape in shapes.values()], np.int64), allow_pickle=False)
    (out / "image_keys.txt").write_text("\n".join(shapes) + "\n")
    print(f"packed {name}: {sum(p.stat().st_size for p in out.iterdir()) / 2**20:.1f} MiB in {out}")


def unpack(source: Path) -> Path:
    meta = read_json(source / META_FILE)
    arrays: dict[str, np.ndarray] = {}
    keys = (source / "image_keys.txt").read_text().split()
    for key, (count, height, width, channels) in zip(keys, np.load(source / "image_shapes.npy"), strict=True):
        parts = []
        for path in sorted(source.glob(f"{key}_*.webp")):
            grid = np.asarray(Image.open(path).convert("L" if channels == 1 else "RGB"))
            parts.append(_ungrid(grid.reshape(*grid.shape[:2], channels), height, width))
        arrays[key] = np.ascontiguousarray(np.concatenate(parts)[:count])
    for path in source.glob("*.npy"):
        if path.name != "image_shapes.npy":
            arrays[path.stem] = np.load(path, allow_pickle=False)
    target = dataset_dir(meta["name"])
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix == ".csv":
            shutil.copy2(path, target / path.name)
    ordered = {key: arrays[key] for key in sorted(arrays)}
    digest = save_arrays(target / IMAGES_FILE, ordered)
    if digest != meta["images_sha256"]:
        (target / IMAGES_FILE).unlink()
        raise SystemExit(f"{source}: unpacked images differ from the prepared original (sha256 {digest} != {meta['images_sha256']})")
    shutil.copy2(source / META_FILE, target / META_FILE)
    print(f"unpacked {meta['name']} into {target} (sha256 matches)")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("name")
    packing.add_argument("out", type=Path)
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("source", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.name, args.out)
    else:
        unpack(args.source)


if __name__ == "__main__":
    main()
