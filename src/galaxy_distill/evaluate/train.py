"""The standard evaluation protocol: train fresh networks on an image set, test them.

As in MTT: SGD with momentum 0.9 and weight decay 5e-4, the learned step size as the
learning rate, x0.1 at half the epochs, differentiable augmentation on every batch.
Network number i is seeded by (seed, i) alone, so networks can be trained in any order,
or skipped when an interrupted evaluation resumes, without changing any result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from galaxy_distill import distributed
from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.models.spec import ModelSpec
from galaxy_distill.progress import progress
from galaxy_distill.runtime import seeded_generator

DIVERGENCE_CHECK_EPOCHS = 50


@dataclass(frozen=True)
class TrainingProtocol:
    epochs: int = 1000
    lr: float = 0.01
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "color_crop_cutout_flip_scale_rotate"


@dataclass
class Accuracy:
    overall: float
    per_class: list[float]
    confusion: list[list[int]]


@dataclass
class EvaluationSummary:
    accuracies: list[float]
    per_class_mean: list[float]
    confusion_total: list[list[int]]
    per_network: list[Accuracy] = field(repr=False, default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


class NetworkLog(Protocol):
    """Results of single networks kept outside the process, so an interrupted evaluation can resume."""

    def finished(self, index: int) -> dict[str, Accuracy] | None:
        """Accuracy per test set of network `index`, if it was already trained."""

    def record(self, index: int, accuracies: dict[str, Accuracy], seconds: float) -> None:
        """Keep the results of network `index` (durably, before the next network starts)."""


def network_seed(seed: int, index: int) -> int:
    return seed * 7919 + index


def train_network(spec: ModelSpec, images: torch.Tensor, labels: torch.Tensor, protocol: TrainingProtocol,
                  seed: int, device: torch.device) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = spec.build().to(device)
    generator = seeded_generator(seed)
    augment = DiffAugment(strategy=protocol.augment)
    optimizer = torch.optim.SGD(network.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                                weight_decay=protocol.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[protocol.epochs // 2], gamma=0.1)
    images, labels = images.to(device), labels.to(device)
    batch_size = min(protocol.batch_size, len(images))
    network.train()
    for epoch in range(protocol.epochs):
        order = torch.randperm(len(images), generator=generator).to(device)
        for start in range(0, len(images), batch_size):
            indices = order[start : start + batch_size]
            batch = augment(images[indices], generator)
            loss = F.cross_entropy(network(batch), labels[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        # Checked every DIVERGENCE_CHECK_EPOCHS: a small set takes one step an epoch, and reading the loss makes the
        # host wait for the GPU each time; a non-finite loss poisons the weights, so a later check still sees it.
        if ((epoch + 1) % DIVERGENCE_CHECK_EPOCHS == 0 or epoch + 1 == protocol.epochs) and not torch.isfinite(loss):
            raise GalaxyDistillError(
                f"evaluation network (seed {seed}) diverged: loss {float(loss.detach())} by epoch {epoch + 1} at learning rate "
                f"{protocol.lr:g}; the learning rate is too high for this image set"
            )
        scheduler.step()
    return network


@torch.no_grad()
def measure_accuracy(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     device: torch.device, chunk: int = 512) -> Accuracy:
    network.eval()
    predictions = torch.cat([network(images[i : i + chunk].to(device)).argmax(-1).cpu() for i in range(0, len(images), chunk)])
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels.cpu(), predictions), torch.ones_like(predictions), accumulate=True)
    per_class = (confusion.diag().float() / confusion.sum(1).clamp_min(1)).tolist()
    return Accuracy(float((predictions == labels.cpu()).float().mean()), per_class, confusion.tolist())


def evaluate_image_set(spec: ModelSpec, train: tuple[torch.Tensor, torch.Tensor],
                       tests: dict[str, tuple[torch.Tensor, torch.Tensor]], protocol: TrainingProtocol,
                       num_networks: int, seed: int, device: torch.device,
                       description: str = "evaluating", log: NetworkLog | None = None) -> dict[str, EvaluationSummary]:
    """Train `num_networks` fresh networks on `train`; accuracy on each named test set.

    With a `log`, networks it already holds are not trained again and each new one is recorded.
    Under torchrun the ranks train one network each per round and all return every result.
    """
    by_index: dict[int, dict[str, Accuracy]] = {}
    bar = progress(total=num_networks, desc=description, unit="net", leave=False, main_process=distributed.is_main())
    for index in distributed.rounds(range(num_networks)):
        outcome = None
        if index is not None:
            accuracies, seconds = (log.finished(index) if log is not None else None), None
            if accuracies is None:
                started = time.perf_counter()
                network = train_network(spec, *train, protocol, seed=network_seed(seed, index), device=device)
                accuracies = {name: measure_accuracy(network, images, labels, spec.num_classes, device)
                              for name, (images, labels) in tests.items()}
                seconds = time.perf_counter() - started
            outcome = (index, accuracies, seconds)
        for number, accuracies, seconds in filter(None, distributed.all_gather(outcome)):
            if log is not None and seconds is not None:
                log.record(number, accuracies, seconds)
            by_index[number] = accuracies
            bar.update(1)
    bar.close()
    results = {name: [by_index[number][name] for number in range(num_networks)] for name in tests}
    return {
        name: EvaluationSummary(
            [r.overall for r in found],
            np.mean([r.per_class for r in found], axis=0).tolist(),
            np.sum([r.confusion for r in found], axis=0).tolist(),
            found,
        )
        for name, found in results.items()
    }
