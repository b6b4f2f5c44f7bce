"""The outer distillation loop shared by MTT and STM, with checkpoints, exact resumption and fault recovery.

The update is the reference MTT's: pixels by SGD (lr_img, momentum 0.5), the learned step size
itself by SGD (lr_lr, momentum 0.5), both on the gradient of the normalised matching loss.
A numerically faulty iteration is undone and retried more gently (distill/faults.py); several
in a row stop the run with an error. Every `checkpoint_every` iterations the whole state
(distill/state.py) is saved, so a resumed run continues bit-identically.
"""

from __future__ import annotations

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
from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.data.preview import class_grid_png
from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.distill.checkpoint import load_checkpoint, save_checkpoint
from galaxy_distill.distill.early_warnings import MatchingLossWatch
from galaxy_distill.distill.faults import (
    FAULT_LR_FACTOR,
    MAX_FAULTS_IN_A_ROW,
    NumericalFault,
    gradient_fault,
    step_size_fault,
)
from galaxy_distill.distill.matching import InnerLoop, MatchingGradients
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.distill.state import DistillState
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.progress import progress as log_progress
from galaxy_distill.rundir import RunDir
from galaxy_distill.runtime import configure_backends, resolve_device, seeded_generator
from galaxy_distill.atomic_io import atomic_write_bytes, remove_interrupted_writes, write_json

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
    final_path: Path
    stopped_at_time_limit: bool
    """Whether --time-limit ended this call before the schedule did; --resume continues the run."""


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


METRIC_COLUMNS = ("iteration", "loss", "probe_loss", "expert", "start_epoch", "cap", "step_size", "pixel_lr", "val_accuracy",
                  "test_accuracy", "seconds", "faults")
