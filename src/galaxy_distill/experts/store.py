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
from safetensors import SafetensorError, safe_open

from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.models.spec import ModelSpec
from galaxy_distill.store import read_json, sha256_file

MANIFEST_FILE = "experts.json"


def expert_file_name(expert_id: int) -> str:
    return f"expert_{expert_id:04d}.safetensors"


class ExpertStore:
    def __init__(self, directory: str | Path, verify: bool = True) -> None:
        self.directory = Path(directory)
        if not (self.directory / MANIFEST_FILE).is_file():
            raise GalaxyDistillError(
                f"{self.directory}: no {MANIFEST_FILE}; expected an expert store written by `galaxy-distill experts`"
            )
        self.manifest: dict[str, Any] = read_json(self.directory / MANIFEST_FILE)
        self.experts: list[dict[str, Any]] = sorted(self.manifest.get("experts", []), key=lambda e: e["id"])
        if not self.experts:
            raise GalaxyDistillError(f"{self.directory / MANIFEST_FILE}: lists no finished experts")
        self.model_spec = ModelSpec.model_validate(self.manifest["model"])
        self.param_count = int(self.manifest["param_count"])
        self.epochs = int(self.manifest["settings"]["epochs"])
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
                shape = handle.get_slice("trajectory").get_shape()
        except (SafetensorError, OSError, KeyError) as exc:
            raise GalaxyDistillError(f"{path}: not a readable expert file ({exc})") from None
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

    def test_accuracy(self) -> list[list[float]]:
        return [entry["test_accuracy"] for entry in self.experts]
