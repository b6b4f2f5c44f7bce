"""Side by side on the same experts: the reference MTT loop, `distill --method mtt` and `--method stm`.

    python bench/faithful.py --dataset cifar10-zca --experts WS/experts/cifar10-zca --peer .peer/harness \
        --ipcs 1 10 --iterations 500 --out bench/results/faithful/cifar10_zca.json

With --seeds 0 1 2 every distillation runs once per seed (the reference loop's --seed, ours' --seed): MTT's
learned step size at IPC 10 depends on the draws in both loops, so single runs are compared only as a spread.

For each IPC the three distillations run at once (separate processes on the same GPU), with MTT's
published CIFAR-10 hyperparameters (IPC 1: 50 steps, M 2, max start epoch 2, lr_img 100, lr_lr 1e-7;
IPC 10: 30 steps, M 2, max start epoch 20, lr_img 1e5, lr_lr 1e-5; lr_teacher 0.01; STM with M 1).
The reference loop is `peer_accuracy.py` of the peer harness (the original distill.py statements on
our prepared data and expert store). Then every final set, and random real images of the same size,
is evaluated the same way (`galaxy-distill evaluate`: fresh ConvNets, the learned step size, test split).
Writes `{"results": [{"dataset", "ipc", "method", "acc_mean", "acc_std", "iterations", "learned_lr"}, ...]}`
plus the command, revision, GPU and torch version; each finished evaluation is added as it lands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_evaluation_flags  # noqa: E402

from galaxy_distill.atomic_io import read_json, write_json  # noqa: E402
from galaxy_distill.rundir import load_synthetic  # noqa: E402

# MTT (Cazenavette et al. 2022), CIFAR-10 hyperparameters per IPC.
PUBLISHED = {
    1: {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_img": 100.0, "lr_lr": 1e-7, "lr_teacher": 0.01},
    10: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 20, "lr_img": 1e5, "lr_lr": 1e-5, "lr_teacher": 0.01},
    50: {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 40, "lr_img": 100.0, "lr_lr": 1e-5, "lr_teacher": 0.001},
}
CLI = [sys.executable, "-m", "galaxy_distill.cli"]


def run_logged(command: list[str], log: Path) -> None:
    started = time.perf_counter()
    with open(log, "w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
    print(f"{'done' if code == 0 else f'FAILED ({code})'} in {time.perf_counter() - started:.0f} s: {log.name}", flush=True)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed with {code}; see {log}")


def run_name(method: str, ipc: int, seed: int) -> str:
    return f"{method}-ipc{ipc}-seed{seed}"


def distill_commands(args: argparse.Namespace, ipc: int, seed: int, work: Path) -> dict[str, list[str]]:
    p = {**PUBLISHED[ipc], **(args.override or {})}
    ours = ["--dataset", args.dataset, "--experts", str(args.experts), "--ipc", str(ipc), "--syn-steps", str(p["syn_steps"]),
            "--max-start-epoch", str(p["max_start_epoch"]), "--lr-img", str(p["lr_img"]), "--lr-lr", str(p["lr_lr"]),
            "--lr-init", str(p["lr_teacher"]), "--iterations", str(args.iterations), "--eval-every", str(args.iterations),
            "--eval-networks", "1", "--eval-epochs", "50", "--seed", str(seed), "--device", args.device]
    return {
        "mtt-reference": [sys.executable, str(args.peer / "peer_accuracy.py"), "--experts", str(args.experts),
                          "--dataset", args.dataset, "--ipc", str(ipc), "--syn-steps", str(p["syn_steps"]),
                          "--expert-epochs", str(p["expert_epochs"]), "--max-start-epoch", str(p["max_start_epoch"]),
                          "--lr-img", str(p["lr_img"]), "--lr-lr", str(p["lr_lr"]), "--lr-teacher", str(p["lr_teacher"]),
                          "--iterations", str(args.iterations), "--seed", str(seed), "--device", args.device,
                          "--out", str(work / run_name("mtt-reference", ipc, seed))],
        "mtt": [*CLI, "distill", *ours, "--method", "mtt", "--expert-epochs", str(p["expert_epochs"]),
                "--out", str(work / run_name("mtt", ipc, seed))],
        "stm": [*CLI, "distill", *ours, "--method", "stm", "--expert-epochs", "1", "--out", str(work / run_name("stm", ipc, seed))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--experts", type=Path, required=True)
    parser.add_argument("--peer", type=Path, required=True, help="folder with peer_accuracy.py and mtt_reference.py")
    parser.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["mtt-reference", "mtt", "stm", "random"],
                        choices=["mtt-reference", "mtt", "stm", "random"])
    parser.add_argument("--iterations", type=int, default=500)
    add_evaluation_flags(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--override", type=json.loads, default=None, help="JSON of hyperparameters replacing the table's")
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs and logs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "revision": os.environ.get("GALAXY_DISTILL_REVISION"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "python": platform.python_version(),
        "hyperparameters": {str(ipc): {**PUBLISHED[ipc], **(args.override or {})} for ipc in args.ipcs},
        "evaluation": {"networks": args.networks, "epochs": args.epochs, "split": "test", "selection": "final"},
        "results": [],
    }
    if args.out.is_file():
        record["results"] = read_json(args.out).get("results", [])
    done = {(entry["ipc"], entry["method"], entry.get("seed", 0)) for entry in record["results"]}

    jobs = {(ipc, method, seed): command for ipc in args.ipcs for seed in args.seeds
            for method, command in distill_commands(args, ipc, seed, args.work).items()
            if method in args.methods and (ipc, method, seed) not in done
            and not (args.work / run_name(method, ipc, seed) / "synthetic.safetensors").is_file()}
    with ThreadPoolExecutor(len(jobs) or 1) as pool:
        for future in [pool.submit(run_logged, command, args.work / f"{run_name(*key)}.log") for key, command in jobs.items()]:
            future.result()

    def evaluate(ipc: int, method: str, seed: int) -> dict:
        out = args.work / f"eval-{run_name(method, ipc, seed)}.json"
        common = ["--networks", str(args.networks), "--epochs", str(args.epochs), "--device", args.device, "--out", str(out)]
        if method == "random":
            command = [*CLI, "evaluate", "--dataset", args.dataset, "--baselines", "random", "--ipc", str(ipc), *common]
            learned = None
        else:
            run = args.work / run_name(method, ipc, seed)
            command = [*CLI, "evaluate", "--run", str(run), *common]
            learned = load_synthetic(run)[2]
        run_logged(command, args.work / f"eval-{run_name(method, ipc, seed)}.log")
        entry = read_json(out)
        entry = entry["results"][0] if isinstance(entry, dict) else entry[0]
        return {"dataset": args.dataset, "ipc": ipc, "method": method, "seed": seed, "acc_mean": 100 * entry["acc_mean"],
                "acc_std": 100 * entry["acc_std"], "iterations": None if method == "random" else args.iterations,
                "learned_lr": learned, "eval_lr": entry["lr"], "accuracies": [100 * a for a in entry["accuracies"]]}

    # Random real images need one evaluation per IPC, not one per distillation seed.
    pending = [(ipc, method, seed) for ipc in args.ipcs for method in args.methods
               for seed in (args.seeds[:1] if method == "random" else args.seeds) if (ipc, method, seed) not in done]
    with ThreadPoolExecutor(len(pending) or 1) as pool:
        for entry in pool.map(lambda key: evaluate(*key), pending):
            record["results"].append(entry)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_json(args.out, record)
            print(f"IPC {entry['ipc']:3d} {entry['method']:14s} seed {entry['seed']} {entry['acc_mean']:.1f} ± "
                  f"{entry['acc_std']:.1f}", flush=True)
    write_json(args.out, record)


if __name__ == "__main__":
    main()