TENSORBOARD_SCALARS = ("loss", "probe_loss", "step_size", "pixel_lr", "val_accuracy", "test_accuracy", "cap")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """The per-iteration rows as CSV, rewritten whole (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def _tensorboard(run: RunDir, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GalaxyDistillError("--tensorboard needs the tensorboard package: pip install 'galaxy-distill[tensorboard]'") from None
    return SummaryWriter(log_dir=str(run.tensorboard))


@dataclass
class _Attempt:
    """One tried iteration: its draws, what it measured, and its fault if the update was not kept."""

    expert: int
    start_epoch: int
    probe_loss: float | None
    pixel_lr: float
    gradients: MatchingGradients
    fault: NumericalFault | None


class _OuterLoop:
    """The outer iterations of one run over a DistillState: attempt, undo faults, log, evaluate, checkpoint."""

    def __init__(self, settings: DistillSettings, dataset: PreparedDataset, store: ExpertStore, run: RunDir,
                 inner: InnerLoop, labels: torch.Tensor, evaluator: Evaluator | None) -> None:
        self.settings, self.dataset, self.store, self.run = settings, dataset, store, run
        self.inner, self.labels, self.evaluator = inner, labels, evaluator
        self.device = labels.device
        self.main = distributed.is_main()
        self.writer = _tensorboard(run, settings.tensorboard and self.main)
        self.loss_watch = MatchingLossWatch() if self.main else None

    def _parameters(self, expert: int, epoch: int) -> torch.Tensor:
        return self.store.parameters_at(expert, epoch).to(self.device, non_blocking=True)

    def attempt(self, state: DistillState) -> _Attempt:
        """Draw an expert and start epoch, measure STM's probe, and update images and step size."""
        settings, images = self.settings, state.images
        expert = int(state.rng.integers(len(self.store)))
        start_epoch = state.schedule.start_epoch(state.iteration, state.rng)
        start, target = self._parameters(expert, start_epoch), self._parameters(expert, start_epoch + settings.expert_epochs)
        # STM measures the next epoch before the update, as its reference code does.
        probe_epoch = state.schedule.probe_epoch()
        probe_loss = None
        if probe_epoch is not None:
            probe_step_size = state.step_sizes.values[state.step_sizes.newest(state.schedule.stage)]
            probe_loss = float(self.inner.probe_loss(images, self.labels, probe_step_size, self._parameters(expert, probe_epoch),
                                                     self._parameters(expert, probe_epoch + settings.expert_epochs),
                                                     state.generator))
        pixel_lr = settings.lr_img * state.lr_factors["lr_img"] * state.schedule.pixel_lr_factor()
        for group in state.pixel_optimizer.param_groups:
            group["lr"] = pixel_lr
        used = state.step_sizes.index_for(start_epoch)
        gradients = self.inner.loss_and_gradients(images, self.labels, state.step_sizes.values[used].clone(), start, target,
                                                  state.generator)
        fault = gradient_fault(gradients)
        if fault is None:
            images.grad = gradients.images
            state.pixel_optimizer.step()
            step_size_lr = state.step_sizes.learning_rate(settings.lr_lr * state.lr_factors["lr_lr"], state.schedule.stage)
            state.step_sizes.step(used, gradients.step_size, step_size_lr)
            fault = step_size_fault(state.step_sizes)
        return _Attempt(expert, start_epoch, probe_loss, pixel_lr, gradients, fault)

    def recover(self, state: DistillState, attempt: _Attempt, faults_in_a_row: int) -> None:
        """Log the fault and lower the learning rates it names (the caller has rolled the state back)."""
        fault = attempt.fault
        assert fault is not None
        for name in fault.lowers:
            state.lr_factors[name] *= FAULT_LR_FACTOR
        lowered = {name: getattr(self.settings, name) * state.lr_factors[name] for name in fault.lowers}
        state.events.append({"iteration": state.iteration + 1, "kind": "fault", "detail": {
            "fault": fault.description, "expert": attempt.expert, "start_epoch": attempt.start_epoch, "lowered": lowered,
            "in_a_row": faults_in_a_row}})
        tqdm.write(f"warning: iteration {state.iteration + 1}: {fault.description}; rolled back, lowered "
                   + ", ".join(f"{name} to {value:.3g}" for name, value in lowered.items()), file=sys.stderr)
        if faults_in_a_row >= MAX_FAULTS_IN_A_ROW:
            if self.main:
                write_json(self.run.stages, state.events)
            raise GalaxyDistillError(
                f"iteration {state.iteration + 1}: {faults_in_a_row} numerical faults in a row (last: {fault.description}); "
                f"stopped, the last checkpoint holds the last good state: lower --lr-img, --lr-lr or --lr-init"
            )

    def advance(self, state: DistillState, attempt: _Attempt, faults: int, started: float) -> dict[str, Any]:
        """Count the kept iteration, let the schedule observe it, evaluate when due; returns its metrics row."""
        state.iteration += 1
        stage_before = state.schedule.stage
        for event in state.schedule.observe(state.iteration, attempt.probe_loss):
            state.events.append(asdict(event))
            tqdm.write(f"iteration {event.iteration}: {event.kind} {event.detail}")
        if state.schedule.stage > stage_before:
            state.step_sizes.begin_stage(state.schedule.stage)
        row: dict[str, Any] = {
            "iteration": state.iteration, "loss": float(attempt.gradients.loss), "probe_loss": attempt.probe_loss,
            "expert": attempt.expert, "start_epoch": attempt.start_epoch,
            "cap": getattr(state.schedule, "cap", self.settings.max_start_epoch), "step_size": state.current_step_size(),
            "pixel_lr": attempt.pixel_lr, "val_accuracy": None, "test_accuracy": None,
            "seconds": time.perf_counter() - started, "faults": faults,
        }
        due = state.iteration % self.settings.eval_every == 0 or state.schedule.finished(state.iteration)
        if self.evaluator is not None and due:
            measured = self.evaluator(state.images.detach(), self.labels, state.current_step_size())
            accuracy = row["val_accuracy"] = measured["val"]
            row["test_accuracy"] = measured.get("test")
            if state.best["val_accuracy"] is None or accuracy > state.best["val_accuracy"]:
                state.best = {"val_accuracy": accuracy, "iteration": state.iteration}
                state.best_images, state.best_step_size = state.images.detach().clone(), state.current_step_size()
        state.metric_rows.append(row)
        if self.loss_watch is not None:
            self.loss_watch.observe(state.iteration, row["loss"])
        if self.writer is not None:
            for key in TENSORBOARD_SCALARS:
                if row[key] is not None:
                    self.writer.add_scalar(key, row[key], state.iteration)
        return row

    def snapshot(self, state: DistillState) -> None:
        if self.main:
            class_grid_png(self.dataset.to_display(state.images), self.labels.cpu().numpy(), self.dataset.class_names,
                           self.run.snapshot(state.iteration), per_class=min(self.settings.ipc, 10),
                           title=f"iteration {state.iteration}")

    def save(self, state: DistillState) -> None:
        if self.main:
            tensors, meta = state.to_checkpoint()
            save_checkpoint(self.run, state.iteration, tensors, meta)
            write_metrics(self.run.metrics, state.metric_rows)
            write_json(self.run.stages, state.events)

    def run_until_finished(self, state: DistillState) -> bool:
        """Iterate until the schedule ends or the time limit passes; True when the time limit stopped it."""
        settings = self.settings
        call_started = time.perf_counter()
        time_limit_s = math.inf if settings.time_limit is None else 60 * settings.time_limit
        if state.iteration == 0:
            self.snapshot(state)
        progress = log_progress(total=settings.iterations, initial=state.iteration, desc=f"distill ({settings.method})",
                                unit="it", main_process=self.main)
        if settings.compile and not distributed.progress_disabled():
            # Otherwise the bar sits at its first iteration without a word while torch.compile works.
            tqdm.write("compiling the student's inner steps (torch.compile): a minute or more before the first iteration")
        started = time.perf_counter() - state.elapsed
        faults_in_a_row = 0
        out_of_time = False
        while not state.schedule.finished(state.iteration) and not out_of_time:
            rollback = state.rollback_point()
            attempt = self.attempt(state)
            if attempt.fault is not None:
                state.roll_back(rollback)
                faults_in_a_row += 1
                self.recover(state, attempt, faults_in_a_row)
                continue
            row = self.advance(state, attempt, faults_in_a_row, started)
            faults_in_a_row = 0
            progress.set_postfix(loss=f"{row['loss']:.4f}", cap=row["cap"], lr=f"{row['step_size']:.4g}")
            progress.update(1)
            # Every rank must take the same decision, so rank 0's clock decides.
            out_of_time = settings.time_limit is not None and distributed.broadcast_flag(
                time.perf_counter() - call_started > time_limit_s)
            finishing = state.schedule.finished(state.iteration) or out_of_time
            if state.iteration % settings.snapshot_every == 0 or finishing:
                self.snapshot(state)
            state.elapsed = time.perf_counter() - started
            if state.iteration % settings.checkpoint_every == 0 or finishing:
                self.save(state)
        progress.close()
        if self.writer is not None:
            self.writer.close()
        if out_of_time:
            tqdm.write(f"stopped at the time limit ({settings.time_limit:g} min) after iteration {state.iteration}; "
                       "--resume continues the run")
        return out_of_time

    def finish(self, state: DistillState, stopped_at_time_limit: bool) -> DistillResult:
        """Write the kept set (the best on validation, else the last), the last iteration's set and the prototype grid."""
        if self.evaluator is None or state.best["val_accuracy"] is None:
            state.best_images, state.best_step_size = state.images.detach().clone(), state.current_step_size()
        if self.main:
            self.run.save_synthetic(state.best_images, self.labels, state.best_step_size, self.dataset.class_names,
                                    self.dataset.name)
            self.run.save_synthetic(state.images.detach(), self.labels, state.current_step_size(),
                                    self.dataset.class_names, self.dataset.name, final=True)
            class_grid_png(self.dataset.to_display(state.best_images), self.labels.cpu().numpy(), self.dataset.class_names,
                           self.run.prototypes, per_class=min(self.settings.ipc, 10),
                           title=f"{self.settings.method.upper()} prototypes, IPC {self.settings.ipc}")
        distributed.barrier()  # the outputs exist when any rank returns
        return DistillResult(self.run.path, state.iteration, state.best["val_accuracy"], state.best["iteration"],
                             self.run.synthetic, state.elapsed, self.run.final, stopped_at_time_limit)


