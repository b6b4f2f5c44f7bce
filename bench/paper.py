"""One block of the paper table (issue 26): one dataset at one IPC, experts -> STM and MTT -> evaluation, resumable.

    python bench/paper.py --dataset cifar10-zca --ipc 10 --experts 50 --deadline-minutes 20 \
        --expert-compile --expert-precision bf16-full --distill-compile --distill-precision bf16

Steps, each recorded the moment it finishes (atomically: temp file + rename) in --out
(default bench/results/paper/<dataset>-ipc<K>.json):

1. `--experts` ConvNet experts for only the epochs the block needs (max start epoch + M + 1, M the
   larger of MTT's and STM's matched expert epochs), in WORK/experts (resumable).
2. The baselines (`--baselines`: random real images, class averages, full data), 5 networks each.
   They come before the distillations so that their measured evaluation time plans the rest.
3. STM and MTT (`--methods`), each a `galaxy-distill distill` process (WORK/runs/<method>, log beside it)
   with the block's hyperparameters: MTT's published CIFAR-10 table per IPC, or the galaxy preset
   (`CIFAR10` and `GALAXY` below; any of them overridden by its flag). Every `--eval-every` iterations `--val-nets`
   networks x `--val-epochs` epochs on the validation split choose the kept set (`selection:
   validation`, RUN/synthetic.safetensors); the last iteration's is the `final` set (RUN/final.safetensors).
   With `--deadline-minutes` each distillation gets a share of the time left (after the evaluations
   still to come, estimated from the baselines', and `--margin-s`, which also covers its start-up) as
   its `--time-limit`: it stops itself at the end of the iteration that passes it, with both sets
   written. The record says how many iterations ran and why it stopped, and carries the run's
   validation/test curve (`curve`) and matching-loss curve (`loss_curve`), all read from the run's
   last checkpoint (RUN/checkpoint.json).
4. Both sets of each method (`galaxy-distill evaluate --run RUN --selection validation|final`):
   `--networks` networks x `--epochs` epochs at the learned step size, test split; with
   `--cross-arch`, the validation-selected sets also on ResNet-18 and VGG-11.

Rerunning the same command resumes: finished expert trajectories, distillations (a recorded one is
never continued: its deadline has passed) and records are kept, an interrupted distillation continues
from its checkpoint (with a new share of the time left), an interrupted evaluation from its finished
networks. Accuracies are in percent. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS, add_evaluation_flags, environment  # noqa: E402

from galaxy_distill.settings import workspace_dir  # noqa: E402
from galaxy_distill.data import load_prepared  # noqa: E402
from galaxy_distill.data.registry import PreparedDataset  # noqa: E402
from galaxy_distill.distill.settings import DistillSettings  # noqa: E402
from galaxy_distill.evaluate.run import evaluate  # noqa: E402
from galaxy_distill.evaluate.settings import EvaluateSettings  # noqa: E402
from galaxy_distill.experts import ExpertSettings, ExpertStore, train_experts  # noqa: E402
from galaxy_distill.experts.store import MANIFEST_FILE  # noqa: E402
from galaxy_distill.experts.train import summarize  # noqa: E402
from galaxy_distill.rundir import RunDir, load_synthetic  # noqa: E402
from galaxy_distill.atomic_io import read_json, write_json, write_yaml  # noqa: E402

# MTT (Cazenavette et al. 2022), CIFAR-10 ConvNet-3, its appendix table per IPC. lr_teacher is the learned step
# size's start (our lr_init); M ("match_epochs") is MTT's expert_epochs. Public reproductions differ on IPC 1's
# lr_img (1e2 here, 1e3 elsewhere) and on IPC 50's ZCA and lr_teacher (1e-2 here, 1e-3 elsewhere): --lr-img,
# --lr-teacher and the dataset (cifar10-zca or cifar10) choose another.
CIFAR10 = {
    1: {"syn_steps": 50, "match_epochs": 2, "max_start_epoch": 2, "lr_img": 1e2, "lr_lr": 1e-7, "lr_teacher": 1e-2,
        "zca": True, "expert_batch": 256, "eval_every": 250},
    10: {"syn_steps": 30, "match_epochs": 2, "max_start_epoch": 20, "lr_img": 1e5, "lr_lr": 1e-5, "lr_teacher": 1e-2,
         "zca": True, "expert_batch": 256, "eval_every": 250},
    50: {"syn_steps": 30, "match_epochs": 2, "max_start_epoch": 40, "lr_img": 1e3, "lr_lr": 1e-5, "lr_teacher": 1e-2,
         "zca": False, "expert_batch": 256, "eval_every": 250},
}
# The galaxies' settings of bench/pipeline.py and docs/results.md (every IPC).
GALAXY = {"syn_steps": 20, "match_epochs": 1, "max_start_epoch": 10, "lr_img": 1e2, "lr_lr": 1e-5, "lr_teacher": 1e-2,
          "zca": False, "expert_batch": None, "eval_every": 100}
STM_MATCH_EPOCHS = 1
"""STM is run with MTT's settings but M = 1 (its paper's choice)."""
BASELINE_KINDS = {"random": "random", "class-average": "class_average", "full": "full"}
CROSS_ARCHITECTURES = ("resnet18", "vgg11")


def log(message: str) -> None:
    print(f"[paper {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def preset(dataset: PreparedDataset, ipc: int) -> dict[str, Any]:
    """The block's hyperparameters before flag overrides: MTT's CIFAR-10 row of the nearest IPC, else the galaxy one."""
    if dataset.meta.get("dataset") == "cifar10" or dataset.name.startswith("cifar10"):
        nearest = min(CIFAR10, key=lambda known: abs(math.log(known) - math.log(ipc)))
        return {**CIFAR10[nearest], "preset": f"MTT CIFAR-10 IPC {nearest}"}
    return {**GALAXY, "preset": "galaxy (bench/pipeline.py)"}


def hyperparameters(args: argparse.Namespace, dataset: PreparedDataset) -> dict[str, Any]:
    chosen = preset(dataset, args.ipc)
    for name in ("syn_steps", "match_epochs", "max_start_epoch", "lr_img", "lr_lr", "lr_teacher", "expert_batch", "eval_every"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    if chosen.pop("zca") != dataset.uses_zca:
        log(f"note: the preset ({chosen['preset']}) is {'with' if not dataset.uses_zca else 'without'} ZCA, "
            f"dataset {dataset.name} is {'with' if dataset.uses_zca else 'without'}: the record says which ran")
    chosen["zca"] = dataset.uses_zca
    return chosen


def match_epochs(method: str, hyper: dict[str, Any]) -> int:
    return STM_MATCH_EPOCHS if method == "stm" else hyper["match_epochs"]


def distill_settings(args: argparse.Namespace, dataset: PreparedDataset, hyper: dict[str, Any], experts: Path,
                     method: str, time_limit: float | None) -> DistillSettings:
    return DistillSettings(
        dataset=dataset.name, experts=experts, method=method, ipc=args.ipc, syn_steps=hyper["syn_steps"],
        expert_epochs=match_epochs(method, hyper), max_start_epoch=hyper["max_start_epoch"], iterations=args.iterations,
        time_limit=time_limit,
        batch_syn=args.batch_syn, batch_chunk=args.batch_chunk, precision=args.distill_precision,
        compile=args.distill_compile, lr_img=hyper["lr_img"], lr_init=hyper["lr_teacher"], lr_lr=hyper["lr_lr"],
        seed=args.seed, device=args.device, eval_every=hyper["eval_every"], eval_networks=args.val_nets,
        eval_epochs=args.val_epochs, checkpoint_every=args.checkpoint_every,
        snapshot_every=max(args.checkpoint_every, hyper["eval_every"]),
        **({"stm_patience": args.stm_patience} if args.stm_patience is not None else {}),
    )


class Block:
    """The results file of one block, rewritten atomically after every change."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        self.out = out
        stored = read_json(out) if out.is_file() else {}
        self.record: dict[str, Any] = {**stored, **header, "results": stored.get("results", []),
                                       "distillations": stored.get("distillations", {})}
        self.record["sessions"] = [*stored.get("sessions", []), {"command": header["command"], "gpu": header["gpu"],
                                                                  "revision": header["revision"], "started": time.time(),
                                                                  "hyperparameters": header["hyperparameters"]}]
        self.save()

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.out, self.record)

    def find(self, method: str, selection: str, architecture: str) -> dict[str, Any] | None:
        return next((entry for entry in self.record["results"] if (entry["method"], entry["selection"],
                     entry.get("architecture", "convnet")) == (method, selection, architecture)), None)

    def add(self, entry: dict[str, Any]) -> None:
        self.record["results"].append(entry)
        self.save()
        log(f"recorded {entry['method']} ({entry['selection']}, {entry['architecture']}): "
            f"{entry['acc_mean']:.1f} ± {entry['acc_std']:.1f} % after {entry['iterations']} iterations")


