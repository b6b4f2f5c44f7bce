"""The outer distillation loop shared by MTT and STM, with checkpoints and exact resumption."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.data.preview import class_grid_png
from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.distill.checkpoint import load_checkpoint, optimizer_from_store, optimizer_to_store, save_checkpoint
from galaxy_distill.distill.matching import InnerLoop
from galaxy_distill.distill.schedule import FixedSchedule, SelfAdaptiveSchedule
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.runtime import configure_backends, resolve_device, seeded_generator
from galaxy_distill.store import atomic_write_bytes, read_json, save_tensors, write_json, write_yaml

SYNTHETIC_FILE = "synthetic.safetensors"
Evaluator = Callable[[torch.Tensor, torch.Tensor, float], dict[str, float]]
"""(normalised images, labels, learned step size) -> {"val": accuracy, optionally "test": accuracy}.

Checkpoints are selected on "val"; "test" is only logged, for the literature's best-on-test figure."""


@dataclass
class DistillResult:
    run_dir: Path
    iterations: int
    best_val_accuracy: float | None
    best_iteration: int | None
    synthetic_path: Path
    wall_seconds: float


def make_schedule(settings: DistillSettings) -> FixedSchedule | SelfAdaptiveSchedule:
    if settings.method == "mtt":
        return FixedSchedule(max_start_epoch=settings.max_start_epoch, iterations=settings.iterations)
    return SelfAdaptiveSchedule(
        max_start_epoch=settings.max_start_epoch, max_iterations=settings.iterations,
        lambda_decrease=settings.stm_lambda, lambda_increase=settings.stm_rise, check_every=settings.stm_check_every,
        patience=settings.stm_patience, decay=settings.stm_decay, decay_every=settings.stm_decay_every,
        stop_factor=settings.stm_stop_factor,
    )


