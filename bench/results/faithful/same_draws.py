"""Ours (InnerLoop + LearnedStepSizes, as `distill --method mtt` runs them) and the reference MTT statements side by side
on the same initial images, experts, start epochs and learning rates, augmentation off: where the two outer loops part.

Prints, per iteration, the start epoch, both matching losses, both learned step sizes and how far the images have
drifted apart; for the first iterations also the cosine of the two pixel gradients and both step-size gradients.
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from galaxy_distill.data.augment import DiffAugment
from galaxy_distill.data.registry import load_prepared
from galaxy_distill.distill.matching import InnerLoop
from galaxy_distill.distill.run import initial_images
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.distill.step_size import LearnedStepSizes
from galaxy_distill.experts import ExpertStore
from galaxy_distill.models.functional import FlatParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--experts", required=True)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--syn-steps", type=int, default=30)
    parser.add_argument("--expert-epochs", type=int, default=2)
    parser.add_argument("--max-start-epoch", type=int, default=20)
    parser.add_argument("--lr-img", type=float, default=1e5)
    parser.add_argument("--lr-lr", type=float, default=1e-5)
    parser.add_argument("--lr-teacher", type=float, default=0.01)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial images and of the expert and epoch draws")
    args = parser.parse_args()

    device = torch.device(args.device)
    dataset, store = load_prepared(args.dataset), ExpertStore(args.experts)
    settings = DistillSettings(dataset=args.dataset, experts=args.experts, ipc=args.ipc, seed=args.seed)
    images, labels = initial_images(settings, dataset)
    images, labels = images.to(device), labels.to(device)
    flat_view = FlatParams(store.model_spec.build().to(device))
    inner = InnerLoop(flat_view, args.syn_steps, len(images), DiffAugment(strategy="none"))

    ours = images.clone().requires_grad_(True)
    ours_optimizer = torch.optim.SGD([ours], lr=args.lr_img, momentum=0.5)
    ours_alpha = LearnedStepSizes.start(args.lr_teacher, 1, device)

    theirs = images.clone().requires_grad_(True)
    syn_lr = torch.tensor(args.lr_teacher, device=device).requires_grad_(True)
    optimizer_img = torch.optim.SGD([theirs], lr=args.lr_img, momentum=0.5)
    optimizer_lr = torch.optim.SGD([syn_lr], lr=args.lr_lr, momentum=0.5)

    rng = np.random.default_rng(args.seed)
    for iteration in range(1, args.iterations + 1):
        expert, epoch = int(rng.integers(len(store))), int(rng.integers(0, args.max_start_epoch))
        start = store.parameters_at(expert, epoch).to(device)
        target = store.parameters_at(expert, epoch + args.expert_epochs).to(device)

        gradients = inner.loss_and_gradients(ours, labels, ours_alpha.values[0].clone(), start, target,
                                             torch.Generator().manual_seed(iteration))
        ours.grad = gradients.images
        ours_optimizer.step()
        ours_alpha.step(0, gradients.step_size, args.lr_lr)

        student_params = [start.clone().requires_grad_(True)]
        for _ in range(args.syn_steps):
            order = torch.randperm(len(theirs), device=device)
            ce_loss = F.cross_entropy(flat_view.forward(student_params[-1], theirs[order]), labels[order])
            grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
            student_params.append(student_params[-1] - syn_lr * grad)
        grand_loss = (F.mse_loss(student_params[-1], target, reduction="sum")
                      / F.mse_loss(start, target, reduction="sum"))
        optimizer_img.zero_grad()
        optimizer_lr.zero_grad()
        grand_loss.backward()
        if iteration <= 3:
            cosine = float(F.cosine_similarity(gradients.images.flatten(), theirs.grad.flatten(), dim=0))
            print(f"  gradients at {iteration}: pixel cosine {cosine:.6f}, |ours| {float(gradients.images.norm()):.4g} "
                  f"|theirs| {float(theirs.grad.norm()):.4g}; step size ours {float(gradients.step_size):.6g} "
                  f"theirs {float(syn_lr.grad):.6g}")
        optimizer_img.step()
        optimizer_lr.step()
        with torch.no_grad():
            drift = float((ours - theirs).norm() / theirs.norm())
        print(f"{iteration:4d} epoch {epoch:2d} loss {float(gradients.loss):.4f} / {float(grand_loss):.4f} "
              f"alpha {ours_alpha.value(0):.5f} / {float(syn_lr):.5f} image drift {drift:.2e}", flush=True)


if __name__ == "__main__":
    main()
