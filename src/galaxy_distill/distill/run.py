"""The outer distillation loop shared by MTT and STM, with checkpoints, exact resumption and fault recovery.

The update is the reference MTT's: pixels by SGD (lr_img, momentum 0.5), the learned step size
itself by SGD (lr_lr, momentum 0.5), both on the gradient of the normalised matching loss.
Only where the reference would carry on with garbage does the loop step in: a non-finite loss
or gradient, or a learned step size that is no longer positive, rolls the images, step sizes,
optimizer and schedule back to the state before the iteration, halves the offending learning
rate, logs a "fault" event and tries again; several faults in a row stop the run with an
error. The remedy uses no randomness of its own and its state is checkpointed, so a resumed
run stays bit-identical.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from galaxy_distill import distributed
from galaxy_distill.config import settings_differences
from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.data.preview import class_grid_png
from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.distill.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    optimizer_from_store,
    optimizer_to_store,
    save_checkpoint,
)
from galaxy_distill.distill.early_warnings import MatchingLossWatch
from galaxy_distill.distill.matching import InnerLoop, MatchingGradients
from galaxy_distill.distill.schedule import FixedSchedule, SelfAdaptiveSchedule
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.distill.step_size import LearnedStepSizes
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.progress import progress as log_progress
from galaxy_distill.runtime import configure_backends, resolve_device, seeded_generator
from galaxy_distill.store import (
    atomic_write_bytes,
    read_json,
    remove_interrupted_writes,
    save_tensors,
    write_json,
    write_yaml,
)

SYNTHETIC_FILE = "synthetic.safetensors"
MAX_FAULTS_IN_A_ROW = 5
FAULT_LR_FACTOR = 0.5
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


@dataclass(frozen=True)
class NumericalFault:
    """What went wrong in one attempted iteration, and which learning rates ("lr_img", "lr_lr") it lowers."""

    description: str
    lowers: tuple[str, ...]


def gradient_fault(gradients: MatchingGradients) -> NumericalFault | None:
    """A non-finite loss or gradient: either update may have led there, so both learning rates are lowered."""
    both = ("lr_img", "lr_lr")
    if not torch.isfinite(gradients.loss):
        return NumericalFault(f"non-finite matching loss ({float(gradients.loss)})", both)
    if not torch.isfinite(gradients.images).all():
        return NumericalFault("non-finite pixel gradient", both)
    if not torch.isfinite(gradients.step_size):
        return NumericalFault("non-finite step-size gradient", both)
    return None


def step_size_fault(step_sizes: LearnedStepSizes) -> NumericalFault | None:
    """A learned step size no longer positive: the student would climb its loss, so lr_lr is lowered."""
    lowest = float(step_sizes.values.min())
    if not lowest > 0:
        return NumericalFault(f"learned step size {lowest:.3g} is not positive", ("lr_lr",))
    return None


@dataclass
class _RollbackPoint:
    """Everything one iteration changes, copied before it, so a faulty update can be undone exactly."""

    images: torch.Tensor
    step_sizes: tuple[torch.Tensor, torch.Tensor]
    pixel_optimizer: dict[str, Any]
    schedule: dict[str, Any]

    @classmethod
    def capture(cls, images: torch.Tensor, step_sizes: LearnedStepSizes, pixel_optimizer: torch.optim.Optimizer,
                schedule: FixedSchedule | SelfAdaptiveSchedule) -> _RollbackPoint:
        return cls(images.detach().clone(), (step_sizes.values.clone(), step_sizes.momentum.clone()),
                   copy.deepcopy(pixel_optimizer.state_dict()), copy.deepcopy(schedule.state_dict()))

    def restore(self, images: torch.Tensor, step_sizes: LearnedStepSizes, pixel_optimizer: torch.optim.Optimizer,
                schedule: FixedSchedule | SelfAdaptiveSchedule) -> None:
        with torch.no_grad():
            images.copy_(self.images)
            step_sizes.values.copy_(self.step_sizes[0])
            step_sizes.momentum.copy_(self.step_sizes[1])
        # Copies again: load_state_dict keeps the given tensors, which the next step would change in place.
        pixel_optimizer.load_state_dict(copy.deepcopy(self.pixel_optimizer))
        schedule.load_state_dict(copy.deepcopy(self.schedule))


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

    columns = ("iteration", "loss", "probe_loss", "expert", "start_epoch", "cap", "step_size", "pixel_lr", "val_accuracy",
               "test_accuracy", "seconds", "faults")

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
    """Run (or resume) a distillation into run_dir.

    Under torchrun every rank runs the same iterations, on its share of each inner batch
    (InnerLoop's Shard), and holds the same images and optimiser state; rank 0 alone writes.
    """
    check_compatibility(settings, dataset, store)
    device = distributed.setup(resolve_device(settings.device))
    configure_backends(device)
    resolved = json.loads(settings.model_dump_json())
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_path = run_dir / "settings.json"
    if settings_path.is_file():
        differences = settings_differences(DistillSettings, read_json(settings_path), resolved)
        if differences:
            raise GalaxyDistillError(f"{run_dir}: holds a run with other settings ({'; '.join(differences)}); "
                                     "resume with the same settings or choose another --out")
    if distributed.is_main():
        write_json(settings_path, resolved)
        write_yaml(run_dir / "settings.yaml", resolved)

    flat_view = FlatParams(store.model_spec.build().to(device))
    if flat_view.total != store.param_count:
        raise GalaxyDistillError(f"{store.directory}: stores {store.param_count} parameters per network, but its model "
                                 f"'{store.model_spec.name}' has {flat_view.total}")
    images, labels = initial_images(settings, dataset)
    batch_size = min(settings.batch_syn or len(images), len(images))
    inner = InnerLoop(flat_view, settings.syn_steps, batch_size, DiffAugment(strategy=settings.augment),
                      chunk_size=settings.batch_chunk, cuda_graphs=settings.cuda_graphs, shard=distributed.shard(),
                      bf16=settings.precision == "bf16", compile=settings.compile)
    images = images.to(device).requires_grad_(True)
    labels = labels.to(device)
    stages = settings.max_start_epoch if (settings.lr_per_stage and settings.method == "stm") else 1
    step_sizes = LearnedStepSizes.start(settings.lr_init, stages, device)
    pixel_optimizer = torch.optim.SGD([images], lr=settings.lr_img, momentum=settings.momentum_img)
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
    lr_factors = {"lr_img": 1.0, "lr_lr": 1.0}

    if not resume and has_checkpoint(run_dir):
        raise GalaxyDistillError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    checkpoint = load_checkpoint(run_dir) if resume else None
    if resume and distributed.is_main():
        remove_interrupted_writes(run_dir)
        remove_interrupted_writes(run_dir / "snapshots")
    if checkpoint is not None:
        tensors, meta, warnings = checkpoint
        for warning in warnings:
            tqdm.write(f"warning: {warning}", file=sys.stderr)
        with torch.no_grad():
            images.copy_(tensors["images"])
            step_sizes.values.copy_(tensors["step_sizes"])
            step_sizes.momentum.copy_(tensors["step_size_momentum"])
        best_images = tensors["best_images"].to(device)
        optimizer_from_store("pixel", pixel_optimizer, tensors, meta["pixel_optimizer"])
        generator.set_state(tensors["generator_state"])
        rng.bit_generator.state = meta["numpy_rng"]
        schedule.load_state_dict(meta["schedule"])
        iteration, metric_rows, events, best = meta["iteration"], meta["metrics"], meta["events"], meta["best"]
        best_step_size, elapsed, lr_factors = meta["best_step_size"], meta["elapsed"], meta["lr_factors"]

    writer = _tensorboard(run_dir, settings.tensorboard and distributed.is_main())
    snapshots = run_dir / "snapshots"

    def snapshot(tag: int) -> None:
        if not distributed.is_main():
            return
        class_grid_png(dataset.to_display(images), labels.cpu().numpy(), dataset.class_names,
                       snapshots / f"iter_{tag:06d}.png", per_class=min(settings.ipc, 10), title=f"iteration {tag}")

    def current_step_size() -> float:
        return step_sizes.value(step_sizes.newest(schedule.stage))

    def save_state() -> None:
        if not distributed.is_main():
            return
        tensors = {"images": images, "step_sizes": step_sizes.values, "step_size_momentum": step_sizes.momentum,
                   "best_images": best_images, "generator_state": generator.get_state()}
        pixel_tensors, pixel_meta = optimizer_to_store("pixel", pixel_optimizer)
        save_checkpoint(run_dir, iteration, {**tensors, **pixel_tensors}, {
            "iteration": iteration, "schedule": schedule.state_dict(), "numpy_rng": rng.bit_generator.state,
            "pixel_optimizer": pixel_meta, "metrics": metric_rows,
            "events": events, "best": best, "best_step_size": best_step_size, "elapsed": elapsed, "lr_factors": lr_factors,
        })
        _Metrics(metric_rows).write(run_dir / "metrics.csv")
        write_json(run_dir / "stages.json", events)

    if iteration == 0:
        snapshot(0)
    progress = log_progress(total=settings.iterations, initial=iteration, desc=f"distill ({settings.method})", unit="it",
                            main_process=distributed.is_main())
    if settings.compile and not distributed.progress_disabled():
        # Otherwise the bar sits at its first iteration without a word while torch.compile works.
        tqdm.write("compiling the student's inner steps (torch.compile): a minute or more before the first iteration")
    started = time.perf_counter() - elapsed
    loss_watch = MatchingLossWatch() if distributed.is_main() else None
    faults_in_a_row = 0
    while not schedule.finished(iteration):
        rollback = _RollbackPoint.capture(images, step_sizes, pixel_optimizer, schedule)
        expert = int(rng.integers(len(store)))
        start_epoch = schedule.start_epoch(iteration, rng)
        start = store.parameters_at(expert, start_epoch).to(device, non_blocking=True)
        target = store.parameters_at(expert, start_epoch + settings.expert_epochs).to(device, non_blocking=True)
        # STM measures the next epoch before the update, as its reference code does.
        probe_epoch = schedule.probe_epoch()
        probe_loss = None
        if probe_epoch is not None:
            probe_start = store.parameters_at(expert, probe_epoch).to(device)
            probe_target = store.parameters_at(expert, probe_epoch + settings.expert_epochs).to(device)
            probe_step_size = step_sizes.values[step_sizes.newest(schedule.stage)]
            probe_loss = float(inner.probe_loss(images, labels, probe_step_size, probe_start, probe_target, generator))
        pixel_lr = settings.lr_img * lr_factors["lr_img"] * schedule.pixel_lr_factor()
        for group in pixel_optimizer.param_groups:
            group["lr"] = pixel_lr
        used = step_sizes.index_for(start_epoch)
        step_size = step_sizes.values[used].clone()
        gradients = inner.loss_and_gradients(images, labels, step_size, start, target, generator)
        fault = gradient_fault(gradients)
        if fault is None:
            images.grad = gradients.images
            pixel_optimizer.step()
            step_size_lr = step_sizes.learning_rate(settings.lr_lr * lr_factors["lr_lr"], schedule.stage)
            step_sizes.step(used, gradients.step_size, step_size_lr)
            fault = step_size_fault(step_sizes)
        if fault is not None:
            rollback.restore(images, step_sizes, pixel_optimizer, schedule)
            faults_in_a_row += 1
            for name in fault.lowers:
                lr_factors[name] *= FAULT_LR_FACTOR
            lowered = {name: getattr(settings, name) * lr_factors[name] for name in fault.lowers}
            events.append({"iteration": iteration + 1, "kind": "fault", "detail": {
                "fault": fault.description, "expert": expert, "start_epoch": start_epoch, "lowered": lowered,
                "in_a_row": faults_in_a_row}})
            tqdm.write(f"warning: iteration {iteration + 1}: {fault.description}; rolled back, lowered "
                       + ", ".join(f"{name} to {value:.3g}" for name, value in lowered.items()), file=sys.stderr)
            if faults_in_a_row >= MAX_FAULTS_IN_A_ROW:
                if distributed.is_main():
                    write_json(run_dir / "stages.json", events)
                raise GalaxyDistillError(
                    f"iteration {iteration + 1}: {faults_in_a_row} numerical faults in a row (last: {fault.description}); "
                    f"stopped, the last checkpoint holds the last good state: lower --lr-img, --lr-lr or --lr-init"
                )
            continue
        faults = faults_in_a_row
        faults_in_a_row = 0
        iteration += 1
        stage_before = schedule.stage
        for event in schedule.observe(iteration, probe_loss):
            events.append(asdict(event))
            tqdm.write(f"iteration {event.iteration}: {event.kind} {event.detail}")
        if schedule.stage > stage_before:
            step_sizes.begin_stage(schedule.stage)
        row: dict[str, Any] = {
            "iteration": iteration, "loss": float(gradients.loss), "probe_loss": probe_loss, "expert": expert, "start_epoch": start_epoch,
            "cap": getattr(schedule, "cap", settings.max_start_epoch), "step_size": current_step_size(),
            "pixel_lr": pixel_lr, "val_accuracy": None, "test_accuracy": None,
            "seconds": time.perf_counter() - started, "faults": faults,
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
        if loss_watch is not None:
            loss_watch.observe(iteration, row["loss"])
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
    if distributed.is_main():
        save_tensors(synthetic_path, {"images": best_images, "labels": labels, "step_size": torch.tensor(best_step_size)},
                     metadata={"class_names": json.dumps(dataset.class_names), "dataset": dataset.name})
        class_grid_png(dataset.to_display(best_images), labels.cpu().numpy(), dataset.class_names, run_dir / "prototypes.png",
                       per_class=min(settings.ipc, 10), title=f"{settings.method.upper()} prototypes, IPC {settings.ipc}")
    distributed.barrier()  # the outputs exist when any rank returns
    return DistillResult(run_dir, iteration, best["val_accuracy"], best["iteration"], synthetic_path, elapsed)


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


def synthetic_file(path: Path) -> Path:
    """The synthetic set's file: `path` itself, or synthetic.safetensors in it when it is a run directory."""
    return path / SYNTHETIC_FILE if path.is_dir() else path


def load_synthetic(path: Path) -> tuple[torch.Tensor, torch.Tensor, float, list[str]]:
    """(images, labels, learned step size, class names) from a run directory or synthetic.safetensors, checked."""
    from safetensors import SafetensorError, safe_open

    file = synthetic_file(path)
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
