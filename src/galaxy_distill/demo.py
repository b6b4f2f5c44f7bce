"""`galaxy-distill demo`: the whole pipeline on a small simulated galaxy set, on CPU, in minutes.

It runs the stages of pipeline.py, as the separate commands do, with settings small enough
for a laptop: SimZoo at 32 px, a few short experts, STM at IPC 1, and an evaluation of
the prototypes against random real images and class-average images of the same size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer

from galaxy_distill.atomic_io import atomic_write_bytes, write_json
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.evaluate.run import results_table
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.experts.settings import ExpertSettings
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.pipeline import distill_stage, evaluate_stage, prepare_dataset, report_stage, train_expert_stage
from galaxy_distill.rundir import RunDir
from galaxy_distill.settings import workspace_dir


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is: the defaults are the demo's; the tests run the same steps at a toy scale."""

    size: int = 32
    per_class: int = 40
    width: int = 32
    experts: int = 4
    expert_epochs: int = 10
    expert_batch_size: int = 32
    iterations: int = 200
    eval_every: int = 80
    eval_epochs: int = 200
    final_networks: int = 3
    final_epochs: int = 300


def run_demo(out: Path | None = None, scale: DemoScale = DemoScale()) -> Path:
    """Run the demo into `out` (default: WORKSPACE/runs/demo) and return that directory; the report is in STM/report/."""
    started = time.perf_counter()
    run_dir = out or workspace_dir() / "runs" / "demo"
    typer.echo(f"1/5 generating SimZoo (9 simulated galaxy classes, {scale.size} px)")
    dataset = prepare_dataset(PrepareSettings(dataset="simzoo", name="simzoo-demo", size=scale.size, per_class=scale.per_class, seed=0))
    typer.echo("2/5 training expert networks on the simulated galaxies")
    expert_settings = ExpertSettings(dataset=dataset.name, width=scale.width, num_experts=scale.experts,
                                     epochs=scale.expert_epochs, batch_size=scale.expert_batch_size, parallel=scale.experts,
                                     device="cpu")
    experts_dir = run_dir / "experts"
    train_expert_stage(expert_settings, dataset, experts_dir)
    store = ExpertStore(experts_dir)
    typer.echo("3/5 distilling one prototype per class with STM")
    distill_settings = DistillSettings(
        dataset=dataset.name, experts=experts_dir, method="stm", ipc=1, syn_steps=10,
        max_start_epoch=min(6, scale.expert_epochs - 1), iterations=scale.iterations, lr_img=100.0,
        # MTT's step-size rate for one image per class; at the default 1e-5 the step size fell to a third here.
        lr_lr=1e-7,
        eval_every=scale.eval_every, eval_networks=2, eval_epochs=scale.eval_epochs, stm_patience=80, stm_decay_every=10,
        stm_stop_factor=0.2, checkpoint_every=40, snapshot_every=40, device="cpu",
    )
    result = distill_stage(distill_settings, dataset, run_dir / "stm", resume=True, store=store, note=typer.echo)
    typer.echo("4/5 evaluating the prototypes against random real images and class averages of the same size")
    eval_settings = EvaluateSettings(run=result.run_dir, baselines=["random", "class_average"],
                                     networks=scale.final_networks, epochs=scale.final_epochs, device="cpu")
    results = evaluate_stage(eval_settings, dataset=dataset).results
    by_method = {entry["method"]: entry for entry in results}
    stm, random, average = by_method["stm"], by_method["random"], by_method["class_average"]
    wall = time.perf_counter() - started
    summary = (
        f"galaxy_distill demo: SimZoo ({dataset.num_classes} simulated GZ2 classes, {sum(dataset.meta['counts']['train'])} "
        f"training images at {scale.size} px) was distilled by STM into one prototype image per class in {result.iterations} "
        f"iterations, using {len(store)} expert trajectories of {store.epochs} epochs. Networks trained from scratch on "
        f"the {dataset.num_classes} prototypes reach {100 * stm['acc_mean']:.1f} ± {100 * stm['acc_std']:.1f}% test "
        f"accuracy ({stm['n_eval']} networks), against {100 * random['acc_mean']:.1f} ± {100 * random['acc_std']:.1f}% "
        f"for {dataset.num_classes} random real images, {100 * average['acc_mean']:.1f} ± {100 * average['acc_std']:.1f}% "
        f"for the {dataset.num_classes} class-average images and {100 / dataset.num_classes:.1f}% for chance. "
        f"The prototypes are in prototypes.png; the whole demo took {wall:.0f} s."
    )
    write_json(run_dir / "metrics.json", {"results": results, "distill_iterations": result.iterations,
                                          "best_val_accuracy": result.best_val_accuracy, "wall_s": wall})
    atomic_write_bytes(run_dir / "summary.txt", (summary + "\n").encode())
    typer.echo(results_table(results))
    typer.echo("\n" + summary)
    typer.echo("\n5/5 writing the report (prototypes, curves, evaluation, nearest real galaxies, saliency)")
    report = report_stage(result.run_dir)
    typer.echo(f"wrote {run_dir} (prototypes: {RunDir(result.run_dir).prototypes})")
    typer.echo(f"report: {report}")
    return run_dir
