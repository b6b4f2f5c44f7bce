"""A distillation run directory: the one place that names its files, checks a resume and reads or writes the set.

    RUN/settings.json, settings.yaml    the resolved settings; resuming needs the same
    RUN/checkpoint.json                 the newest resumable state, naming its tensor file and that file's SHA-256
    RUN/checkpoint.prev.json            the one before, kept until the newest is intact
    RUN/checkpoint-NNNNNNNN.safetensors their tensors
    RUN/metrics.csv                     one row per iteration
    RUN/stages.json                     STM stage, fine-tuning and numerical-fault events
    RUN/snapshots/iter_NNNNNN.png       the images as they evolve
    RUN/tensorboard/                    with --tensorboard
    RUN/synthetic.safetensors           the distilled set: images, labels, learned step size (+ class names), the
                                        best on the validation split where the run evaluated, else the last
    RUN/final.safetensors               the last iteration's set, in the same format
    RUN/prototypes.png                  that set as a class grid
    RUN/evaluation.json                 written by `galaxy-distill evaluate --run RUN`
    RUN/evaluation-final.json           written by `galaxy-distill evaluate --run RUN --selection final`
    RUN/report/                         written by `galaxy-distill report RUN`
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from galaxy_distill.settings import Settings, settings_differences
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.atomic_io import read_json, save_tensors, write_json, write_yaml

if TYPE_CHECKING:
    from galaxy_distill.data.registry import PreparedDataset

SNAPSHOT_PATTERN = re.compile(r"iter_(\d+)\.png")
CHECKPOINT_TENSOR_PATTERN = "checkpoint-*.safetensors"
STARTED_RUN_FILES = frozenset({"settings.json", "settings.yaml", "snapshots", "stages.json", "tensorboard"})
"""What a distillation writes before its first checkpoint; a directory of these alone holds no work worth keeping."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def settings(self) -> Path:
        return self.path / "settings.json"

    @property
    def settings_yaml(self) -> Path:
        return self.path / "settings.yaml"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.json"

    @property
    def previous_checkpoint(self) -> Path:
        return self.path / "checkpoint.prev.json"

    def checkpoint_tensors(self, iteration: int) -> Path:
        return self.path / f"checkpoint-{iteration:08d}.safetensors"

    def checkpoint_tensor_files(self) -> list[Path]:
        return sorted(self.path.glob(CHECKPOINT_TENSOR_PATTERN))

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def stages(self) -> Path:
        return self.path / "stages.json"

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    def snapshot(self, iteration: int) -> Path:
        return self.snapshots / f"iter_{iteration:06d}.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def synthetic(self) -> Path:
        return self.path / "synthetic.safetensors"

    @property
    def final(self) -> Path:
        return self.path / "final.safetensors"

    @property
    def prototypes(self) -> Path:
        return self.path / "prototypes.png"

    @property
    def evaluation(self) -> Path:
        return self.path / "evaluation.json"

    @property
    def final_evaluation(self) -> Path:
        return self.path / "evaluation-final.json"

    @property
    def report(self) -> Path:
        return self.path / "report"

    def is_run(self) -> bool:
        """Whether a distillation has started here (its settings are written first)."""
        return self.settings.is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file() or self.previous_checkpoint.is_file()

    def is_unstarted(self) -> bool:
        """Whether the directory holds only what a run that never reached a checkpoint writes."""
        return (self.path.is_dir() and self.is_run() and not self.has_checkpoint()
                and all(entry.name in STARTED_RUN_FILES for entry in self.path.iterdir()))

    def snapshot_files(self) -> list[tuple[int, Path]]:
        """(iteration, PNG) of the saved snapshots, in iteration order."""
        if not self.snapshots.is_dir():
            return []
        found = [(int(match.group(1)), path) for path in self.snapshots.iterdir()
                 if (match := SNAPSHOT_PATTERN.fullmatch(path.name))]
        return sorted(found)

    def read_settings(self, settings_type: type[Settings]) -> dict[str, Any]:
        """The run's stored settings (of `settings_type`, the distillation's), checked to be a JSON object naming its
        dataset; earlier names read as today's."""
        if not self.is_run():
            raise GalaxyDistillError(f"{self.path}: no settings.json here; expected a run directory written by "
                                     "`galaxy-distill distill`")
        stored = read_json(self.settings)
        if not isinstance(stored, dict) or "dataset" not in stored:
            raise GalaxyDistillError(f"{self.settings}: expected the run's settings with a 'dataset' entry")
        return settings_type.upgrade_names(stored, str(self.settings))

    def start(self, settings_type: type[Settings], resolved: dict[str, Any], write: bool) -> None:
        """Create the directory, refuse settings that differ from a run already here, and (if `write`) store them."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.is_run():
            differences = settings_differences(settings_type, read_json(self.settings), resolved, str(self.settings))
            if differences:
                raise GalaxyDistillError(f"{self.path}: holds a run with other settings ({'; '.join(differences)}); "
                                         "resume with the same settings or choose another --out")
        if write:
            write_json(self.settings, resolved)
            write_yaml(self.settings_yaml, resolved)

    def save_synthetic(self, images: torch.Tensor, labels: torch.Tensor, step_size: float, class_names: list[str],
                       dataset_name: str, final: bool = False) -> None:
        """Write the kept set (synthetic.safetensors) or, with `final`, the last iteration's (final.safetensors)."""
        save_tensors(self.final if final else self.synthetic,
                     {"images": images, "labels": labels, "step_size": torch.tensor(step_size)},
                     metadata={"class_names": json.dumps(class_names), "dataset": dataset_name})


