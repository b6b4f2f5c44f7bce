"""The one wiring of the stages: prepare -> experts -> distill -> evaluate -> report.

Each function runs one stage from its settings and what the stage before produced, with the
workspace's default locations. The command line (cli.py, one stage a command), the demo
(demo.py, every stage at a small scale) and bench/pipeline.py (experts, then distillations
and their evaluations, timed) all call these, so the stages are wired together in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from galaxy_distill import distributed
from galaxy_distill.atomic_io import read_json, write_json
from galaxy_distill.data.registry import PreparedDataset, load_prepared, prepare
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.distill.fresh_start import removed_if_start_fails
from galaxy_distill.distill.run import DistillResult, distill
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.evaluate.run import default_output, evaluate, run_description
from galaxy_distill.evaluate.selection import validation_evaluator
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.experts.settings import ExpertSettings
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.experts.train import summarize, train_experts
from galaxy_distill.report import write_report
from galaxy_distill.settings import workspace_dir


def prepare_dataset(settings: PrepareSettings, force: bool = False) -> PreparedDataset:
    """Stage 1: build the dataset into the workspace (same settings reuse the stored copy)."""
    return prepare(settings, force=force)


def default_experts_dir(dataset: PreparedDataset) -> Path:
    """Where `galaxy-distill experts` stores a dataset's experts unless --out says otherwise."""
    return workspace_dir() / "experts" / dataset.name


def default_run_dir(dataset: PreparedDataset, settings: DistillSettings) -> Path:
    """Where `galaxy-distill distill` writes its run unless --out says otherwise."""
    return workspace_dir() / "runs" / f"{dataset.name}-{settings.method}-ipc{settings.ipc}"


@dataclass(frozen=True)
class ExpertsOutcome:
    directory: Path
    summary: dict[str, float]
    """experts, final_test_acc_mean, final_test_acc_std (experts/train.summarize)."""


def train_expert_stage(settings: ExpertSettings, dataset: PreparedDataset, out_dir: Path) -> ExpertsOutcome:
    """Stage 2: train (or resume, or reuse) the experts into out_dir and summarise their final test accuracy."""
    manifest = train_experts(settings, dataset, out_dir)
    return ExpertsOutcome(out_dir, summarize(read_json(manifest)))


def distill_stage(settings: DistillSettings, dataset: PreparedDataset, out_dir: Path, resume: bool = False,
                  store: ExpertStore | None = None, note: Callable[[str], None] = print) -> DistillResult:
    """Stage 3: distil from the experts in settings.experts into out_dir, choosing the kept images on validation.

    A leftover of an earlier start that never reached a checkpoint is cleared first (`note` says so), and a run
    that fails before its first checkpoint leaves nothing behind (distill/fresh_start.py).
    """
    store = store or ExpertStore(settings.experts)
    evaluator = validation_evaluator(store.model_spec, dataset, settings)
    with removed_if_start_fails(out_dir) as cleared:
        if cleared:
            note(f"note: {out_dir} held a run that stopped before its first checkpoint; starting afresh")
        return distill(settings, dataset, store, out_dir, evaluator=evaluator, resume=resume)


@dataclass(frozen=True)
class EvaluationOutcome:
    results: list[dict[str, Any]]
    output: Path
    """The JSON file of {"settings", "results"}: RUN/evaluation.json by default."""


def evaluate_stage(settings: EvaluateSettings, output: Path | None = None,
                   dataset: PreparedDataset | None = None) -> EvaluationOutcome:
    """Stage 4: train fresh networks on the run's images and the baselines; write {"settings", "results"} to output.

    The dataset and the network's shape default to the run's (its settings name them); rank 0 alone writes.
    """
    run_settings = run_description(settings.run)
    if dataset is None:
        dataset_name = settings.dataset or run_settings.get("dataset")
        if dataset_name is None:
            raise GalaxyDistillError("evaluate needs --dataset (or a --run that names it)")
        dataset = load_prepared(dataset_name, option="--dataset")
    run_model = None
    if run_settings.get("experts"):
        run_model = ExpertStore(run_settings["experts"], verify=False).model_spec.model_dump()
    target = output or default_output(settings, dataset)
    results = evaluate(settings, dataset, run_model, output=target)
    if distributed.is_main():
        write_json(target, {"settings": settings.model_dump(mode="json"), "results": results})
    # The output exists when any rank returns, and no rank tears its connections down while another still works
    # (without this barrier, a two-process evaluation once ended in SIGABRT in rank 1, which writes nothing here).
    distributed.barrier()
    return EvaluationOutcome(results, target)


def report_stage(run: Path) -> Path:
    """Stage 5: write RUN/report/index.html and return its path."""
    return write_report(run)