class Clock:
    """The deadline, and the estimate of what each evaluation of a set costs (from the baselines once measured)."""

    def __init__(self, minutes: float | None, eval_estimate_s: float) -> None:
        self.started = time.monotonic()
        self.deadline = None if minutes is None else self.started + 60 * minutes
        self.eval_s = eval_estimate_s

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


def evaluate_set(args: argparse.Namespace, prepared: PreparedDataset, work: Path, key: str, model: dict[str, Any],
                 **settings: Any) -> tuple[dict[str, Any], float]:
    """One candidate set on one architecture; (the evaluate() entry, wall seconds). Resumes finished networks."""
    started = time.perf_counter()
    evaluation = EvaluateSettings(**{"networks": args.networks, "epochs": args.epochs, "device": args.device,
                                     "seed": args.seed, "resume": True, **settings})
    (work / "eval").mkdir(parents=True, exist_ok=True)
    results = evaluate(evaluation, prepared, model, output=work / "eval" / f"{key}.json")
    return results[0], time.perf_counter() - started


def row(block_header: dict[str, Any], method: str, selection: str, architecture: str, found: dict[str, Any],
        **extra: Any) -> dict[str, Any]:
    return {"dataset": block_header["dataset"], "ipc": None if method == "full" else block_header["ipc"], "method": method,
            "selection": selection, "architecture": architecture, "acc_mean": 100 * found["acc_mean"],
            "acc_std": 100 * found["acc_std"], "accuracies": [100 * value for value in found["accuracies"]],
            "n_eval": found["n_eval"], "eval_epochs": found["epochs"], "eval_lr": found["lr"], "gpu": block_header["gpu"],
            **extra}


