"""Writes bisect.json from the printed outputs beside it (bisect-output.txt, same-draws-output.txt, the seed-1 runs)."""

import json
import re
from pathlib import Path

HERE = Path(__file__).parent


def arms() -> dict[str, dict[int, float]]:
    """Step size by iteration for each arm of bisect.sh (its second-call lines win where an arm printed twice)."""
    found: dict[str, dict[int, float]] = {}
    for line in (HERE / "bisect-output.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, *points = line.split()
        found[name] = {int(point.split(":")[0]): float(point.split(":")[1].split("/")[0]) for point in points}
    return found


def same_draws() -> dict[str, dict]:
    runs: dict[str, dict] = {}
    current = None
    for line in (HERE / "same-draws-output.txt").read_text().splitlines():
        if line.startswith("== "):
            current = Path(line[3:]).stem
            runs[current] = {"alpha": []}
        elif current and (match := re.match(r"\s*(\d+) epoch\s+\d+ loss .* alpha ([\d.]+) / ([\d.]+) image drift ([\d.e+-]+)", line)):
            runs[current]["alpha"].append({"iteration": int(match[1]), "ours": float(match[2]), "reference": float(match[3]),
                                           "image_drift": float(match[4])})
        elif current and (match := re.search(r"syn_lr = ([\d.]+)", line)):
            runs[current]["reference_loop_step_size_at_70"] = float(match[1])
    return runs


def main() -> None:
    step_sizes = arms()
    reference_seed1 = {int(m[1]): float(m[2]) for m in re.finditer(r"iter = (\d+), .*syn_lr = ([\d.]+)",
                                                                     (HERE / "reference-seed1.log").read_text())}
    ours_seed1 = json.loads((HERE / "mtt-seed1-eval.json").read_text())["results"][0]
    record = {
        "setting": "CIFAR-10 ZCA, IPC 10, syn_steps 30, M 2, max start epoch 20, lr_img 1e5, lr_lr 1e-5, lr_teacher 0.01, "
                   "10 experts x 22 epochs, one NVIDIA H100 80GB HBM3",
        "revisions": {"bisect.sh": "ccdb6dd", "same.sh and the seed-1 runs": "aa434e5"},
        "torch": "the device image's (2.11, device/KINDS.md); these runs did not print it",
        "commands": ["ITERATIONS=100 bash bench/results/faithful/bisect.sh", "bash bench/results/faithful/bisect/same.sh"],
        "step_size_at_iteration_100": {name: values.get(100) for name, values in step_sizes.items()},
        "effects_on_step_size_at_iteration_100": {
            "cuda_graphs_off": round(step_sizes["eager"][100] - step_sizes["graphs"][100], 6),
            "tf32_off": round(step_sizes["no_tf32"][100] - step_sizes["graphs"][100], 6),
            "seed_1_instead_of_0": round(step_sizes["seed1"][100] - step_sizes["graphs"][100], 6),
            "augmentation_off_ours": round(step_sizes["no_augment"][100] - step_sizes["graphs"][100], 6),
            "augmentation_off_reference": round(step_sizes["ref_no_augment"][100] - step_sizes["ref"][100], 6),
        },
        "same_draws": same_draws(),
        "seed_1_500_iterations": {
            "mtt": {"acc_mean": 100 * ours_seed1["acc_mean"], "acc_std": 100 * ours_seed1["acc_std"],
                    "learned_lr": ours_seed1["lr"], "n_eval": ours_seed1["n_eval"], "epochs": ours_seed1["epochs"]},
            "mtt-reference": {"step_size_by_iteration": reference_seed1,
                              "note": "stopped after iteration 400 when the session's device time ran out; not evaluated"},
        },
    }
    (HERE / "bisect.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["effects_on_step_size_at_iteration_100"], indent=2))


if __name__ == "__main__":
    main()
