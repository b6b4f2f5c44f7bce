"""`galaxy-distill evaluate`: accuracy of a distilled set and of the baselines, in one results file.

Each entry of `results` carries dataset, resolution, ipc, method, architecture, acc_mean,
acc_std, n_eval, selection, wall_s (the schema of bench/results), plus per-class accuracy
and the summed confusion matrix.

Each finished network's accuracies are written at once (atomically) to a partial-results
file beside the default output; `--resume` reuses those made with the same settings and
inputs and trains only the missing networks, which are seeded independently of the others.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from galaxy_distill import distributed
from galaxy_distill.settings import workspace_dir
from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.rundir import RunDir, check_synthetic, load_synthetic, synthetic_file
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.evaluate.baselines import BASELINES, baseline_set
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.evaluate.train import Accuracy, TrainingProtocol, evaluate_image_set
from galaxy_distill.models.spec import ModelSpec
from galaxy_distill.runtime import configure_backends, resolve_device
from galaxy_distill.atomic_io import (
    read_json,
    remove_interrupted_writes,
    sha256_file,
    write_json,
)

DEFAULT_LR = 0.01


def _model_spec(name: str, dataset: PreparedDataset, run_spec: dict[str, Any] | None) -> ModelSpec:
    channels, size, _ = dataset.image_shape
    if run_spec is not None and run_spec["name"] == name:
        return ModelSpec.model_validate(run_spec)
    return ModelSpec(name=name, channels=channels, num_classes=dataset.num_classes, image_size=size)


def default_output(settings: EvaluateSettings, dataset: PreparedDataset) -> Path:
    """RUN/evaluation.json (evaluation-final.json for the final set) for a run directory, else
    evaluations/<dataset>.json in the workspace."""
    if settings.run is not None and settings.run.is_dir():
        run = RunDir(settings.run)
        return run.final_evaluation if settings.selection == "final" else run.evaluation
    return workspace_dir() / "evaluations" / f"{dataset.name}.json"


def partial_results_path(output: Path) -> Path:
    """Where finished networks are recorded while `output` is being produced."""
    return output.with_name(output.stem + ".partial.json")


def run_description(run: Path | None) -> dict[str, Any]:
    """The distillation settings saved in a run directory ({} when there is no run directory)."""
    if run is not None and not run.exists():
        raise GalaxyDistillError(f"--run {run}: not found; pass a run directory written by `galaxy-distill distill` "
                                 "(or its synthetic.safetensors)")
    if run is None or not run.is_dir():
        return {}
    return RunDir(run).read_settings(DistillSettings)


SETTINGS_NOT_PER_NETWORK = ("baselines", "networks", "architectures", "resume")
"""Settings that choose which networks an evaluation trains but change none of them (each is keyed by
architecture, set and index, and seeded by (seed, index) alone): a resumed evaluation may ask for more
or fewer of them and still reuse the networks already trained."""


def _network_inputs(fingerprint: Any) -> Any:
    """The part of a fingerprint that a single network's result depends on (files written earlier hold more)."""
    if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("settings"), dict):
        return fingerprint
    settings = {EvaluateSettings.renamed.get(key, key): value for key, value in fingerprint["settings"].items()}
    settings = {key: value for key, value in settings.items() if key not in SETTINGS_NOT_PER_NETWORK}
    return {**fingerprint, "settings": settings}


