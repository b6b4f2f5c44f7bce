"""Seconds per outer distillation iteration and peak GPU memory, on the reference MTT configs.

One outer iteration, as in ../shared/bench/mtt_reference_h200.json: a fresh student at an
expert checkpoint, syn_steps unrolled steps on augmented synthetic batches (DSA, single
mode as MTT), the matching loss, its gradients w.r.t. pixels and step size, and the
optimiser steps. ConvNet depth 3, width 128, instance norm. 2 warm-up, `--timed` timed
iterations, median; peak memory from torch.cuda.max_memory_allocated.

    python bench/distill_speed.py [--configs NAME ...] [--timed 8] [--kernels 14] [--compile] [--precision bf16]
        [--chunk-pixels N] [--convolution-shapes N] [--no-cuda-graphs]
        [--out bench/results/speed/distill_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, convolution_profile, environment, kernel_profile  # noqa: E402

from galaxy_distill.data.augment import DiffAugment  # noqa: E402
from galaxy_distill.distill.matching import InnerLoop  # noqa: E402
from galaxy_distill.distill.step_size import LearnedStepSizes  # noqa: E402
from galaxy_distill.distributed import Shard  # noqa: E402
from galaxy_distill.models import build_model  # noqa: E402
from galaxy_distill.models.functional import FlatParams  # noqa: E402
from galaxy_distill.runtime import configure_backends, seeded_generator  # noqa: E402
from galaxy_distill.atomic_io import write_json  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "mtt_reference_h200.json"


CHUNK_PIXELS = 128 * 128 * 128
"""Default pixels per chunk of an inner step: only the 128-px IPC-50 config (450 images a step, which the reference
cannot run) is chunked, into 128 images (`distill --batch-chunk 128`). Measured on the H200 (compiled, bf16), the
128-px IPC-10 config ran 0.566 s/it in chunks of 62 images (the earlier default, 1000 x 32 x 32 pixels) and 0.468 s/it
unchunked, at 4.91 and 5.45 GiB."""


def chunk_for(config: dict, budget: int = CHUNK_PIXELS) -> int | None:
    """Images per chunk of an inner step: bounded activation memory at large batch x resolution (0: no chunks)."""
    pixels = config["batch_syn"] * config["resolution"] ** 2
    return None if budget == 0 or pixels <= budget else max(1, budget // config["resolution"] ** 2)


NETWORK = {"depth": 3, "width": 128, "norm": "instancenorm"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matching_problem(config: dict, device: torch.device, generator: torch.Generator, network: dict = NETWORK
                     ) -> tuple[FlatParams, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A config's student network, an expert start and a target near it, and classes x ipc random synthetic images
    with their labels, drawn from `generator`."""
    torch.manual_seed(0)
    flat_view = FlatParams(build_model("convnet", config["channels"], config["classes"], config["resolution"], **network)
                           .to(device))
    start = flat_view.init_flat(generator)
    target = start + 0.01 * torch.randn(start.shape, generator=generator).to(device)
    size = config["resolution"]
    images = torch.randn(config["classes"] * config["ipc"], config["channels"], size, size, generator=generator).to(device)
    labels = torch.arange(config["classes"], device=device).repeat_interleave(config["ipc"])
    return flat_view, start, target, images, labels


def outer_iteration(config: dict, device: torch.device, chunk: int | None, cuda_graphs: bool, network: dict = NETWORK,
                    shard: Shard = Shard(), bf16: bool = False, compiled: bool = False
                    ) -> tuple[Callable[[], torch.Tensor], InnerLoop, torch.Tensor]:
    """One outer iteration of a config as a call (the matching loss and gradients, then both optimiser steps; returns
    the loss), its inner loop and the synthetic images it updates."""
    generator = seeded_generator(0)
    flat_view, start, target, images, labels = matching_problem(config, device, generator, network)
    images.requires_grad_(True)
    count = len(images)
    step_sizes = LearnedStepSizes.start(0.01, 1, device)
    pixel_optimizer = torch.optim.SGD([images], lr=1000.0, momentum=0.5)
    inner = InnerLoop(flat_view, config["syn_steps"], min(config["batch_syn"], count), DiffAugment(), chunk_size=chunk,
                      cuda_graphs=cuda_graphs, shard=shard, bf16=bf16, compile=compiled)

    def iteration() -> torch.Tensor:
        gradients = inner.loss_and_gradients(images, labels, step_sizes.values[0].clone(), start, target, generator)
        images.grad = gradients.images
        pixel_optimizer.step()
        step_sizes.step(0, gradients.step_size, 1e-5)
        return gradients.loss

    return iteration, inner, images