def run_directories(path: Path) -> list[Path]:
    """The distillation runs under `path`: the run itself, or the finished runs directly inside it (e.g. the demo's)."""
    if not path.is_dir():
        raise GalaxyDistillError(f"{path}: directory not found; pass a run directory written by `galaxy-distill distill`")
    if RunDir(path).is_run():
        return [path]
    finished = [child for child in sorted(path.iterdir()) if RunDir(child).is_run() and RunDir(child).synthetic.is_file()]
    if not finished:
        raise GalaxyDistillError(f"{path}: neither a run directory (no settings.json) nor a directory of runs; pass a "
                                 "directory written by `galaxy-distill distill`")
    return finished


def synthetic_file(path: Path, final: bool = False) -> Path:
    """The synthetic set's file: `path` itself, or in it when it is a run directory synthetic.safetensors (the kept
    set) or, with `final`, final.safetensors (the last iteration's)."""
    if not path.is_dir():
        if final:
            raise GalaxyDistillError(f"{path}: the final set is chosen in a run directory; pass the directory")
        return path
    return RunDir(path).final if final else RunDir(path).synthetic


def load_synthetic(path: Path, final: bool = False) -> tuple[torch.Tensor, torch.Tensor, float, list[str]]:
    """(images, labels, learned step size, class names) from a run directory or a set's file, checked."""
    from safetensors import SafetensorError, safe_open

    file = synthetic_file(path, final)
    if not file.is_file():
        raise GalaxyDistillError(f"{file}: no synthetic set here; run `galaxy-distill distill` first")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise GalaxyDistillError(f"{file}: not a readable synthetic set ({exc})") from None
    missing = [key for key in ("images", "labels", "step_size") if key not in tensors]
    if missing:
        raise GalaxyDistillError(f"{file}: missing tensor(s) {', '.join(missing)}")
    images, labels, step_size = tensors["images"], tensors["labels"], tensors["step_size"]
    if images.dim() != 4 or not images.is_floating_point():
        raise GalaxyDistillError(f"{file}: images must be a float N x C x H x W tensor, got {images.dtype} {list(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise GalaxyDistillError(f"{file}: labels must be {len(images)} integers, got {labels.dtype} {list(labels.shape)}")
    if not torch.isfinite(images).all():
        raise GalaxyDistillError(f"{file}: images contain NaN or infinite values")
    if step_size.numel() != 1 or not 0 < float(step_size) < math.inf:
        raise GalaxyDistillError(f"{file}: step_size must be one positive finite number, got {step_size.flatten()[:3].tolist()}")
    try:
        class_names = json.loads(metadata.get("class_names", "[]"))
    except json.JSONDecodeError:
        class_names = None
    if not isinstance(class_names, list) or not all(isinstance(name, str) for name in class_names):
        raise GalaxyDistillError(f"{file}: metadata class_names must be a JSON list of names")
    return images.float(), labels.long(), float(step_size), class_names


def check_synthetic(where: Path, images: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                    dataset: PreparedDataset) -> None:
    """That a synthetic set (from load_synthetic) fits `dataset`: its classes, image shape and label range."""
    if class_names and class_names != dataset.class_names:
        raise GalaxyDistillError(f"{where}: synthetic set has classes {class_names}, dataset has {dataset.class_names}")
    if tuple(images.shape[1:]) != dataset.image_shape:
        raise GalaxyDistillError(f"{where}: synthetic images are {list(images.shape[1:])} (C, H, W), "
                                 f"dataset '{dataset.name}' has {list(dataset.image_shape)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < dataset.num_classes:
        raise GalaxyDistillError(f"{where}: synthetic labels must lie in 0..{dataset.num_classes - 1}")
