"""Everything a report draws on, read from a distillation run directory.

Only the settings, the synthetic set and its dataset are required; the other files
(metrics, STM stage events, snapshots, evaluation, the expert store) may be missing, and
each is then None or empty so that the report can say so in place of the figure.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from galaxy_distill.data.registry import PreparedDataset, load_prepared
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.rundir import RunDir, check_synthetic, load_synthetic
from galaxy_distill.atomic_io import read_json
METRIC_COLUMNS = ("iteration", "loss", "probe_loss", "start_epoch", "cap", "step_size", "pixel_lr", "val_accuracy",
                  "test_accuracy", "seconds")


@dataclass
class RunContents:
    directory: Path
    settings: dict[str, Any]
    dataset: PreparedDataset
    images: torch.Tensor
    """The synthetic set as the network takes it (normalised, maybe ZCA-whitened), float NCHW."""
    labels: torch.Tensor
    step_size: float
    metrics: list[dict[str, float | None]]
    """Rows of metrics.csv (empty when the file is missing)."""
    events: list[dict[str, Any]] | None
    """STM stage events of stages.json; None when the file is missing."""
    snapshots: list[tuple[int, Path]]
    """(iteration, PNG) of the prototype grids saved during distillation, in iteration order."""
    evaluation: dict[str, Any] | None
    store: ExpertStore | None
    store_problem: str | None
    """Why the expert store could not be opened (then store is None)."""

    @property
    def method(self) -> str:
        return str(self.settings.get("method", "unknown"))


def _number(value: str, path: Path, row: int, column: str) -> float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise GalaxyDistillError(f"{path}: row {row}, column {column}: '{value}' is not a number") from None
    return number if math.isfinite(number) else None


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """metrics.csv as rows of numbers (None for empty cells); [] when the file is missing."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in ("iteration", "loss") if column not in (reader.fieldnames or [])]
        if missing:
            raise GalaxyDistillError(f"{path}: missing column(s) {', '.join(missing)}")
        return [{column: _number(row.get(column) or "", path, number, column) for column in METRIC_COLUMNS}
                for number, row in enumerate(reader, start=2)]


def read_events(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    events = read_json(path)
    if not isinstance(events, list) or not all(isinstance(e, dict) and {"iteration", "kind"} <= e.keys() for e in events):
        raise GalaxyDistillError(f"{path}: expected a list of events with 'iteration' and 'kind'")
    return events


def read_evaluation(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    evaluation = read_json(path)
    results = evaluation.get("results") if isinstance(evaluation, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) and {"method", "acc_mean", "acc_std"} <= r.keys()
                                                 for r in results):
        raise GalaxyDistillError(f"{path}: expected {{'results': [...]}} with method, acc_mean and acc_std in each result")
    return evaluation


def _open_store(location: Any) -> tuple[ExpertStore | None, str | None]:
    if not location:
        return None, "the run's settings name no expert store"
    try:
        return ExpertStore(location, verify=False), None
    except GalaxyDistillError as exc:
        return None, str(exc)


def load_run(run_dir: Path) -> RunContents:
    """Read a run directory written by `galaxy-distill distill` (and maybe `galaxy-distill evaluate`)."""
    run = RunDir(run_dir)
    settings = run.read_settings(DistillSettings)
    images, labels, step_size, class_names = load_synthetic(run_dir)
    dataset = load_prepared(settings["dataset"])
    check_synthetic(run_dir, images, labels, class_names, dataset)
    store, store_problem = _open_store(settings.get("experts"))
    if store is not None and store.model_spec.num_classes != dataset.num_classes:
        store, store_problem = None, f"{store.directory}: experts classify {store.model_spec.num_classes} classes, not {dataset.num_classes}"
    return RunContents(
        directory=run_dir, settings=settings, dataset=dataset, images=images.float(), labels=labels.long(),
        step_size=step_size, metrics=read_metrics(run.metrics), events=read_events(run.stages),
        snapshots=run.snapshot_files(), evaluation=read_evaluation(run.evaluation),
        store=store, store_problem=store_problem,
    )
