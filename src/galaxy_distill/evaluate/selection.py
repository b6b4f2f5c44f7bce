"""The evaluator a distillation run calls to choose its checkpoint on the validation split."""

from __future__ import annotations

import torch

from galaxy_distill.data.registry import PreparedDataset
from galaxy_distill.distill.run import Evaluator
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.evaluate.train import TrainingProtocol, evaluate_image_set
from galaxy_distill.models.spec import ModelSpec
from galaxy_distill.runtime import resolve_device


def validation_evaluator(spec: ModelSpec, dataset: PreparedDataset, settings: DistillSettings) -> Evaluator:
    """Train `eval_networks` networks on the current synthetic set; validation accuracy selects, test is only logged."""
    device = resolve_device(settings.device)
    validation = dataset.tensors("val")
    test = dataset.tensors("test")

    def evaluate(images: torch.Tensor, labels: torch.Tensor, step_size: float) -> dict[str, float]:
        protocol = TrainingProtocol(epochs=settings.eval_epochs, lr=step_size, augment=settings.augment)
        train = (images.detach().cpu(), labels.cpu())
        summaries = evaluate_image_set(spec, train, {"val": validation, "test": test}, protocol, settings.eval_networks,
                                       settings.seed, device, "checkpoint evaluation")
        return {name: summary.mean for name, summary in summaries.items()}

    return evaluate
