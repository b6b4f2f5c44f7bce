"""Train expert networks on real data and store their parameter trajectories.

Experts are trained `parallel` at a time as one stacked parameter tensor, one network after
another; compiled on a GPU, a step of all of them replays as one CUDA graph, each network on a
stream of its own. A group of experts shares one random stream (shuffles, augmentation); an expert is thus defined
by (seed, group). Running the command again on the same --out resumes: experts whose
files are intact (by checksum) are kept, and only unfinished or damaged groups are
trained again, bit for bit.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from galaxy_distill import distributed
from galaxy_distill.settings import settings_differences
from galaxy_distill.data.augment import AugmentDraw, DiffAugment
from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts.settings import ExpertSettings, automatic_batch_size, few_steps_warning
from galaxy_distill.experts.store import MANIFEST_FILE, expert_file_name, parse_manifest
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.models.spec import ModelSpec
from galaxy_distill.progress import progress
from galaxy_distill.runtime import (
    CapturedCall,
    configure_backends,
    resolve_device,
    seeded_generator,
)
from galaxy_distill.atomic_io import (
    file_matches,
    read_json,
    remove_interrupted_writes,
    save_tensors,
    write_json,
)

def model_spec_for(settings: ExpertSettings, dataset: PreparedDataset) -> ModelSpec:
    channels, height, _ = dataset.image_shape
    return ModelSpec(name=settings.architecture, channels=channels, num_classes=dataset.num_classes, image_size=height,
                     depth=settings.depth, width=settings.width, norm=settings.norm)


@dataclass
class ExpertStep:
    """Gradients [E, P] of each stacked expert's mean cross-entropy on its own batch, and the summed loss.

    Images [E, B, C, H, W], labels [E, B]; the networks run one after another. Under "bf16-full"
    parameters and images are cast to bfloat16 so that every activation is stored in bf16 (the
    normalisation's statistics still accumulate in float32 inside its kernel). Either way the stacked
    parameters, their gradients and the loss stay float32: an expert needs no bit-exact gradient, only
    a faithful trajectory of its own training.
    """

    flat_view: FlatParams
    precision: str = "fp32"
    compile: bool = False
    """torch.compile one network's loss, fusing the memory-bound normalisation, ReLU and pooling work. On GPUs the
    compiled step of all networks is then recorded as one CUDA graph per batch shape and replayed, each network on a
    CUDA stream of its own: a step is many small kernels, launched by the host more slowly than an H200 runs them, and
    one network's kernels leave room for another's (docs/performance.md: the fastest way measured)."""

    def __post_init__(self) -> None:
        # dynamic=False: the epoch's shorter last batch gets its own static graph instead of a symbolic-shape recompile.
        self._network_loss = torch.compile(self._one_network_loss, dynamic=False) if self.compile else self._one_network_loss
        # Scoring is forward-only and outside the step's graph: fused kernels alone.
        self._scoring_logits = torch.compile(self._logits, dynamic=False) if self.compile else self._logits
        self._step_graphs: dict[tuple[int, ...], CapturedCall] = {}
        self._streams: list[torch.cuda.Stream] = []

    def _logits(self, flat: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16-full":
            # The cast's backward hands the float32 master parameters their gradient.
            return self.flat_view.forward(flat.to(torch.bfloat16), images.to(torch.bfloat16)).float()
        return self.flat_view.forward(flat, images)

    def _one_network_loss(self, flat: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self._logits(flat, images), labels, reduction="sum")

    def __call__(self, flats: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient, loss); compiled on a GPU both are the step graph's buffers, overwritten by the next call."""
        if not self._graphed(flats):
            return self._step(flats, images, labels)
        inputs = {"flats": flats, "images": images, "labels": labels}
        captured = self._step_graphs.get(tuple(images.shape))
        if captured is None:
            captured = self._step_graphs[tuple(images.shape)] = CapturedCall(self._step, inputs)
        return captured(inputs)

    def _graphed(self, flats: torch.Tensor) -> bool:
        return self.compile and flats.is_cuda

    def _step(self, flats: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flats = flats.detach().requires_grad_(True)
        if self._graphed(flats):
            loss = sum(self._concurrent_losses(flats, images, labels))
        else:
            # All forwards, then one backward: a backward after each network was slower in the compiled steps measured
            # (10.5 against 13.9 ms for 10 networks at bf16-full, docs/performance.md).
            loss = sum(self._network_loss(flat, x, y) for flat, x, y in zip(flats, images, labels, strict=True))
        loss = loss / labels.shape[1]
        (gradient,) = torch.autograd.grad(loss, flats)
        return gradient, loss.detach()

    def _concurrent_losses(self, flats: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Each network's loss computed on a CUDA stream of its own; autograd runs a network's backward on the stream
        of its forward, so in a captured graph the networks become parallel branches."""
        while len(self._streams) < len(flats):
            self._streams.append(torch.cuda.Stream(flats.device))
        origin = torch.cuda.current_stream(flats.device)
        losses = []
        for stream, flat, x, y in zip(self._streams, flats, images, labels, strict=False):
            stream.wait_stream(origin)
            with torch.cuda.stream(stream):
                losses.append(self._network_loss(flat, x, y))
        for stream in self._streams[: len(flats)]:
            origin.wait_stream(stream)
        return losses

    @torch.no_grad()
    def accuracy(self, flats: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, chunk: int = 2500) -> torch.Tensor:
        """Accuracy [E] of each stacked network on the shared (images, labels), in the step's precision, compiled when
        the step is (one network after another on large chunks: few enough launches)."""
        correct = torch.zeros(len(flats), device=flats.device)
        for index, flat in enumerate(flats):
            for start in range(0, len(images), chunk):
                predicted = self._scoring_logits(flat, images[start : start + chunk]).argmax(-1)
                correct[index] += (predicted == labels[start : start + chunk]).sum()
        return correct / len(images)


def _epoch_order(count: int, num_images: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Each expert's shuffle of the training images for one epoch, [count, num_images], copied without making the
    host wait for the GPU's queued steps."""
    order = torch.stack([torch.randperm(num_images, generator=generator) for _ in range(count)])
    return order.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else order.to(device)


def _epoch_draws(augment: DiffAugment, count: int, num_images: int, batch_size: int, image_size: int,
                 generator: torch.Generator, device: torch.device) -> list[AugmentDraw]:
    """One epoch's augmentation, drawn in one go (one pinned copy instead of one per step) and split into steps.

    The draws equal those of one `draw` per step in order, the last (shorter) batch included.
    """
    full_steps, remainder = divmod(num_images, batch_size)
    epoch = augment.draw_many(full_steps, count * batch_size, image_size, generator, device)
    draws = [epoch.step(index) for index in range(full_steps)]
    if remainder:
        draws.append(augment.draw(count * remainder, image_size, generator, device))
    return draws


def _train_group(settings: ExpertSettings, step_gradients: ExpertStep, expert_ids: list[int], train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], augment: DiffAugment, bar: tqdm) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = train
    device = images.device
    flat_view = step_gradients.flat_view
    group_seed = settings.seed * 1_000_003 + expert_ids[0]
    generator = seeded_generator(group_seed)
    flats = torch.stack([flat_view.init_flat(generator) for _ in expert_ids]).to(device)
    velocity = torch.zeros_like(flats)
    count = len(expert_ids)
    trajectory = torch.empty(count, settings.epochs + 1, flats.shape[1])
    trajectory[:, 0] = flats.cpu()
    accuracy = torch.full((count, settings.epochs), float("nan"))  # NaN: an epoch not scored (test_every)
    num_images = len(images)
    batch_size = min(settings.batch_size, num_images)

    def shuffle_and_draws() -> tuple[torch.Tensor, list[AugmentDraw]]:
        return (_epoch_order(count, num_images, generator, device),
                _epoch_draws(augment, count, num_images, batch_size, images.shape[-1], generator, device))

    upcoming = shuffle_and_draws()
    for epoch in range(settings.epochs):
        order, draws = upcoming
        for step, start in enumerate(range(0, num_images, batch_size)):
            batch = order[:, start : start + batch_size]
            x = images[batch]
            x = augment.apply(x.flatten(0, 1), draws[step]).view_as(x)
            gradient, loss = step_gradients(flats, x, labels[batch])
            with torch.no_grad():
                if settings.weight_decay:
                    gradient = gradient + settings.weight_decay * flats
                velocity = settings.momentum * velocity + gradient
                flats = flats - settings.lr * velocity
        if epoch + 1 < settings.epochs:
            # The next epoch's shuffle and augmentation (host work), drawn while the GPU still runs this epoch's steps.
            upcoming = shuffle_and_draws()
        # Checked once an epoch, not every step: reading the loss makes the host wait for the GPU, and a
        # non-finite loss poisons the parameters, so the epoch's last loss shows any divergence within it.
        if not torch.isfinite(loss):
            raise GalaxyDistillError(f"expert training diverged (loss {float(loss.detach())}) in epoch {epoch + 1}; lower --lr")
        trajectory[:, epoch + 1] = flats.cpu()
        if (epoch + 1) % settings.test_every == 0 or epoch + 1 == settings.epochs:
            accuracy[:, epoch] = step_gradients.accuracy(flats, *test).cpu()
            bar.set_postfix(test_acc=f"{accuracy[:, epoch].mean():.3f}")
        bar.update(count)
    return trajectory, accuracy


def train_experts(settings: ExpertSettings, dataset: PreparedDataset, out_dir: Path,
                  on_round: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train (or finish training) the expert store in out_dir; returns the manifest path.

    `on_round` (rank 0) sees the manifest after every round of groups, e.g. to record progress.

    Under torchrun the groups are shared out among the ranks, each writing its own expert
    files; rank 0 alone writes the manifest, after every round of groups.
    """
    device = distributed.setup(resolve_device(settings.device))
    configure_backends(device)
    settings = _with_batch_size(settings, len(dataset.labels("train")))
    spec = model_spec_for(settings, dataset)
    flat_view = FlatParams(spec.build().to(device))
    manifest_path = out_dir / MANIFEST_FILE
    manifest = _open_manifest(manifest_path, settings, dataset, spec, flat_view)
    done = {entry["id"] for entry in manifest["experts"]}
    train = tuple(t.to(device) for t in dataset.tensors("train"))
    test = tuple(t.to(device) for t in dataset.tensors("test"))
    augment = DiffAugment(strategy=settings.augment)
    # One step object for every group: a compiled step is compiled once, not once a group.
    step_gradients = ExpertStep(flat_view, settings.precision, settings.compile)
    groups = [list(range(g, min(g + settings.parallel, settings.num_experts))) for g in range(0, settings.num_experts, settings.parallel)]
    bar = progress(total=settings.num_experts * settings.epochs, initial=len(done) * settings.epochs,
                   desc="experts (expert-epochs)", unit="ep", main_process=distributed.is_main())
    pending = [expert_ids for expert_ids in groups if not all(i in done for i in expert_ids)]
    if settings.compile and pending and distributed.is_main():
        # Otherwise the bar sits at its first epoch without a word while torch.compile works.
        tqdm.write("compiling the expert step (torch.compile): a minute or more before the first epoch")

    def store_group(expert_ids: list[int], trajectory: torch.Tensor, accuracy: torch.Tensor, seconds: float) -> list[dict[str, Any]]:
        entries = []
        for position, expert_id in enumerate(expert_ids):
            if expert_id in done:
                continue
            file_name = expert_file_name(expert_id)
            digest = save_tensors(out_dir / file_name, {"trajectory": trajectory[position]})
            entries.append({
                "id": expert_id, "file": file_name, "sha256": digest,
                "test_accuracy": [None if math.isnan(value) else value for value in accuracy[position].tolist()],
                "group_seconds": seconds,
            })
        return entries

    def record_round(stored: Future | None) -> None:
        """Adds a round's stored experts (every rank's) to the manifest, once this rank's files are written."""
        entries = [] if stored is None else stored.result()
        gathered = distributed.all_gather(entries)
        bar.update(settings.epochs * (sum(map(len, gathered)) - len(entries)))
        manifest["experts"] = sorted(manifest["experts"] + [entry for part in gathered for entry in part], key=lambda e: e["id"])
        if distributed.is_main():
            write_json(manifest_path, manifest)
            if on_round is not None:
                on_round(manifest)

    distributed.barrier()  # no rank writes before rank 0 has cleaned the store
    # A group's files are written while the next group trains (ten CIFAR-10 experts of 50 epochs are hundreds of MB:
    # seconds of writing and hashing); the manifest lists them one round later.
    with ThreadPoolExecutor(max_workers=1) as writer:
        previous: list[Future | None] = []  # the last round's writing (None where this rank had no group)
        for expert_ids in distributed.rounds(pending):
            stored = None
            if expert_ids is not None:
                started = time.perf_counter()
                try:
                    trajectory, accuracy = _train_group(settings, step_gradients, expert_ids, train, test, augment, bar)
                except BaseException:
                    if previous and distributed.world_size() == 1:
                        record_round(previous.pop())  # an error or Ctrl-C keeps the group that finished before
                    raise
                seconds = time.perf_counter() - started
                # A line per group, so that a log (no progress bar off a terminal) shows the speed of an unfinished run.
                tqdm.write(f"experts {expert_ids[0]}-{expert_ids[-1]}: {settings.epochs} epochs in {seconds:.1f} s, "
                           f"final test accuracy {accuracy[:, -1].mean():.4f}")
                stored = writer.submit(store_group, expert_ids, trajectory, accuracy, seconds)
            if previous:
                record_round(previous.pop())
            previous.append(stored)
        if previous:
            record_round(previous.pop())
    distributed.barrier()  # the manifest is complete when any rank returns
    bar.close()
    return manifest_path


def _with_batch_size(settings: ExpertSettings, train_images: int) -> ExpertSettings:
    """The settings with a batch size: the automatic one (stored as chosen, so a resume trains on with the same
    batches), or the user's, warned about when it leaves too few steps per epoch."""
    if settings.batch_size is None:
        return settings.model_copy(update={"batch_size": automatic_batch_size(train_images)})
    warning = few_steps_warning(train_images, settings.batch_size)
    if warning and distributed.is_main():
        tqdm.write(warning, file=sys.stderr)
    return settings


def _open_manifest(manifest_path: Path, settings: ExpertSettings, dataset: PreparedDataset, spec: ModelSpec,
                   flat_view: FlatParams) -> dict[str, Any]:
    """The store's manifest: the one there (checked against these settings and images, listing only intact
    experts), or a new one."""
    out_dir = manifest_path.parent
    resolved = json.loads(settings.model_dump_json())
    if manifest_path.is_file():
        manifest = read_json(manifest_path)
        parse_manifest(manifest_path, manifest)
        differences = settings_differences(ExpertSettings, manifest["settings"], resolved, str(manifest_path))
        if differences:
            raise GalaxyDistillError(f"{manifest_path}: an expert store with other settings exists here "
                                     f"({'; '.join(differences)}); use another --out or the same settings")
        if manifest["dataset"]["images_sha256"] != dataset.meta["images_sha256"]:
            raise GalaxyDistillError(
                f"{manifest_path}: these experts were trained on other images than '{dataset.name}' holds now; use another --out"
            )
        # Rank 0 alone cleans the store and checks every file; the others take its verdict.
        intact = None
        if distributed.is_main():
            remove_interrupted_writes(out_dir)
            intact = _intact_experts(out_dir, manifest["experts"])
        manifest["experts"] = distributed.all_gather(intact)[0]
    else:
        manifest = {
            "settings": resolved,
            "dataset": {"name": dataset.name, "directory": str(dataset.directory), "images_sha256": dataset.meta["images_sha256"]},
            "model": json.loads(spec.model_dump_json()),
            "param_count": flat_view.total,
            "parameter_layout": [{"name": n, "shape": list(s)} for n, s in zip(flat_view.names, flat_view.shapes)],
            "experts": [],
        }
    return manifest


def _intact_experts(out_dir: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifest entries whose files match their checksums; the others are reported and will be trained again."""
    intact = []
    for entry in entries:
        path = out_dir / entry["file"]
        if file_matches(path, entry["sha256"]):
            intact.append(entry)
        else:
            tqdm.write(f"warning: {path}: missing or corrupt (checksum mismatch); training expert {entry['id']} again",
                       file=sys.stderr)
    return intact


def summarize(manifest: dict[str, Any]) -> dict[str, float]:
    final = torch.tensor([entry["test_accuracy"][-1] for entry in manifest["experts"]])
    return {"experts": len(final), "final_test_acc_mean": float(final.mean()),
            "final_test_acc_std": float(final.std()) if len(final) > 1 else 0.0}
