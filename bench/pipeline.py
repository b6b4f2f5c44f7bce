"""Experts -> distillation (MTT and/or STM) -> evaluation with baselines, timed, into one results JSON.

    python bench/pipeline.py --dataset gz1-64 --num-experts 10 --expert-epochs 15 --ipc 1 \
        --methods stm mtt --iterations 300 --out bench/results/galaxies/smoke_gz1_64.json

The dataset must be prepared (`galaxy-distill data prepare ...`) in the workspace
(GALAXY_DISTILL_HOME). Entries of `results` follow the results schema: dataset,
resolution, ipc, method, acc_mean, acc_std, n_eval, selection, architecture, wall_s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_evaluation_flags, distill_record, environment, tag_distill_wall

from galaxy_distill.atomic_io import write_json
from galaxy_distill.data import load_prepared
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.evaluate.run import results_table
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.experts import ExpertSettings, ExpertStore
from galaxy_distill.pipeline import default_run_dir, distill_stage, evaluate_stage, train_expert_stage
from galaxy_distill.settings import workspace_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--num-experts", type=int, default=10)
    parser.add_argument("--expert-epochs", type=int, default=15)
    parser.add_argument("--expert-batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--expert-compile", action="store_true", help="train the experts with --compile (ExpertSettings.compile)")
    parser.add_argument("--expert-precision", choices=["fp32", "bf16-full"], default="fp32",
                        help="the experts' --precision (ExpertSettings.precision)")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1])
    parser.add_argument("--methods", nargs="+", default=["stm", "mtt"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--syn-steps", type=int, default=20)
    parser.add_argument("--match-epochs", type=int, default=1, help="expert epochs a student's syn_steps must cover (MTT's M)")
    parser.add_argument("--batch-syn", type=int, default=None)
    parser.add_argument("--lr-init", type=float, default=0.01, help="initial learned student step size (MTT's lr_teacher)")
    parser.add_argument("--max-start-epoch", type=int, default=10)
    parser.add_argument("--lr-img", type=float, default=1000.0)
    parser.add_argument("--stm-patience", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--baselines", nargs="*", default=["random", "class_average", "full"])
    parser.add_argument("--architectures", nargs="+", default=["convnet"])
    add_evaluation_flags(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--experts-only", action="store_true",
                        help="train (or check) the experts and stop, so that several distillations can share them")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    dataset = load_prepared(args.dataset)
    record = {**environment(), "dataset": dataset.name, "results": [], "stages": {}}
    began = time.perf_counter()
    experts_dir = workspace_dir() / "experts" / f"{dataset.name}-w{args.width}"
    expert_settings = ExpertSettings(dataset=dataset.name, num_experts=args.num_experts, epochs=args.expert_epochs,
                                     batch_size=args.expert_batch, width=args.width, parallel=args.num_experts,
                                     compile=args.expert_compile, precision=args.expert_precision, device=args.device)
    started = time.perf_counter()
    summary = train_expert_stage(expert_settings, dataset, experts_dir).summary
    record["stages"]["experts"] = {"wall_s": time.perf_counter() - started, **summary,
                                   "settings": expert_settings.model_dump(mode="json")}
    print(f"experts: {record['stages']['experts']}", flush=True)
    if args.experts_only:
        record["wall_s"] = time.perf_counter() - began
        write_json(args.out, record)
        return
    store = ExpertStore(experts_dir)
    for ipc in args.ipc:
        first = True
        for method in args.methods:
            settings = DistillSettings(
                dataset=dataset.name, experts=experts_dir, method=method, ipc=ipc, syn_steps=args.syn_steps,
                expert_epochs=args.match_epochs, batch_syn=args.batch_syn, lr_init=args.lr_init,
                max_start_epoch=args.max_start_epoch, iterations=args.iterations, lr_img=args.lr_img,
                stm_patience=args.stm_patience, eval_every=args.eval_every, eval_networks=2, eval_epochs=300,
                device=args.device, checkpoint_every=100, snapshot_every=100,
            )
            run = default_run_dir(dataset, settings)
            started = time.perf_counter()
            result = distill_stage(settings, dataset, run, resume=True, store=store)
            distill_wall = time.perf_counter() - started
            # The measured wall time (not the run's own clock) and the result's counts, which resume keeps.
            record["stages"][f"distill-{method}-ipc{ipc}"] = {
                **distill_record(run), "wall_s": distill_wall, "iterations": result.iterations,
                "best_val_accuracy": result.best_val_accuracy, "best_iteration": result.best_iteration,
            }
            eval_settings = EvaluateSettings(run=run, baselines=args.baselines if first else [], networks=args.networks,
                                             epochs=args.epochs, architectures=args.architectures, device=args.device)
            results = evaluate_stage(eval_settings, dataset=dataset).results
            tag_distill_wall(results, method, distill_wall)
            record["results"] += results
            print(results_table(results), flush=True)
            write_json(args.out, {**record, "wall_s": time.perf_counter() - began})
            first = False
    record["wall_s"] = time.perf_counter() - began
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