def measure(config: dict, timed: int, device: torch.device, chunk: int | None, cuda_graphs: bool,
            network: dict = NETWORK, shard: Shard = Shard(), bf16: bool = False, kernels: int = 0,
            compiled: bool = False, convolution_shapes: int = 0) -> dict:
    """Median seconds of one outer iteration (2 warm-up, `timed` timed) and peak GPU memory; with `kernels`,
    also the iteration's most time-consuming GPU kernels, and with `convolution_shapes` its most time-consuming
    convolutions by operand shapes (torch.profiler, 3 more iterations each)."""
    if compiled:
        # Each config compiles its own steps; without a reset, configs measured earlier in this process would use up
        # torch.compile's recompile limit for the same methods, and later configs would run uncompiled.
        torch._dynamo.reset()
    outer_iteration_call, inner, images = outer_iteration(config, device, chunk, cuda_graphs, network, shard, bf16,
                                                          compiled)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    times = []
    for iteration in range(2 + timed):
        synchronize(device)
        began = time.perf_counter()
        loss = outer_iteration_call()
        synchronize(device)
        if iteration >= 2:
            times.append(time.perf_counter() - began)
    measured = {"s_per_iter": statistics.median(times), "times": times, "batch_chunk": chunk, "loss_last": float(loss),
                "cuda_graphs": inner.replays_graphs(images), "precision": "bf16" if bf16 else "fp32", "compiled": compiled,
                "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    if kernels:
        measured.update(kernel_profile(outer_iteration_call, device, kernels))
    if convolution_shapes:
        measured.update(convolution_profile(outer_iteration_call, device, convolution_shapes))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", help="config names (default: all nine)")
    parser.add_argument("--timed", type=int, default=8)
    parser.add_argument("--no-cuda-graphs", action="store_true", help="eager inner loop (for comparison)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: the student's forward under bfloat16 autocast (DistillSettings.precision)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the student's steps (DistillSettings.compile); the warm-up iterations compile")
    parser.add_argument("--kernels", type=int, default=0, metavar="N",
                        help="also record each config's N most time-consuming GPU kernels (torch.profiler, 3 iterations)")
    parser.add_argument("--convolution-shapes", type=int, default=0, metavar="N",
                        help="also record each config's N most time-consuming convolutions by operand shapes "
                             "(torch.profiler, 3 iterations; kernels replayed in CUDA graphs are not attributed: "
                             "add --no-cuda-graphs for configs that use them)")
    parser.add_argument("--chunk-pixels", type=int, default=CHUNK_PIXELS, metavar="N",
                        help="split inner batches of more than N pixels into chunks of at most N (0: never); fewer, larger "
                             "chunks run faster where the memory target leaves room")
    parser.add_argument("--append", action="store_true",
                        help="keep the configs already in --out (measured by earlier runs, each row says which)")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed" / "distill_speed.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("distill_speed needs a CUDA GPU")
    device = torch.device("cuda")
    configure_backends(device)
    reference = json.loads(REFERENCE.read_text())
    run = environment()
    rows = []
    if args.append and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        provenance = {key: earlier.get(key) for key in ("command", "git_revision", "gpu", "torch", "environment")}
        rows = [{**row, "run": row.get("run", provenance)} for row in earlier["configs"]
                if row.get("s_per_iter") is not None and not (args.configs and row["name"] in args.configs)]
    for config in reference["configs"]:
        if args.configs and config["name"] not in args.configs:
            continue
        try:
            ours = measure(config, args.timed, device, chunk_for(config, args.chunk_pixels), not args.no_cuda_graphs,
                           bf16=args.precision == "bf16", kernels=args.kernels, compiled=args.compile,
                           convolution_shapes=args.convolution_shapes)
        except torch.cuda.OutOfMemoryError:
            ours = {"s_per_iter": None, "peak_mem_gib": None, "note": "out of memory"}
        except RuntimeError as exc:
            ours = {"s_per_iter": None, "peak_mem_gib": None, "note": f"failed: {exc}"[:500]}
        torch.cuda.empty_cache()
        entry = {"name": config["name"], **{k: config[k] for k in ("channels", "resolution", "classes", "ipc", "syn_steps", "batch_syn")},
                 **ours, "reference_s_per_iter": config["s_per_iter"], "reference_peak_mem_gib": config["peak_mem_gib"],
                 "run": {key: run[key] for key in ("command", "git_revision", "gpu", "torch", "environment")}}
        if ours["s_per_iter"] and config["s_per_iter"]:
            entry["speedup"] = config["s_per_iter"] / ours["s_per_iter"]
        if ours["peak_mem_gib"] and config["peak_mem_gib"]:
            entry["memory_ratio"] = ours["peak_mem_gib"] / config["peak_mem_gib"]
        rows.append(entry)
        # After every config, so that a run stopped early keeps what it measured.
        write_record(args.out, run, rows, order=[config["name"] for config in reference["configs"]],
                     cuda_graphs=not args.no_cuda_graphs)
        print(f"{entry['name']:18s} ours {ours['s_per_iter'] or float('nan'):7.3f} s/it {ours['peak_mem_gib'] or float('nan'):7.2f} GiB | "
              f"reference {config['s_per_iter'] or float('nan'):7.3f} s/it {config['peak_mem_gib'] or float('nan'):7.2f} GiB | "
              f"speed-up {entry.get('speedup', float('nan')):5.2f}x memory {entry.get('memory_ratio', float('nan')):5.3f}x", flush=True)
        for convolution in ours.get("convolution_shapes", []):
            print(f"    {convolution['ms_per_step']:8.2f} ms/it {convolution['calls_per_step']:5.1f} calls  {convolution['op']} "
                  f"{convolution['shapes']}", flush=True)
    print(f"wrote {args.out}")


def write_record(path: Path, run: dict, rows: list[dict], order: list[str], cuda_graphs: bool) -> None:
    """The rows so far, in the reference's config order, in the reference's schema."""
    write_json(path, {"what": "galaxy_distill outer distillation iteration (reverse-mode matching, DSA single mode), "
                              "same configs as the reference", **run,
                      "engine": "reverse-mode checkpointed matching", "cuda_graphs": cuda_graphs,
                      "configs": sorted(rows, key=lambda row: order.index(row["name"]))})


if __name__ == "__main__":
    main()
