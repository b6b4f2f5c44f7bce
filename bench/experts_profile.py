"""Milliseconds per expert training step for each way of running the stacked experts (for choosing the defaults).

    python bench/experts_profile.py --experts 10 25 50 [--compiled] [--kernels 12] \
        --out bench/results/experts/experts_profile.json

One step as `galaxy_distill.experts.train` takes it: E ConvNets (CIFAR-10 shape: 3 x 32 x 32,
10 classes, depth 3, width 128, instance norm) each on its own batch, forward, cross-entropy,
gradients w.r.t. the stacked parameters, SGD update. The eager step at each precision (--precisions)
is timed, and with --compiled the compiled one (on GPUs one CUDA graph a step, a CUDA stream per
network, as --compile trains): 3 warm-up, `--timed` timed steps, median, on random images;
augmentation (one epoch's draw, then its per-step application) is timed apart. The projection scales the median to 100 experts x 50 epochs of 50,000 images.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, environment, kernel_profile  # noqa: E402

from galaxy_distill.data.augment import DiffAugment  # noqa: E402
from galaxy_distill.experts.train import ExpertStep, _epoch_draws  # noqa: E402
from galaxy_distill.models import build_model  # noqa: E402
from galaxy_distill.models.functional import FlatParams  # noqa: E402
from galaxy_distill.runtime import configure_backends, resolve_device, seeded_generator  # noqa: E402
from galaxy_distill.atomic_io import write_json  # noqa: E402

TRAIN_IMAGES, EPOCHS, EXPERTS = 50_000, 50, 100


def median_ms(step, warmup: int, timed: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(timed):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, nargs="+", default=[25])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--timed", type=int, default=10)
    parser.add_argument("--compiled", action="store_true",
                        help="also time the compiled step (what --compile trains with; a minute or more to compile each)")
    parser.add_argument("--compiled-only", action="store_true", help="time only the compiled step")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16-full"], choices=["fp32", "bf16-full"])
    parser.add_argument("--kernels", type=int, default=0, metavar="N",
                        help="also record each way's N most time-consuming operators (torch.profiler, 3 steps)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS / "experts" / "experts_profile.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    configure_backends(device)
    compiles = [True] if args.compiled_only else [False, True] if args.compiled else [False]
    flat_view = FlatParams(build_model("convnet", 3, 10, 32, depth=3, width=128, norm="instancenorm").to(device))
    steps_per_epoch = math.ceil(TRAIN_IMAGES / args.batch)
    rows = []
    for experts in args.experts:
        generator = seeded_generator(0)
        flats = torch.stack([flat_view.init_flat(generator) for _ in range(experts)])
        images = torch.randn(experts, args.batch, 3, 32, 32, device=device)
        labels = torch.randint(0, 10, (experts, args.batch), device=device)
        augment = DiffAugment()
        draws = _epoch_draws(augment, experts, steps_per_epoch * args.batch, args.batch, 32, generator, device)
        counter = itertools.count()

        def augmentation() -> None:
            augment.apply(images.flatten(0, 1), draws[next(counter) % len(draws)])

        augment_ms = median_ms(augmentation, 3, args.timed, device)
        draw_ms = median_ms(lambda: _epoch_draws(augment, experts, steps_per_epoch * args.batch, args.batch, 32, generator,
                                                 device), 1, 3, device) / steps_per_epoch
        for compile, precision in itertools.product(compiles, args.precisions):
            state = {"flats": flats.clone()}
            torch._dynamo.reset()  # every way compiles afresh, within torch.compile's recompile limit
            expert_step = ExpertStep(flat_view, precision, compile)
            graphed = compile and device.type == "cuda"

            def step() -> None:
                gradient, _ = expert_step(state["flats"], images, labels)
                state["flats"] = state["flats"] - 0.01 * gradient

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                step_ms = median_ms(step, 3, args.timed, device)
            except torch.OutOfMemoryError:
                step_ms = None
            per_expert = None if step_ms is None else (step_ms + augment_ms + draw_ms) / experts
            row = {"experts": experts, "batch": args.batch, "precision": precision, "compile": compile,
                   "whole_step_graph": graphed, "network_streams": graphed, "step_ms": step_ms,
                   "augment_ms": augment_ms, "draw_ms_per_step": draw_ms, "ms_per_expert_step": per_expert,
                   "projected_min_100x50": None if per_expert is None else per_expert * EXPERTS * EPOCHS * steps_per_epoch / 60_000,
                   "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
            if args.kernels and step_ms is not None:
                row.update(kernel_profile(step, device, args.kernels))
            rows.append(row)
            print(f"E={experts:3d} {precision} compile={compile} step graph={graphed} "
                  f"step {step_ms if step_ms is None else round(step_ms, 2)} ms + augment {augment_ms:.2f} + draw "
                  f"{draw_ms:.2f} ms -> {per_expert if per_expert is None else round(per_expert, 3)} ms/expert-step, "
                  f"100x50 projected {row['projected_min_100x50'] if per_expert is None else round(row['projected_min_100x50'], 1)} min",
                  flush=True)
            write_json(args.out, {**environment(), "train_images": TRAIN_IMAGES, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
