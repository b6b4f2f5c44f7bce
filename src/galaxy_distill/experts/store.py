"""The trajectory store: one safetensors file per expert plus a JSON manifest.

An expert file holds `trajectory`, shape (epochs + 1, P): the flat parameters at
initialisation and after every epoch. Slices are read lazily (memory-mapped), so a
store larger than RAM still works.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.models.spec import ModelSpec
from galaxy_distill.atomic_io import read_json, sha256_file

MANIFEST_FILE = "experts.json"


def expert_file_name(expert_id: int) -> str:
    return f"expert_{expert_id:04d}.safetensors"


def parse_manifest(path: Path, manifest: Any) -> tuple[list[dict[str, Any]], ModelSpec, int, int]:
    """(experts sorted by id, model, parameter count, epochs) of a manifest, or an error naming what is wrong."""

    def invalid(problem: str) -> GalaxyDistillError:
        return GalaxyDistillError(f"{path}: not a valid expert manifest ({problem})")

    if not isinstance(manifest, dict):
        raise invalid(f"expected a JSON object, got {type(manifest).__name__}")
    missing = [key for key in ("settings", "dataset", "model", "param_count", "experts") if key not in manifest]
    if missing:
        raise invalid(f"missing {', '.join(missing)}")
    epochs = manifest["settings"].get("epochs") if isinstance(manifest["settings"], dict) else None
    if not isinstance(epochs, int) or epochs < 1:
        raise invalid("settings.epochs must be a positive integer")
    if not isinstance(manifest["dataset"], dict) or not isinstance(manifest["dataset"].get("images_sha256"), str):
        raise invalid("dataset.images_sha256 missing")
    try:
        model_spec = ModelSpec.model_validate(manifest["model"])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'model'}: {err['msg']}" for err in exc.errors())
        raise invalid(f"model: {problems}") from None
    param_count = manifest["param_count"]
    if not isinstance(param_count, int) or param_count < 1:
        raise invalid("param_count must be a positive integer")
    entries = manifest["experts"]
    if not isinstance(entries, list):
        raise invalid("experts must be a list")
    for position, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("sha256"), str) and isinstance(entry.get("test_accuracy"), list)):
            raise invalid(f"experts[{position}] needs id, file, sha256 and test_accuracy")
        if Path(entry["file"]).name != entry["file"]:
            raise invalid(f"experts[{position}].file must be a file name inside the store, not {entry['file']!r}")
    ids = [entry["id"] for entry in entries]
    if len(set(ids)) != len(ids):
        raise invalid("expert ids repeat")
    return sorted(entries, key=lambda entry: entry["id"]), model_spec, param_count, epochs


class ExpertStore:
    def __init__(self, directory: str | Path, verify: bool = True) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise GalaxyDistillError(
                f"{self.directory}: no {MANIFEST_FILE}; expected an expert store written by `galaxy-distill experts`"
            )
        self.manifest: dict[str, Any] = read_json(manifest_path)
        self.experts, self.model_spec, self.param_count, self.epochs = parse_manifest(manifest_path, self.manifest)
        if not self.experts:
            raise GalaxyDistillError(f"{manifest_path}: lists no finished experts")
        if verify:
            for entry in self.experts:
                self._check_file(entry)
        self._open = lru_cache(maxsize=64)(self._open_uncached)

    def _check_file(self, entry: dict[str, Any]) -> None:
        path = self.directory / entry["file"]
        if not path.is_file():
            raise GalaxyDistillError(f"{path}: expert file listed in {MANIFEST_FILE} is missing")
        if sha256_file(path) != entry["sha256"]:
            raise GalaxyDistillError(f"{path}: checksum mismatch (corrupt or changed expert file)")
        try:
            with safe_open(str(path), framework="pt") as handle:
                trajectory = handle.get_slice("trajectory")
                shape, dtype = trajectory.get_shape(), trajectory.get_dtype()
        except (SafetensorError, OSError, KeyError) as exc:
            raise GalaxyDistillError(f"{path}: not a readable expert file ({exc})") from None
        if dtype != "F32":
            raise GalaxyDistillError(f"{path}: trajectory holds {dtype} values, expected F32 (float32)")
        if list(shape) != [self.epochs + 1, self.param_count]:
            raise GalaxyDistillError(
                f"{path}: trajectory has shape {list(shape)}, expected [{self.epochs + 1}, {self.param_count}] "
                f"({self.epochs} epochs + initialisation, {self.param_count} parameters)"
            )

    def _open_uncached(self, index: int) -> Any:
        return safe_open(str(self.directory / self.experts[index]["file"]), framework="pt")

    def __len__(self) -> int:
        return len(self.experts)

    def parameters_at(self, index: int, epoch: int) -> torch.Tensor:
        """Flat parameters of expert number `index` (0-based position) after `epoch` epochs."""
        if not 0 <= epoch <= self.epochs:
            raise GalaxyDistillError(f"{self.directory}: epoch {epoch} outside the stored 0..{self.epochs}")
        return self._open(index).get_slice("trajectory")[epoch : epoch + 1][0]

    def test_accuracy(self) -> list[list[float | None]]:
        """Each expert's test accuracy after each epoch; None for an epoch not scored (the last always is)."""
        return [entry["test_accuracy"] for entry in self.experts]
