"""Speed-up of expert training and of distillation on G GPUs over one, through torchrun and torch.distributed.

On the 128-px galaxy configs of mtt_reference_h200.json (gzoo2_128_ipc10 and gzoo2_128_ipc50:
ConvNet depth 3, width 128, instance norm, 9 classes, syn_steps 20, batch_syn 90 / 450):

- distillation: seconds per outer iteration (2 warm-up, `--timed` timed, median), as
  bench/distill_speed.py measures it, with every inner batch split across the ranks
  (InnerLoop's Shard; CUDA graphs as InnerLoop chooses them, never with several processes);
- experts: wall time of train_experts for `--experts` experts x `--expert-epochs` epochs on
  random 128-px images of 9 classes (`--train-images`), the groups of `--parallel` experts
  shared out among the ranks.

The script launches itself twice, `torchrun --standalone --nproc-per-node K ... --worker`, for
K = 1 and K = `--gpus`; rank 0 of each launch records its numbers, and the speed-ups
(time on one / time on G) go to one JSON file.

    python bench/distributed_speed.py --gpus 2 [--configs gzoo2_128_ipc10] [--out bench/results/speed/distributed_speed.json]
    python bench/distributed_speed.py --smoke --device cpu     # tiny sizes, 2 CPU processes (gloo): checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, environment  # noqa: E402
from distill_speed import NETWORK, REFERENCE, chunk_for, measure  # noqa: E402

from galaxy_distill import distributed  # noqa: E402
from galaxy_distill.data.registry import PreparedDataset  # noqa: E402
from galaxy_distill.experts import ExpertSettings, train_experts  # noqa: E402
from galaxy_distill.runtime import configure_backends, resolve_device  # noqa: E402
from galaxy_distill.atomic_io import write_json  # noqa: E402

CONFIGS = ("gzoo2_128_ipc10", "gzoo2_128_ipc50")
SMOKE_NETWORK = {"depth": 2, "width": 8, "norm": "instancenorm"}
SMOKE_CONFIGS = [{"name": "smoke_16_ipc2", "channels": 3, "resolution": 16, "classes": 3, "ipc": 2, "syn_steps": 2,
                  "batch_syn": 6}]


def time_distillation(config: dict, network: dict, timed: int, device: torch.device) -> dict:
    """One outer iteration as bench/distill_speed.py times it, each inner batch shared by the ranks."""
    return measure(config, timed, device, chunk_for(config), cuda_graphs=True, network=network, shard=distributed.shard())


def random_dataset(classes: int, resolution: int, train_images: int) -> PreparedDataset:
    """Random uint8 images in memory, shaped like a prepared dataset: expert training time does not depend on content."""
    rng = np.random.default_rng(0)
    test_images = 10 * classes
    arrays = {"train_images": rng.integers(0, 256, (train_images, resolution, resolution, 3), dtype=np.uint8),
              "train_labels": np.arange(train_images) % classes,
              "test_images": rng.integers(0, 256, (test_images, resolution, resolution, 3), dtype=np.uint8),
              "test_labels": np.arange(test_images) % classes}
    meta = {"name": f"random-{resolution}", "class_names": [f"class {k}" for k in range(classes)],
            "channel_mean": [0.5, 0.5, 0.5], "channel_std": [0.29, 0.29, 0.29],
            "images_sha256": f"random-{resolution}-{train_images}"}
    return PreparedDataset(Path(tempfile.gettempdir()), meta, arrays)


def time_experts(args: argparse.Namespace, network: dict, classes: int, resolution: int, scratch: Path) -> dict:
    dataset = random_dataset(classes, resolution, args.train_images)
    settings = ExpertSettings(dataset=dataset.name, architecture="convnet", **network, num_experts=args.experts,
                              epochs=args.expert_epochs, batch_size=args.batch_size, parallel=args.parallel, device=args.device)
    distributed.barrier()
    began = time.perf_counter()
    train_experts(settings, dataset, scratch / f"experts-{distributed.world_size()}")
    wall = time.perf_counter() - began
    return {"wall_s": wall, "expert_epochs_per_s": args.experts * args.expert_epochs / wall,
            "groups": -(-args.experts // args.parallel), "settings": settings.model_dump(mode="json")}


def worker(args: argparse.Namespace) -> None:
    device = distributed.setup(resolve_device(args.device))
    configure_backends(device)
    configs, network = selected_configs(args)
    record = {"processes": distributed.world_size(), "device": str(device), "distill": {}}
    for config in configs:
        record["distill"][config["name"]] = time_distillation(config, network, args.timed, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record["experts"] = time_experts(args, network, configs[0]["classes"], configs[0]["resolution"], args.scratch)
    if distributed.is_main():
        write_json(args.record, record)


def selected_configs(args: argparse.Namespace) -> tuple[list[dict], dict]:
    if args.smoke:
        return SMOKE_CONFIGS, SMOKE_NETWORK
    reference = {config["name"]: config for config in json.loads(REFERENCE.read_text())["configs"]}
    return [reference[name] for name in args.configs], NETWORK


def launch(args: argparse.Namespace, processes: int, scratch: Path) -> dict:
    record_path = scratch / f"record-{processes}.json"
    worker_args = ["--worker", "--record", str(record_path), "--scratch", str(scratch), "--device", args.device,
                   "--timed", str(args.timed), "--experts", str(args.experts), "--expert-epochs", str(args.expert_epochs),
                   "--train-images", str(args.train_images), "--parallel", str(args.parallel),
                   "--batch-size", str(args.batch_size), "--configs", *args.configs, *(["--smoke"] if args.smoke else [])]
    # The same threads per process in both launches (torchrun would give one to each of several, all to one alone).
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.gpus)))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                    f"--log-dir={scratch / 'torchrun'}", "--", str(Path(__file__).resolve()), *worker_args],
                   env={**os.environ, "OMP_NUM_THREADS": threads}, check=True)
    return json.loads(record_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=2, help="processes of the multi-process run (one per GPU)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--timed", type=int, default=5, help="timed distillation iterations (after 2 warm-up)")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--expert-epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=4500, help="random training images for the experts")
    parser.add_argument("--parallel", type=int, default=2, help="experts trained at once (one group)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda", help="cuda (NCCL) or cpu (gloo)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU in a minute")
    parser.add_argument("--out", type=Path, help="default: bench/results/speed/distributed_speed.json (_smoke.json with --smoke)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.smoke:
        args.experts, args.expert_epochs, args.train_images, args.parallel, args.batch_size = 4, 1, 60, 1, 16
    out = args.out or RESULTS / "speed" / ("distributed_speed_smoke.json" if args.smoke else "distributed_speed.json")
    if args.device.startswith("cuda") and torch.cuda.device_count() < args.gpus:
        sys.exit(f"--gpus {args.gpus} needs as many CUDA GPUs; {torch.cuda.device_count()} found")
    with tempfile.TemporaryDirectory() as scratch:
        records = {processes: launch(args, processes, Path(scratch)) for processes in (1, args.gpus)}
    one, many = records[1], records[args.gpus]
    configs, network = selected_configs(args)
    rows = []
    for config in configs:
        alone, shared = one["distill"][config["name"]], many["distill"][config["name"]]
        shape = {key: config[key] for key in ("channels", "resolution", "classes", "ipc", "syn_steps", "batch_syn")}
        rows.append({"name": config["name"], **shape, "one": alone, "many": shared,
                     "speedup": alone["s_per_iter"] / shared["s_per_iter"]})
        print(f"distill {config['name']:18s} 1 process {alone['s_per_iter']:8.3f} s/it | {args.gpus} processes "
              f"{shared['s_per_iter']:8.3f} s/it | speed-up {rows[-1]['speedup']:5.2f}x | loss {alone['loss_last']:.6f} "
              f"vs {shared['loss_last']:.6f}", flush=True)
    experts = {"one": one["experts"], "many": many["experts"], "speedup": one["experts"]["wall_s"] / many["experts"]["wall_s"]}
    print(f"experts {args.experts} x {args.expert_epochs} epochs: 1 process {one['experts']['wall_s']:.1f} s | {args.gpus} "
          f"processes {many['experts']['wall_s']:.1f} s | speed-up {experts['speedup']:.2f}x", flush=True)
    write_json(out, {"what": "speed-up of galaxy_distill on several processes (torchrun, one GPU each) over one: distillation "
                             "s/iteration with each inner batch split across ranks, expert training wall time with the "
                             "expert groups split across ranks", **environment(), "processes": args.gpus,
                     "device": one["device"], "network": network, "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE", "0"),
                     "distill": rows, "experts": experts})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
