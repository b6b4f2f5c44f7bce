"""`galaxy-distill evaluate`: accuracy of a distilled set and of the baselines, in one results file.

Each entry of `results` carries dataset, resolution, ipc, method, architecture, acc_mean,
acc_std, n_eval, selection, wall_s (the schema of bench/results), plus per-class accuracy
and the summed confusion matrix.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.distill.run import load_synthetic
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.evaluate.baselines import BASELINES, baseline_set
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.evaluate.train import TrainingProtocol, evaluate_image_set
from galaxy_distill.models.spec import ModelSpec
from galaxy_distill.runtime import configure_backends, resolve_device
from galaxy_distill.store import read_json

DEFAULT_LR = 0.01


def _model_spec(name: str, dataset: PreparedDataset, run_spec: dict[str, Any] | None) -> ModelSpec:
    channels, size, _ = dataset.image_shape
    if run_spec is not None and run_spec["name"] == name:
        return ModelSpec.model_validate(run_spec)
    return ModelSpec(name=name, channels=channels, num_classes=dataset.num_classes, image_size=size)


def evaluate(settings: EvaluateSettings, dataset: PreparedDataset, run_model: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Evaluate the run's synthetic set (if any) and the requested baselines on every architecture."""
    device = resolve_device(settings.device)
    configure_backends(device)
    test = dataset.tensors(settings.split)
    channels, size, _ = dataset.image_shape
    candidates: list[tuple[str, torch.Tensor, torch.Tensor, float, str]] = []
    ipc = settings.ipc
    if settings.run is not None:
        images, labels, step_size, class_names = load_synthetic(settings.run)
        if class_names and class_names != dataset.class_names:
            raise GalaxyDistillError(f"{settings.run}: synthetic set has classes {class_names}, dataset has {dataset.class_names}")
        run_settings = read_json(settings.run / "settings.json") if settings.run.is_dir() else {}
        ipc = ipc or int(len(labels) // dataset.num_classes)
        method = run_settings.get("method", "distilled")
        candidates.append((method, images, labels, settings.lr or step_size, "validation"))
    if settings.baselines and ipc is None and "full" not in settings.baselines:
        raise GalaxyDistillError("baselines need --ipc (or a --run to take it from)")
    for kind in settings.baselines:
        images, labels = baseline_set(kind, dataset, ipc or 1, settings.seed)
        candidates.append((kind, images, labels, settings.lr or DEFAULT_LR, "none"))
    if not candidates:
        raise GalaxyDistillError(f"nothing to evaluate: give a distillation run and/or --baselines ({', '.join(BASELINES)})")

    results = []
    for architecture in settings.architectures:
        spec = _model_spec(architecture, dataset, run_model)
        for method, images, labels, lr, selection in candidates:
            epochs = settings.full_epochs if method == "full" else settings.epochs
            protocol = TrainingProtocol(epochs=epochs, lr=lr, batch_size=settings.batch_size)
            started = time.perf_counter()
            summary = evaluate_image_set(spec, (images, labels), {settings.split: test}, protocol, settings.num_eval,
                                         settings.seed, device, description=f"{method} on {architecture}")[settings.split]
            results.append({
                "dataset": dataset.name, "resolution": size, "channels": channels,
                "ipc": None if method == "full" else int(len(labels) // dataset.num_classes),
                "method": method, "architecture": architecture, "acc_mean": summary.mean, "acc_std": summary.std,
                "accuracies": summary.accuracies, "n_eval": settings.num_eval, "selection": selection,
                "split": settings.split, "lr": lr, "epochs": epochs, "wall_s": time.perf_counter() - started,
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

