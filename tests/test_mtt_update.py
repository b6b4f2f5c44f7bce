"""One outer update of `distill --method mtt` pinned to the reference MTT's statements.

The reference (GeorgeCazenavette/mtt-distillation, distill.py) keeps `syn_lr` itself as a leaf tensor
initialised to lr_teacher, optimises it with SGD(lr_lr, momentum 0.5) beside the pixels' SGD(lr_img,
momentum 0.5), and unrolls the student with `student_params[-1] - syn_lr * grad`. The re-implementation
below writes those statements out with plain autograd on a tiny ConvNet, follows the experts and start
epochs our run logged, and must land on our images, step size and both momentum buffers. A step size kept
in log space, or updated by another optimizer, fails it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reliability_helpers import DATASET, TinyWorkspace, copy_workspace

from galaxy_distill.data.registry import load_prepared
from galaxy_distill.distill.checkpoint import load_checkpoint
from galaxy_distill.distill.run import distill, initial_images
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.experts import ExpertStore
from galaxy_distill.models.functional import FlatParams
from galaxy_distill.rundir import RunDir

ITERATIONS = 3


def reference_mtt(settings: DistillSettings, store: ExpertStore, flat_view: FlatParams, image_syn: torch.Tensor,
                  label_syn: torch.Tensor, draws: list[tuple[int, int]]) -> dict[str, torch.Tensor | list[float]]:
    """distill.py's training section and outer-loop body (all images in every step, augmentation off)."""
    image_syn = image_syn.detach().clone().requires_grad_(True)
    syn_lr = torch.tensor(settings.lr_init).detach().requires_grad_(True)
    optimizer_img = torch.optim.SGD([image_syn], lr=settings.lr_img, momentum=0.5)
    optimizer_lr = torch.optim.SGD([syn_lr], lr=settings.lr_lr, momentum=0.5)
    optimizer_img.zero_grad()
    num_params = flat_view.total
    step_sizes = []
    for expert, start_epoch in draws:
        starting_params = store.parameters_at(expert, start_epoch).float()
        target_params = store.parameters_at(expert, start_epoch + settings.expert_epochs).float()
        student_params = [starting_params.clone().requires_grad_(True)]
        for _ in range(settings.syn_steps):
            x = flat_view.forward(student_params[-1], image_syn)
            ce_loss = F.cross_entropy(x, label_syn)
            grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
            student_params.append(student_params[-1] - syn_lr * grad)
        param_loss = F.mse_loss(student_params[-1], target_params, reduction="sum") / num_params
        param_dist = F.mse_loss(starting_params, target_params, reduction="sum") / num_params
        grand_loss = param_loss / param_dist
        optimizer_img.zero_grad()
        optimizer_lr.zero_grad()
        grand_loss.backward()
        optimizer_img.step()
        optimizer_lr.step()
        step_sizes.append(float(syn_lr.detach()))
    return {"images": image_syn.detach(), "step_size": syn_lr.detach(), "step_sizes": step_sizes,
            "pixel_momentum": optimizer_img.state[image_syn]["momentum_buffer"],
            "step_size_momentum": optimizer_lr.state[syn_lr]["momentum_buffer"]}


def test_one_outer_update_follows_the_reference_statements(tiny: TinyWorkspace, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = copy_workspace(tiny, tmp_path / "home", monkeypatch)
    settings = DistillSettings(dataset=DATASET, experts=workspace.experts, method="mtt", ipc=2, syn_steps=3,
                               expert_epochs=1, max_start_epoch=2, iterations=ITERATIONS, lr_img=100.0, lr_lr=1e-6,
                               lr_init=0.01, augment="none", checkpoint_every=1, device="cpu", cuda_graphs=False)
    dataset, store = load_prepared(DATASET), ExpertStore(workspace.experts)
    run_dir = tmp_path / "run"
    distill(settings, dataset, store, run_dir)

    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    draws = [(int(row["expert"]), int(row["start_epoch"])) for row in rows]
    assert len(draws) == ITERATIONS and all(row["faults"] == "0" for row in rows)
    images, labels = initial_images(settings, dataset)
    expected = reference_mtt(settings, store, FlatParams(store.model_spec.build()), images, labels, draws)

    tensors, _, _ = load_checkpoint(RunDir(run_dir))
    torch.testing.assert_close(tensors["images"], expected["images"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tensors["pixel.0.momentum_buffer"], expected["pixel_momentum"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(tensors["step_sizes"], expected["step_size"].reshape(1), rtol=1e-5, atol=0)
    torch.testing.assert_close(tensors["step_size_momentum"], expected["step_size_momentum"].reshape(1), rtol=1e-4, atol=0)
    logged = [float(row["step_size"]) for row in rows]
    torch.testing.assert_close(torch.tensor(logged), torch.tensor(expected["step_sizes"]), rtol=1e-5, atol=0)
    # The step size really moved, so the comparison would see another update rule.
    assert abs(logged[-1] - settings.lr_init) > 1e-3 * settings.lr_init