def run_baselines(args: argparse.Namespace, dataset: PreparedDataset, model: dict[str, Any], work: Path, block: Block,
                  clock: Clock) -> None:
    for name in args.baselines:
        if block.find(name, "final", "convnet") is not None:
            log(f"{name}: already recorded")
            continue
        settings: dict[str, Any] = {"dataset": dataset.name, "baselines": [BASELINE_KINDS[name]], "ipc": args.ipc}
        if name == "full":
            settings.update(full_epochs=args.full_epochs, networks=args.full_nets)
        log(f"evaluating the {name} baseline")  # chosen with --seed, evaluated like the distilled sets
        found, seconds = evaluate_set(args, dataset, work, f"baseline-{name}", model, **settings)
        if name != "full":
            clock.eval_s = seconds
        block.add(row(block.record, name, "final", "convnet", found, iterations=None, experts=None, expert_epochs=None,
                      seconds=seconds, eval_seconds=seconds))
    measured = [entry["eval_seconds"] for entry in block.record["results"]
                if entry["method"] in ("random", "class-average") and entry.get("eval_seconds")]
    if measured:
        clock.eval_s = max(measured)


def pending_evaluations(args: argparse.Namespace, block: Block, methods: list[str]) -> int:
    """ConvNet-evaluation equivalents still to come for `methods` (a cross-architecture one counted as one)."""
    count = 0
    for method in methods:
        count += sum(block.find(method, selection, "convnet") is None for selection in ("validation", "final"))
        if args.cross_arch:
            count += sum(block.find(method, "validation", arch) is None for arch in CROSS_ARCHITECTURES)
    return count


