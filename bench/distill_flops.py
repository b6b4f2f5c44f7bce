"""Arithmetic of one outer distillation iteration on the reference MTT configs: ours against MTT's unrolled formulation.

Counts the floating-point operations of convolutions and matrix products (torch.utils.flop_counter; the
normalisation, ReLU, pooling and augmentation are not counted: they are memory-bound) for
`InnerLoop.loss_and_gradients` (ours: a forward sweep, then per step a recomputed gradient and its
Hessian-vector and mixed products) and for `InnerLoop.unrolled_loss` with its backward pass (MTT's: one graph
through all steps, differentiated once). Both are linear in the batch, and in the steps after the first (MTT's
first step is cheaper: nothing flows back into the start), so each is counted on the CPU for one image at one and
at two steps, and extended: batch x (first step + (syn_steps - 1) x each further step), which equals a direct
count (tests/test_bench_speed.py). With the seconds per iteration of bench/distill_speed.py,
`bench/tables.py flops` turns them into achieved TFLOP/s.

    python bench/distill_flops.py [--configs NAME ...] [--out bench/results/speed/distill_flops.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, environment  # noqa: E402
from distill_speed import NETWORK, REFERENCE, matching_problem  # noqa: E402

from galaxy_distill.data.augment import DiffAugment  # noqa: E402
from galaxy_distill.distill.matching import InnerLoop  # noqa: E402
from galaxy_distill.runtime import seeded_generator  # noqa: E402
from galaxy_distill.atomic_io import write_json  # noqa: E402


def counted_flops(channels: int, resolution: int, classes: int, steps: int, batch: int, network: dict = NETWORK
                  ) -> dict[str, int]:
    """FLOPs of one outer iteration at `steps` x `batch` (ours and MTT's unrolled), and of one image's forward pass."""
    config = {"channels": channels, "resolution": resolution, "classes": classes, "ipc": -(-batch // classes)}
    flat_view, start, target, images, labels = matching_problem(config, torch.device("cpu"), seeded_generator(0), network)
    inner = InnerLoop(flat_view, steps, batch, DiffAugment(), cuda_graphs=False)
    with FlopCounterMode(display=False) as ours:
        inner.loss_and_gradients(images, labels, torch.tensor(0.01), start, target, seeded_generator(1))
    pixels = images.clone().requires_grad_(True)
    step_size = torch.tensor(0.01, requires_grad=True)
    with FlopCounterMode(display=False) as unrolled:
        loss = inner.unrolled_loss(pixels, labels, step_size, start, target, seeded_generator(1))
        torch.autograd.grad(loss, (pixels, step_size))
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        flat_view.forward(start, images[:1])
    return {"ours": ours.get_total_flops(), "unrolled": unrolled.get_total_flops(), "forward": forward.get_total_flops()}


def flops_per_iteration(channels: int, resolution: int, classes: int, steps: int, batch: int, network: dict = NETWORK
                        ) -> dict[str, float]:
    """`counted_flops` at `steps` x `batch`, from counts at one image and one and two steps."""
    one = counted_flops(channels, resolution, classes, 1, 1, network)
    two = counted_flops(channels, resolution, classes, 2, 1, network)
    return {way: batch * (one[way] + (steps - 1) * (two[way] - one[way])) for way in ("ours", "unrolled")} | {
        "forward": one["forward"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="config names (default: all nine)")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed" / "distill_flops.json")
    args = parser.parse_args()
    reference = json.loads(REFERENCE.read_text())
    rows = []
    for config in reference["configs"]:
        if args.configs and config["name"] not in args.configs:
            continue
        # The batch distill_speed.py times: all synthetic images when batch_syn exceeds them.
        batch = min(config["batch_syn"], config["classes"] * config["ipc"])
        flops = flops_per_iteration(config["channels"], config["resolution"], config["classes"], config["syn_steps"], batch)
        row = {"name": config["name"], "syn_steps": config["syn_steps"], "batch": batch,
               "forward_gflop_per_image": flops["forward"] / 1e9, "ours_gflop_per_iteration": flops["ours"] / 1e9,
               "unrolled_gflop_per_iteration": flops["unrolled"] / 1e9, "ours_over_unrolled": flops["ours"] / flops["unrolled"]}
        rows.append(row)
        print(f"{row['name']:18s} ours {row['ours_gflop_per_iteration']:9.1f} GFLOP/iteration  unrolled (MTT) "
              f"{row['unrolled_gflop_per_iteration']:9.1f}  ratio {row['ours_over_unrolled']:.3f}", flush=True)
    write_json(args.out, {"kind": "distill_flops", "what": "FLOPs of convolutions and matrix products per outer iteration "
                          "(torch.utils.flop_counter), counted at one image and one and two steps and extended to syn_steps x batch",
                          **environment(), "network": NETWORK, "configs": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
