"""Wall time of expert training: N ConvNet experts x E epochs on a prepared dataset (CIFAR-10 by default).

    galaxy-distill data prepare cifar10 --root DIR_WITH_cifar-10-batches-py
    python bench/experts_speed.py --dataset cifar10 --num-experts 100 --epochs 50 --parallel 25 [--precision bf16-full ...]

Experts train `--parallel` at a time as stacked parameters (ExpertSettings: one network after
another; `--compile` compiles the step). Augmentation: DSA
"color_crop_cutout_flip_scale_rotate" in MTT's single mode. The JSON reports wall time and the
experts' final test accuracy mean ± std.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, environment  # noqa: E402

from galaxy_distill.data import load_prepared  # noqa: E402
from galaxy_distill.experts import ExpertSettings, train_experts  # noqa: E402
from galaxy_distill.experts.train import summarize  # noqa: E402
from galaxy_distill.atomic_io import read_json, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--num-experts", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=25)
    parser.add_argument("--precision", choices=["fp32", "bf16-full"], default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--test-every", type=int, default=1, metavar="N",
                        help="score the experts' test accuracy after every N-th epoch and the last (ExpertSettings.test_every)")
    parser.add_argument("--fastest-of", type=Path, metavar="PROFILE_JSON",
                        help="take --parallel, --precision and --compile from the fastest row that "
                        "bench/experts_profile.py measured (at its default batch, 256, the experts' batch here)")
    parser.add_argument("--out", type=Path, default=RESULTS / "experts" / "experts_speed.json")
    args = parser.parse_args()
    if args.fastest_of is not None:
        fastest = min((row for row in read_json(args.fastest_of)["rows"] if row["ms_per_expert_step"] is not None),
                      key=lambda row: row["ms_per_expert_step"])
        args.parallel, args.precision, args.compile = fastest["experts"], fastest["precision"], fastest["compile"]
        print(f"fastest in {args.fastest_of}: {fastest}", flush=True)
    dataset = load_prepared(args.dataset)
    settings = ExpertSettings(dataset=dataset.name, num_experts=args.num_experts, epochs=args.epochs,
                              parallel=args.parallel, precision=args.precision, compile=args.compile, test_every=args.test_every,
                              device="auto")
    base = {**environment(), "dataset": dataset.name, "settings": settings.model_dump(mode="json"),
            "augmentation": "DSA color_crop_cutout_flip_scale_rotate, single mode (MTT default)"}

    def record(manifest: dict, finished: bool) -> dict:
        """Written after every group too, so that a run cut short still leaves its speed."""
        wall = time.perf_counter() - began
        written = {**base, "finished": finished, "experts_done": len(manifest["experts"]), "wall_s": wall,
                   "wall_min": wall / 60, "group_seconds": {str(entry["id"] // args.parallel): entry["group_seconds"]
                                                            for entry in manifest["experts"]},
                   **summarize(manifest)}
        write_json(args.out, written)
        return written

    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        manifest_path = train_experts(settings, dataset, Path(scratch) / "experts",
                                      on_round=lambda manifest: record(manifest, finished=False))
        final = record(read_json(manifest_path), finished=True)
    print(f"{args.num_experts} experts x {args.epochs} epochs: {final['wall_min']:.1f} min; final test accuracy "
          f"{final['final_test_acc_mean']:.4f} ± {final['final_test_acc_std']:.4f}; wrote {args.out}")

if __name__ == "__main__":
    main()