def distill_process(settings: DistillSettings, run: Path) -> subprocess.Popen:
    """`galaxy-distill distill --resume` of `settings` into `run`, its output appended to RUN.log."""
    run.parent.mkdir(parents=True, exist_ok=True)
    config = run.parent / f"{run.name}.yaml"
    write_yaml(config, settings.model_dump(mode="json"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    handle = open(run.parent / f"{run.name}.log", "a")
    command = [sys.executable, "-m", "galaxy_distill.cli", "distill", "--config", str(config), "--out", str(run), "--resume"]
    handle.write(" ".join(command) + "\n")
    handle.flush()
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    handle.close()
    return process


def run_status(run: Path, work: Path, target: int) -> dict[str, Any]:
    """A finished run's status, from its last checkpoint (written as it stops) and its two sets."""
    meta = read_json(RunDir(run).checkpoint)
    iteration = meta["iteration"]
    stopped = ("iterations" if iteration >= target else "schedule" if meta["schedule"].get("stopped") else "deadline")
    sets = {selection: {"path": str(path.relative_to(work)), "learned_lr": load_synthetic(path)[2]}
            for selection, path in (("validation", RunDir(run).synthetic), ("final", RunDir(run).final))}
    return {"iterations": iteration, "target_iterations": target, "stopped": stopped, "seconds": meta["elapsed"],
            "best_iteration": meta["best"]["iteration"],
            "best_val_accuracy": None if meta["best"]["val_accuracy"] is None else 100 * meta["best"]["val_accuracy"],
            "events": meta["events"][-20:], "sets": sets}


def read_curves(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(validation/test accuracy at each evaluation, mean matching loss per 50 iterations) from the run's last
    checkpoint (its metrics.csv rows)."""
    rows = read_json(RunDir(run).checkpoint)["metrics"]
    curve = [{"iteration": entry["iteration"], "val": 100 * entry["val_accuracy"],
              "test": None if entry["test_accuracy"] is None else 100 * entry["test_accuracy"],
              "step_size": entry["step_size"], "cap": entry["cap"], "seconds": entry["seconds"]}
             for entry in rows if entry["val_accuracy"] is not None]
    losses = [entry["loss"] for entry in rows]
    windows = [losses[start:start + 50] for start in range(0, len(losses), 50)]
    loss_curve = [{"iteration": 50 * index + len(window), "loss": sum(window) / len(window)}
                  for index, window in enumerate(windows)]
    return curve, loss_curve


def run_distillations(args: argparse.Namespace, dataset: PreparedDataset, hyper: dict[str, Any], experts: Path,
                      work: Path, block: Block, clock: Clock) -> None:
    for method in list(block.record["distillations"]):
        status = block.record["distillations"][method]
        lost = [found["path"] for found in status["sets"].values() if not (work / found["path"]).is_file()]
        if method in args.methods and lost and pending_evaluations(args, block, [method]):
            # Another machine's run (the device machine starts bare): its rows still missing need the sets again.
            # Its rows move to "superseded", so that every row of a method comes from one distillation.
            log(f"{method}: the recorded distillation's sets are not here ({', '.join(lost)}); distilling again")
            del block.record["distillations"][method]
            old = [entry for entry in block.record["results"] if entry["method"] == method]
            block.record["superseded"] = [*block.record.get("superseded", []), *old]
            block.record["results"] = [entry for entry in block.record["results"] if entry["method"] != method]
            block.save()
    todo = [method for method in args.methods if method not in block.record["distillations"]]
    for method in args.methods:
        if method not in todo:
            log(f"{method}: distillation already recorded ({block.record['distillations'][method]['iterations']} iterations)")
    # With --parallel all of them run at once, each with the whole share; else one after another, each with its part.
    groups = ([todo] if todo else []) if args.parallel else [[method] for method in todo]
    for index, group in enumerate(groups):
        left = clock.left() - clock.eval_s * pending_evaluations(args, block, args.methods) - args.margin_s
        share = left / (len(groups) - index)
        log(f"distilling {', '.join(group)}" + (" at once" if len(group) > 1 else "")
            + ("" if math.isinf(share) else f", {share:.0f} s each"))
        # The run stops itself at the end of the iteration that passes its time limit (at least one iteration).
        time_limit = None if math.isinf(share) else max(share, 1.0) / 60
        processes = {method: distill_process(distill_settings(args, dataset, hyper, experts, method, time_limit),
                                             work / "runs" / method) for method in group}
        for method, process in processes.items():
            if process.wait() != 0:
                raise RuntimeError(f"distill {method} failed with exit code {process.returncode}; "
                                   f"see {work / 'runs' / method}.log")
            status = block.record["distillations"][method] = run_status(work / "runs" / method, work, args.iterations)
            block.save()
            log(f"{method}: {status['iterations']} iterations, stopped by {status['stopped']}")


def evaluate_distilled(args: argparse.Namespace, dataset: PreparedDataset, hyper: dict[str, Any], model: dict[str, Any],
                       work: Path, block: Block, experts_summary: dict[str, Any]) -> None:
    for method in args.methods:
        status = block.record["distillations"].get(method)
        if status is None:
            log(f"{method}: no distilled set to evaluate")
            continue
        curve, loss_curve = read_curves(work / "runs" / method)
        wanted = [("validation", "convnet"), ("final", "convnet")]
        if args.cross_arch:
            wanted += [("validation", arch) for arch in CROSS_ARCHITECTURES]
        for selection, architecture in wanted:
            if block.find(method, selection, architecture) is not None:
                log(f"{method} ({selection}, {architecture}): already recorded")
                continue
            log(f"evaluating {method} ({selection}) on {architecture}")
            found, seconds = evaluate_set(args, dataset, work, f"{method}-{selection}-{architecture}", model,
                                          run=work / "runs" / method, selection=selection, architectures=[architecture])
            block.add(row(block.record, method, selection, architecture, found, iterations=status["iterations"],
                          target_iterations=status["target_iterations"], stopped=status["stopped"],
                          experts=experts_summary["experts"], expert_epochs=experts_summary["epochs"],
                          match_epochs=match_epochs(method, hyper), seconds=status["seconds"], eval_seconds=seconds,
                          learned_lr=status["sets"][selection]["learned_lr"], best_iteration=status["best_iteration"],
                          curve=curve, loss_curve=loss_curve))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="prepared dataset (cifar10-zca, cifar10, gz1-128, simzoo-128, ...)")
    parser.add_argument("--ipc", type=int, required=True)
    parser.add_argument("--experts", type=int, default=100, help="expert trajectories to train")
    parser.add_argument("--expert-epochs", type=int, default=None,
                        help="epochs each expert trains (default: max start epoch + M + 1, M the larger of the methods')")
    parser.add_argument("--expert-batch", type=int, default=None, help="default: 256 for CIFAR-10, automatic for galaxies")
    parser.add_argument("--expert-parallel", type=int, default=10, help="experts trained at once (ExpertSettings.parallel)")
    parser.add_argument("--expert-compile", action="store_true")
    parser.add_argument("--expert-precision", choices=["fp32", "bf16-full"], default="fp32")
    parser.add_argument("--expert-test-every", type=int, default=None, help="default: only after the last epoch")
    parser.add_argument("--experts-dir", type=Path, default=None,
                        help="expert store (default: WORK/experts); blocks of one dataset with the same expert settings "
                        "can share one")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=None, help="ConvNet blocks (default: from the image size)")
    parser.add_argument("--methods", nargs="+", choices=["stm", "mtt"], default=["stm", "mtt"])
    parser.add_argument("--iterations", type=int, default=5000, help="iterations aimed at (the deadline may stop sooner)")
    parser.add_argument("--syn-steps", type=int, default=None)
    parser.add_argument("--match-epochs", type=int, default=None, help="MTT's M (STM always uses 1)")
    parser.add_argument("--max-start-epoch", type=int, default=None)
    parser.add_argument("--lr-img", type=float, default=None)
    parser.add_argument("--lr-lr", type=float, default=None)
    parser.add_argument("--lr-teacher", type=float, default=None, help="initial learned step size (MTT's lr_teacher)")
    parser.add_argument("--eval-every", type=int, default=None, help="iterations between validation evaluations")
    parser.add_argument("--val-nets", type=int, default=2, help="networks per validation evaluation")
    parser.add_argument("--val-epochs", type=int, default=300, help="epochs of each validation network")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--stm-patience", type=int, default=None)
    parser.add_argument("--batch-syn", type=int, default=None)
    parser.add_argument("--batch-chunk", type=int, default=None)
    parser.add_argument("--distill-precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--distill-compile", action="store_true")
    parser.add_argument("--parallel", action="store_true", help="run the methods' distillations at once (one GPU)")
    parser.add_argument("--baselines", nargs="*", choices=list(BASELINE_KINDS), default=list(BASELINE_KINDS))
    add_evaluation_flags(parser)
    parser.add_argument("--full-epochs", type=int, default=50)
    parser.add_argument("--full-nets", type=int, default=5)
    parser.add_argument("--cross-arch", action="store_true", help="also ResNet-18 and VGG-11 on the validation-selected sets")
    parser.add_argument("--deadline-minutes", type=float, default=None,
                        help="minutes (from this process's start) in which everything must finish")
    parser.add_argument("--eval-estimate-s", type=float, default=60.0,
                        help="seconds per set evaluation assumed until a baseline has measured it")
    parser.add_argument("--margin-s", type=float, default=60.0,
                        help="seconds kept back at the deadline beyond the estimated evaluations (the distillations' "
                        "start before their time limit counts, their last iteration, writes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=None, help="default: WORKSPACE/paper/<dataset>-ipc<K>")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/paper/<dataset>-ipc<K>.json")
    args = parser.parse_args()

    clock = Clock(args.deadline_minutes, args.eval_estimate_s)
    dataset = load_prepared(args.dataset, option="--dataset")
    block_name = f"{dataset.name}-ipc{args.ipc}"
    work = (args.work or workspace_dir() / "paper" / block_name).resolve()
    out = args.out or RESULTS / "paper" / f"{block_name}.json"
    hyper = hyperparameters(args, dataset)
    needed = hyper["max_start_epoch"] + max(match_epochs(method, hyper) for method in args.methods) + 1
    epochs = args.expert_epochs or needed
    if epochs < needed - 1:
        parser.error(f"--expert-epochs {epochs}: the distillations need max start epoch + M = {needed - 1} at least")
    env = environment()
    header = {"command": env["command"], "revision": env["git_revision"], "gpu": env["gpu"], "torch": env["torch"],
              "python": env["python"], "dataset": dataset.name, "ipc": args.ipc, "hyperparameters": hyper,
              "protocol": {"iterations": args.iterations, "validation": {"every": hyper["eval_every"], "nets": args.val_nets,
                                                                         "epochs": args.val_epochs, "split": "val"},
                           "evaluation": {"nets": args.networks, "epochs": args.epochs, "split": "test",
                                          "lr": "learned step size (baselines 0.01)"},
                           "full": {"nets": args.full_nets, "epochs": args.full_epochs},
                           "distill_precision": args.distill_precision, "distill_compile": args.distill_compile,
                           "parallel": args.parallel, "deadline_minutes": args.deadline_minutes}}
    block = Block(out, header)
    log(f"block {block_name}: {hyper}; results in {out}, work in {work}")

    started = time.perf_counter()
    expert_settings = ExpertSettings(
        dataset=dataset.name, num_experts=args.experts, epochs=epochs, batch_size=hyper["expert_batch"], width=args.width,
        depth=args.depth, parallel=min(args.expert_parallel, args.experts), compile=args.expert_compile,
        precision=args.expert_precision, test_every=args.expert_test_every or epochs, seed=args.seed, device=args.device)
    experts_dir = (args.experts_dir or work / "experts").resolve()
    before = block.record.get("experts", {})
    was_complete = before.get("experts") == args.experts and (experts_dir / MANIFEST_FILE).is_file()
    log(f"experts: {args.experts} x {epochs} epochs in {experts_dir}")
    manifest = read_json(train_experts(expert_settings, dataset, experts_dir))
    summary = summarize(manifest)
    # Wall time of the training itself, summed over the invocations that trained some of them.
    wall = before.get("wall_s") if was_complete else (before.get("wall_s") or 0.0) + time.perf_counter() - started
    experts_summary = {"experts": summary["experts"], "epochs": epochs, "wall_s": wall,
                       "final_test_acc_mean": 100 * summary["final_test_acc_mean"],
                       "final_test_acc_std": 100 * summary["final_test_acc_std"],
                       "settings": expert_settings.model_dump(mode="json")}
    block.record["experts"] = experts_summary
    block.save()
    log(f"experts ready: {experts_summary['experts']}, final test accuracy {experts_summary['final_test_acc_mean']:.1f} %")

    # Every set, baselines included, is evaluated on the experts' network (width, depth, norm).
    model = ExpertStore(experts_dir, verify=False).model_spec.model_dump()
    release_cached_memory()  # the distillations run in processes of their own, on the same GPU
    run_baselines(args, dataset, model, work, block, clock)
    release_cached_memory()
    run_distillations(args, dataset, hyper, experts_dir, work, block, clock)
    evaluate_distilled(args, dataset, hyper, model, work, block, experts_summary)
    block.record["wall_s"] = time.perf_counter() - started
    block.save()
    log(f"done: {len(block.record['results'])} records in {out}")


if __name__ == "__main__":
    main()