def initial_images(settings: DistillSettings, dataset: PreparedDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """IPC images per class, class-major: real training images chosen at random, or Gaussian noise."""
    labels = torch.arange(dataset.num_classes).repeat_interleave(settings.ipc)
    train_labels = dataset.labels("train")
    rng = np.random.default_rng(settings.seed)
    if settings.init == "noise":
        generator = seeded_generator(settings.seed)
        return torch.randn(len(labels), *dataset.image_shape, generator=generator), labels
    chosen = []
    for k, name in enumerate(dataset.class_names):
        members = np.flatnonzero(train_labels == k)
        if len(members) < settings.ipc:
            raise GalaxyDistillError(f"class '{name}' has {len(members)} training images, fewer than ipc={settings.ipc}")
        chosen.append(rng.choice(members, size=settings.ipc, replace=False))
    return dataset.normalize(dataset.images("train")[np.concatenate(chosen)]), labels


def check_compatibility(settings: DistillSettings, dataset: PreparedDataset, store: ExpertStore) -> None:
    expected = store.manifest["dataset"]["images_sha256"]
    if dataset.meta["images_sha256"] != expected:
        raise GalaxyDistillError(
            f"{store.directory}: experts were trained on dataset '{store.manifest['dataset']['name']}' "
            f"(different images from '{dataset.name}')"
        )
    if settings.max_start_epoch + settings.expert_epochs > store.epochs:
        raise GalaxyDistillError(
            f"max_start_epoch {settings.max_start_epoch} + expert_epochs {settings.expert_epochs} exceeds the "
            f"{store.epochs} epochs stored in {store.directory}"
        )


class _Metrics:
    """Rows of per-iteration metrics; rewritten whole (atomically) at each checkpoint."""

    columns = ("iteration", "loss", "probe_loss", "start_epoch", "cap", "step_size", "pixel_lr", "val_accuracy", "test_accuracy",
               "seconds")

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def write(self, path: Path) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(path, buffer.getvalue().encode())


def _tensorboard(run_dir: Path, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GalaxyDistillError("--tensorboard needs the tensorboard package: pip install 'galaxy-distill[tensorboard]'") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def distill(settings: DistillSettings, dataset: PreparedDataset, store: ExpertStore, run_dir: Path,
            evaluator: Evaluator | None = None, resume: bool = False) -> DistillResult:
    """Run (or resume) a distillation into run_dir."""
    check_compatibility(settings, dataset, store)
    device = resolve_device(settings.device)
    configure_backends(device)
    resolved = json.loads(settings.model_dump_json())
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_path = run_dir / "settings.json"
    if settings_path.is_file() and read_json(settings_path) != resolved:
        raise GalaxyDistillError(f"{run_dir}: holds a run with other settings; choose another --out")
    write_json(settings_path, resolved)
    write_yaml(run_dir / "settings.yaml", resolved)

    flat_view = FlatParams(store.model_spec.build().to(device))
    images, labels = initial_images(settings, dataset)
    batch_size = min(settings.batch_syn or len(images), len(images))
    inner = InnerLoop(flat_view, settings.syn_steps, batch_size, DiffAugment(strategy=settings.augment),
                      chunk_size=settings.batch_chunk)
    images = images.to(device).requires_grad_(True)
    labels = labels.to(device)
    stages = settings.max_start_epoch if (settings.lr_per_stage and settings.method == "stm") else 1
    log_step_sizes = torch.full((stages,), math.log(settings.lr_init), device=device, requires_grad=True)
    pixel_optimizer = torch.optim.SGD([images], lr=settings.lr_img, momentum=settings.momentum_img)
    step_size_optimizer = torch.optim.Adam([log_step_sizes], lr=settings.lr_lr)
    schedule = make_schedule(settings)
    rng = np.random.default_rng(settings.seed)
    generator = seeded_generator(settings.seed + 1)
    iteration = 0
    metric_rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_accuracy": None, "iteration": None}
    best_images = images.detach().clone()
    best_step_size = settings.lr_init
    elapsed = 0.0

    checkpoint = load_checkpoint(run_dir) if resume else None
    if checkpoint is None and (run_dir / "checkpoint.json").is_file() and not resume:
        raise GalaxyDistillError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    if checkpoint is not None:
        tensors, meta, warnings = checkpoint
        for warning in warnings:
            tqdm.write(warning)
        with torch.no_grad():
            images.copy_(tensors["images"])
            log_step_sizes.copy_(tensors["log_step_sizes"])
        best_images = tensors["best_images"].to(device)
        optimizer_from_store("pixel", pixel_optimizer, tensors, meta["pixel_optimizer"])
        optimizer_from_store("step_size", step_size_optimizer, tensors, meta["step_size_optimizer"])
        generator.set_state(tensors["generator_state"])
        rng.bit_generator.state = meta["numpy_rng"]
        schedule.load_state_dict(meta["schedule"])
        iteration, metric_rows, events, best = meta["iteration"], meta["metrics"], meta["events"], meta["best"]
        best_step_size, elapsed = meta["best_step_size"], meta["elapsed"]

    writer = _tensorboard(run_dir, settings.tensorboard)
    snapshots = run_dir / "snapshots"

    def snapshot(tag: int) -> None:
        class_grid_png(dataset.to_display(images), labels.cpu().numpy(), dataset.class_names,
                       snapshots / f"iter_{tag:06d}.png", per_class=min(settings.ipc, 10), title=f"iteration {tag}")

    def current_step_size() -> float:
        return float(log_step_sizes[schedule.stage % stages].detach().exp())

    def save_state() -> None:
        tensors = {"images": images, "log_step_sizes": log_step_sizes, "best_images": best_images,
                   "generator_state": generator.get_state()}
        pixel_tensors, pixel_meta = optimizer_to_store("pixel", pixel_optimizer)
        size_tensors, size_meta = optimizer_to_store("step_size", step_size_optimizer)
        save_checkpoint(run_dir, {**tensors, **pixel_tensors, **size_tensors}, {
            "iteration": iteration, "schedule": schedule.state_dict(), "numpy_rng": rng.bit_generator.state,
            "pixel_optimizer": pixel_meta, "step_size_optimizer": size_meta, "metrics": metric_rows,
            "events": events, "best": best, "best_step_size": best_step_size, "elapsed": elapsed,
        })
        _Metrics(metric_rows).write(run_dir / "metrics.csv")
        write_json(run_dir / "stages.json", events)

    if iteration == 0:
        snapshot(0)
    progress = tqdm(total=settings.iterations, initial=iteration, desc=f"distill ({settings.method})", unit="it")
    started = time.perf_counter() - elapsed
    while not schedule.finished(iteration):
        stage = schedule.stage % stages
        expert = int(rng.integers(len(store)))
        start_epoch = schedule.start_epoch(iteration, rng)
        start = store.parameters_at(expert, start_epoch).to(device, non_blocking=True)
        target = store.parameters_at(expert, start_epoch + settings.expert_epochs).to(device, non_blocking=True)
        for group in pixel_optimizer.param_groups:
            group["lr"] = settings.lr_img * schedule.pixel_lr_factor()
        step_size = log_step_sizes[stage].detach().exp()
        gradients = inner.loss_and_gradients(images, labels, step_size, start, target, generator)
        loss = gradients.loss
        images.grad = gradients.images
        log_step_sizes.grad = torch.zeros_like(log_step_sizes)
        log_step_sizes.grad[stage] = gradients.step_size * step_size
        if not torch.isfinite(loss) or not torch.isfinite(images.grad).all():
            raise GalaxyDistillError(
                f"non-finite matching loss or pixel gradient at iteration {iteration + 1}; lower --lr-img or --lr-init"
            )
        pixel_optimizer.step()
        step_size_optimizer.step()
        probe_epoch = schedule.probe_epoch()
        probe_loss = None
        if probe_epoch is not None:
            probe_start = store.parameters_at(expert, probe_epoch).to(device)
            probe_target = store.parameters_at(expert, probe_epoch + settings.expert_epochs).to(device)
            probe_loss = float(inner.unrolled_loss(images, labels, step_size, probe_start, probe_target, generator,
                                                   differentiable=False))
        iteration += 1
        new_events = schedule.observe(iteration, probe_loss)
        for event in new_events:
            if event.kind == "grow" and schedule.stage % stages != stage:
                with torch.no_grad():
                    log_step_sizes[schedule.stage % stages] = log_step_sizes[stage]
            events.append(asdict(event))
            tqdm.write(f"iteration {event.iteration}: {event.kind} {event.detail}")
        row: dict[str, Any] = {
            "iteration": iteration, "loss": float(loss), "probe_loss": probe_loss, "start_epoch": start_epoch,
            "cap": getattr(schedule, "cap", settings.max_start_epoch), "step_size": current_step_size(),
            "pixel_lr": settings.lr_img * schedule.pixel_lr_factor(), "val_accuracy": None, "test_accuracy": None,
            "seconds": time.perf_counter() - started,
        }
        finishing = schedule.finished(iteration)
        if evaluator is not None and (iteration % settings.eval_every == 0 or finishing):
            measured = evaluator(images.detach(), labels, current_step_size())
            accuracy = row["val_accuracy"] = measured["val"]
            row["test_accuracy"] = measured.get("test")
            if best["val_accuracy"] is None or accuracy > best["val_accuracy"]:
                best = {"val_accuracy": accuracy, "iteration": iteration}
                best_images = images.detach().clone()
                best_step_size = current_step_size()
        metric_rows.append(row)
        if writer is not None:
            for key in ("loss", "probe_loss", "step_size", "pixel_lr", "val_accuracy", "test_accuracy", "cap"):
                if row[key] is not None:
                    writer.add_scalar(key, row[key], iteration)
        progress.set_postfix(loss=f"{row['loss']:.4f}", cap=row["cap"], lr=f"{row['step_size']:.4g}")
        progress.update(1)
        if iteration % settings.snapshot_every == 0 or finishing:
            snapshot(iteration)
        elapsed = time.perf_counter() - started
        if iteration % settings.checkpoint_every == 0 or finishing:
            save_state()
    progress.close()
    if writer is not None:
        writer.close()
    if evaluator is None:
        best_images, best_step_size = images.detach().clone(), current_step_size()
    synthetic_path = run_dir / SYNTHETIC_FILE
    save_tensors(synthetic_path, {"images": best_images, "labels": labels, "step_size": torch.tensor(best_step_size)},
                 metadata={"class_names": json.dumps(dataset.class_names), "dataset": dataset.name})
    class_grid_png(dataset.to_display(best_images), labels.cpu().numpy(), dataset.class_names, run_dir / "prototypes.png",
                   per_class=min(settings.ipc, 10), title=f"{settings.method.upper()} prototypes, IPC {settings.ipc}")
    return DistillResult(run_dir, iteration, best["val_accuracy"], best["iteration"], synthetic_path, elapsed)


def load_synthetic(path: Path) -> tuple[torch.Tensor, torch.Tensor, float, list[str]]:
    """(images, labels, learned step size, class names) from a run directory or synthetic.safetensors."""
    from safetensors import safe_open

    file = path / SYNTHETIC_FILE if path.is_dir() else path
    if not file.is_file():
        raise GalaxyDistillError(f"{file}: no synthetic set here; run `galaxy-distill distill` first")
    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    missing = [key for key in ("images", "labels", "step_size") if key not in tensors]
    if missing:
        raise GalaxyDistillError(f"{file}: missing tensor(s) {', '.join(missing)}")
    return tensors["images"], tensors["labels"], float(tensors["step_size"]), json.loads(metadata.get("class_names", "[]"))