def _resume(run: RunDir, state: DistillState, resume: bool) -> None:
    """Continue from the run's newest intact checkpoint, or refuse to overwrite one unless resuming."""
    if not resume:
        if run.has_checkpoint():
            raise GalaxyDistillError(f"{run.path}: already holds a run; pass --resume to continue it or choose another --out")
        return
    checkpoint = load_checkpoint(run)
    if distributed.is_main():
        remove_interrupted_writes(run.path)
        remove_interrupted_writes(run.snapshots)
    if checkpoint is not None:
        tensors, meta, warnings = checkpoint
        for warning in warnings:
            tqdm.write(f"warning: {warning}", file=sys.stderr)
        state.restore(tensors, meta)


def distill(settings: DistillSettings, dataset: PreparedDataset, store: ExpertStore, run_dir: Path,
            evaluator: Evaluator | None = None, resume: bool = False) -> DistillResult:
    """Run (or resume) a distillation into run_dir.

    Under torchrun every rank runs the same iterations, on its share of each inner batch
    (InnerLoop's Shard), and holds the same images and optimiser state; rank 0 alone writes.
    """
    check_compatibility(settings, dataset, store)
    device = distributed.setup(resolve_device(settings.device))
    configure_backends(device)
    run = RunDir(run_dir)
    run.start(DistillSettings, json.loads(settings.model_dump_json()), write=distributed.is_main())
    flat_view = FlatParams(store.model_spec.build().to(device))
    if flat_view.total != store.param_count:
        raise GalaxyDistillError(f"{store.directory}: stores {store.param_count} parameters per network, but its model "
                                 f"'{store.model_spec.name}' has {flat_view.total}")
    images, labels = initial_images(settings, dataset)
    batch_size = min(settings.batch_syn or len(images), len(images))
    inner = InnerLoop(flat_view, settings.syn_steps, batch_size, DiffAugment(strategy=settings.augment),
                      chunk_size=settings.batch_chunk, cuda_graphs=settings.cuda_graphs, shard=distributed.shard(),
                      bf16=settings.precision == "bf16", compile=settings.compile)
    state = DistillState.start(settings, images.to(device))
    _resume(run, state, resume)
    loop = _OuterLoop(settings, dataset, store, run, inner, labels.to(device), evaluator)
    stopped_at_time_limit = loop.run_until_finished(state)
    return loop.finish(state, stopped_at_time_limit)