class PartialResults:
    """The accuracies of every finished network, keyed "architecture/method/index", rewritten atomically after each.

    `fingerprint` pins what the numbers depend on (settings, dataset, synthetic set, model), so
    results of another evaluation are never mixed in.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any], resume: bool) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.networks: dict[str, tuple[dict[str, Accuracy], float]] = self._load() if resume and path.is_file() else {}
        if resume:
            remove_interrupted_writes(path.parent, path.name)

    def _load(self) -> dict[str, tuple[dict[str, Accuracy], float]]:
        try:
            stored = read_json(self.path)
            if not isinstance(stored, dict) or not isinstance(stored.get("networks"), dict):
                raise GalaxyDistillError(f"{self.path}: not a partial-results file")
            networks = {key: self._parse(record) for key, record in stored["networks"].items()}
        except GalaxyDistillError as exc:
            tqdm.write(f"warning: ignoring damaged partial results ({exc}); evaluating every network again", file=sys.stderr)
            return {}
        if _network_inputs(stored.get("fingerprint")) != _network_inputs(self.fingerprint):
            raise GalaxyDistillError(
                f"{self.path}: partial results of an evaluation with other settings or inputs; run without --resume to start over"
            )
        return networks

    def _parse(self, record: Any) -> tuple[dict[str, Accuracy], float]:
        try:
            return {name: Accuracy(**values) for name, values in record["accuracies"].items()}, float(record["seconds"])
        except (TypeError, KeyError, ValueError, AttributeError):
            raise GalaxyDistillError(f"{self.path}: a network record lacks accuracies or seconds") from None

    def finished(self, key: str) -> dict[str, Accuracy] | None:
        found = self.networks.get(key)
        return None if found is None else found[0]

    def record(self, key: str, accuracies: dict[str, Accuracy], seconds: float) -> None:
        self.networks[key] = (accuracies, seconds)
        if distributed.is_main():
            write_json(self.path, {"fingerprint": self.fingerprint, "networks": {
                name: {"accuracies": {split: asdict(value) for split, value in found.items()}, "seconds": spent}
                for name, (found, spent) in self.networks.items()
            }})

    def seconds(self, prefix: str) -> float:
        return sum(spent for key, (_, spent) in self.networks.items() if key.startswith(prefix))


class _CandidateLog:
    """The NetworkLog of one (architecture, method) pair within the partial results."""

    def __init__(self, partial: PartialResults, prefix: str) -> None:
        self.partial, self.prefix = partial, prefix

    def finished(self, index: int) -> dict[str, Accuracy] | None:
        return self.partial.finished(f"{self.prefix}/{index}")

    def record(self, index: int, accuracies: dict[str, Accuracy], seconds: float) -> None:
        self.partial.record(f"{self.prefix}/{index}", accuracies, seconds)


def evaluate(settings: EvaluateSettings, dataset: PreparedDataset, run_model: dict[str, Any] | None = None,
             output: Path | None = None) -> list[dict[str, Any]]:
    """Evaluate the run's synthetic set (if any) and the requested baselines on every architecture."""
    device = distributed.setup(resolve_device(settings.device))
    configure_backends(device)
    test = dataset.tensors(settings.split)
    channels, size, _ = dataset.image_shape
    candidates: list[tuple[str, torch.Tensor, torch.Tensor, float, str]] = []
    ipc = settings.ipc
    fingerprint: dict[str, Any] = {"settings": settings.model_dump(mode="json", exclude=set(SETTINGS_NOT_PER_NETWORK)),
                                   "dataset_sha256": dataset.meta["images_sha256"], "run_model": run_model}
    if settings.run is not None:
        final = settings.selection == "final"
        images, labels, step_size, class_names = load_synthetic(settings.run, final)
        check_synthetic(settings.run, images, labels, class_names, dataset)
        fingerprint["synthetic_sha256"] = sha256_file(synthetic_file(settings.run, final))
        ipc = ipc or int(len(labels) // dataset.num_classes)
        method = run_description(settings.run).get("method", "distilled")
        candidates.append((method, images, labels, settings.lr or step_size, settings.selection))
    if settings.baselines and ipc is None and "full" not in settings.baselines:
        raise GalaxyDistillError("baselines need --ipc (or a --run to take it from)")
    for kind in settings.baselines:
        images, labels = baseline_set(kind, dataset, ipc or 1, settings.seed)
        candidates.append((kind, images, labels, settings.lr or DEFAULT_LR, "none"))
    if not candidates:
        raise GalaxyDistillError(f"nothing to evaluate: give a distillation run and/or --baselines ({', '.join(BASELINES)})")

    target = output or default_output(settings, dataset)
    if settings.resume and distributed.is_main():
        remove_interrupted_writes(target.parent, target.name)  # an earlier attempt killed while writing its results
    partial = PartialResults(partial_results_path(target), fingerprint, settings.resume)
    results = []
    for architecture in settings.architectures:
        spec = _model_spec(architecture, dataset, run_model)
        for method, images, labels, lr, selection in candidates:
            epochs = settings.full_epochs if method == "full" else settings.epochs
            protocol = TrainingProtocol(epochs=epochs, lr=lr, batch_size=settings.batch_size)
            prefix = f"{architecture}/{method}"
            summary = evaluate_image_set(spec, (images, labels), {settings.split: test}, protocol, settings.networks,
                                         settings.seed, device, description=f"{method} on {architecture}",
                                         log=_CandidateLog(partial, prefix))[settings.split]
            results.append({
                "dataset": dataset.name, "resolution": size, "channels": channels,
                "ipc": None if method == "full" else int(len(labels) // dataset.num_classes),
                "method": method, "architecture": architecture, "acc_mean": summary.mean, "acc_std": summary.std,
                "accuracies": summary.accuracies, "n_eval": settings.networks, "selection": selection,
                "split": settings.split, "lr": lr, "epochs": epochs, "wall_s": partial.seconds(prefix + "/"),
                "per_class_accuracy": dict(zip(dataset.class_names, summary.per_class_mean)),
                "confusion": summary.confusion_total, "device": str(device),
            })
    return results


def results_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'method':14s} {'arch':9s} {'ipc':>4s} {'accuracy':>16s}  n  selection"]
    for entry in results:
        ipc = "-" if entry["ipc"] is None else str(entry["ipc"])
        accuracy = f"{100 * entry['acc_mean']:.1f} ± {100 * entry['acc_std']:.1f}"
        lines.append(f"{entry['method']:14s} {entry['architecture']:9s} {ipc:>4s} {accuracy:>16s} {entry['n_eval']:2d}  {entry['selection']}")
    return "\n".join(lines)

