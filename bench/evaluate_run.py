"""Evaluate a distillation run whose expert store stayed on the GPU machine (the final step of bench/pipeline.py).

    python bench/evaluate_run.py --run RUN_DIR --experts-record bench/results/cifar10_experts.json \
        --baselines random class_average --networks 5 --epochs 1000 --out bench/results/cifar10/cifar10_ipc10_stm.json

Used when a GPU session ended after a run had finished distilling but before its evaluation:
the run directory (settings, metrics, synthetic set) came back, and the networks are trained
here instead. The model is rebuilt from the expert settings that the pipeline recorded in
`--experts-record`; the output has the pipeline's results schema, with `device` saying where
the evaluation ran and `distilled_with` where the distillation did.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_evaluation_flags, distill_record, environment, tag_distill_wall

from galaxy_distill.data import load_prepared
from galaxy_distill.evaluate.run import evaluate, results_table
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.experts import ExpertSettings
from galaxy_distill.experts.train import model_spec_for
from galaxy_distill.atomic_io import read_json, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--experts-record", type=Path, required=True, help="the pipeline's JSON of the experts stage")
    parser.add_argument("--baselines", nargs="*", default=[])
    parser.add_argument("--architectures", nargs="+", default=["convnet"])
    add_evaluation_flags(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true", help="reuse the networks an interrupted evaluation of this run finished")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    experts = read_json(args.experts_record)
    stage = distill_record(args.run)
    dataset = load_prepared(stage["settings"]["dataset"])
    stored = {name: value for name, value in experts["stages"]["experts"]["settings"].items() if name not in ExpertSettings.retired}
    model = model_spec_for(ExpertSettings(**stored), dataset).model_dump()
    began = time.perf_counter()
    settings = EvaluateSettings(run=args.run, baselines=args.baselines, networks=args.networks, epochs=args.epochs,
                                architectures=args.architectures, device=args.device, resume=args.resume)
    results = evaluate(settings, dataset, model)
    method = stage["settings"]["method"]
    tag_distill_wall(results, method, stage["wall_s"])
    print(results_table(results), flush=True)
    provenance = {key: experts[key] for key in ("command", "git_revision", "gpu", "gpu_count", "torch")}
    write_json(args.out, {**environment(), "dataset": dataset.name, "distilled_with": provenance, "results": results,
                          "stages": {"experts": experts["stages"]["experts"],
                                     f"distill-{method}-ipc{stage['settings']['ipc']}": stage},
                          "wall_s": time.perf_counter() - began})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
