"""The `galaxy-distill` command line: it only parses flags and wires the packages together."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from galaxy_distill import __version__
from galaxy_distill.cli_options import settings_options
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.experts.settings import ExpertSettings

app = typer.Typer(
    help="Distil labelled galaxy images into a few synthetic prototypes per class, to see what a network sees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: Rich would read "[mtt|stm]" and "[default: ...]" as markup and drop them.
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of settings; flags override it.")]
OutOption = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory (default: in the workspace).")]
NprocOption = Annotated[int, typer.Option("--nproc", metavar="<int>", show_default=False, help=(
    "Processes (one per GPU) to share the work, started through torchrun; or run under torchrun yourself. [default: 1]"))]


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"galaxy-distill {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """Distil labelled galaxy images into a few synthetic prototypes per class, to see what a network sees."""


@data_app.command("list")
def data_list() -> None:
    """List the datasets galaxy-distill knows and the ones prepared in the workspace."""
    from galaxy_distill.data import DATASETS
    from galaxy_distill.data.registry import datasets_root, prepared_names

    for spec in DATASETS.values():
        typer.echo(f"{spec.name:10s} {spec.description}")
    names = prepared_names()
    typer.echo(f"\nprepared in {datasets_root()}: {', '.join(names) if names else 'none'}")


@data_app.command("prepare")
@settings_options(PrepareSettings, skip=("dataset",))
def data_prepare(
    values: dict[str, Any],
    dataset: Annotated[str, typer.Argument(help="gz1-sdss, gz2, simzoo, cifar10, cifar100 or folder")],
    force: Annotated[bool, typer.Option(show_default=False, help=(
        "Rebuild even if prepared with the same settings, and replace a set of this name prepared with other "
        "settings. [default: off]"))] = False,
    config: ConfigOption = None,
) -> None:
    """Build a dataset into the workspace (idempotent: same settings reuse the stored copy)."""
    from galaxy_distill.pipeline import prepare_dataset
    from galaxy_distill.settings import resolve_settings

    settings = resolve_settings(PrepareSettings, config, {**values, "dataset": dataset})
    prepared = prepare_dataset(settings, force=force)
    counts = prepared.meta["counts"]
    typer.echo(f"prepared {prepared.name} in {prepared.directory}")
    for split in ("train", "val", "test"):
        typer.echo(f"  {split:5s} {sum(counts[split]):6d} images  " + ", ".join(
            f"{n}={c}" for n, c in zip(prepared.class_names, counts[split])))
    for note in prepared.meta.get("notes", [])[:5]:
        typer.echo(f"  note: {note}")


@data_app.command("show")
def data_show(
    dataset: Annotated[str, typer.Argument(help="Prepared dataset name or directory.")],
    out: Annotated[Optional[Path], typer.Option(help="PNG to write (default: DATASET_DIR/examples.png).")] = None,
    per_class: Annotated[int, typer.Option(metavar="<int>", show_default=False, help=(
        "Examples per class in the grid. [default: 8]"))] = 8,
) -> None:
    """Print counts per class and draw a grid of training examples."""
    from galaxy_distill.data import load_prepared
    from galaxy_distill.data.preview import class_grid_png

    prepared = load_prepared(dataset)
    meta = prepared.meta
    typer.echo(f"{prepared.name} ({meta['dataset']}) at {prepared.directory}")
    channels, height, width = prepared.image_shape
    typer.echo(f"  images {height}x{width}x{channels}, ZCA {'on' if prepared.uses_zca else 'off'}")
    typer.echo(f"  {'class':24s} {'train':>7s} {'val':>7s} {'test':>7s}")
    for k, class_name in enumerate(prepared.class_names):
        typer.echo(f"  {class_name:24s} " + " ".join(f"{meta['counts'][s][k]:7d}" for s in ("train", "val", "test")))
    path = class_grid_png(prepared.images("train"), prepared.labels("train"), prepared.class_names,
                          out or prepared.directory / "examples.png", per_class, title=prepared.name)
    typer.echo(f"wrote {path}")


@app.command("experts")
@settings_options(ExpertSettings)
def experts_command(values: dict[str, Any], out: OutOption = None, config: ConfigOption = None, nproc: NprocOption = 1) -> None:
    """Train expert networks on a prepared dataset and store their per-epoch trajectories (resumable)."""
    from galaxy_distill import distributed  # here, not above: torch takes seconds to import and --help needs none of it

    distributed.launch(nproc)
    from galaxy_distill.data import load_prepared
    from galaxy_distill.pipeline import default_experts_dir, train_expert_stage
    from galaxy_distill.settings import resolve_settings

    settings = resolve_settings(ExpertSettings, config, values)
    dataset = load_prepared(settings.dataset, option="--dataset")
    out_dir = out or default_experts_dir(dataset)
    summary = train_expert_stage(settings, dataset, out_dir).summary
    typer.echo(f"{summary['experts']} experts in {out_dir}; final test accuracy "
               f"{summary['final_test_acc_mean']:.3f} ± {summary['final_test_acc_std']:.3f}")


@app.command("distill")
@settings_options(DistillSettings)
def distill_command(
    values: dict[str, Any],
    out: OutOption = None,
    resume: Annotated[bool, typer.Option(show_default=False, help=(
        "Continue the run in --out from its last checkpoint. [default: off]"))] = False,
    config: ConfigOption = None,
    nproc: NprocOption = 1,
) -> None:
    """Distil synthetic prototypes with MTT (fixed schedule) or STM (self-adaptive)."""
    from galaxy_distill import distributed  # here, not above: torch takes seconds to import and --help needs none of it

    distributed.launch(nproc)
    from galaxy_distill.data import load_prepared
    from galaxy_distill.pipeline import default_run_dir, distill_stage
    from galaxy_distill.settings import resolve_settings

    settings = resolve_settings(DistillSettings, config, values)
    dataset = load_prepared(settings.dataset, option="--dataset")
    result = distill_stage(settings, dataset, out or default_run_dir(dataset, settings), resume=resume, note=typer.echo)
    best = "" if result.best_val_accuracy is None else (
        f"; best validation accuracy {result.best_val_accuracy:.3f} at iteration {result.best_iteration}")
    typer.echo(f"distilled {result.iterations} iterations in {result.wall_seconds:.0f} s into {result.run_dir}{best}")


@app.command("evaluate")
@settings_options(EvaluateSettings)
def evaluate_command(values: dict[str, Any], out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="JSON file to write (default: RUN/evaluation.json or the workspace).")] = None,
        config: ConfigOption = None, nproc: NprocOption = 1) -> None:
    """Train fresh networks on a distilled set and/or baselines; report test accuracy mean ± std."""
    from galaxy_distill import distributed  # here, not above: torch takes seconds to import and --help needs none of it

    distributed.launch(nproc)
    from galaxy_distill.evaluate.run import results_table
    from galaxy_distill.pipeline import evaluate_stage
    from galaxy_distill.settings import resolve_settings

    outcome = evaluate_stage(resolve_settings(EvaluateSettings, config, values), output=out)
    typer.echo(results_table(outcome.results))
    typer.echo(f"wrote {outcome.output}")


@app.command("report")
def report_command(run: Annotated[Path, typer.Argument(help=(
        "A distillation run directory, or a directory of runs (such as the demo's): each run in it is reported."))]) -> None:
    """Write RUN/report/index.html: a self-contained page of prototypes, curves, evaluation, neighbours and saliency."""
    from galaxy_distill.pipeline import report_stage
    from galaxy_distill.rundir import run_directories

    for run_dir in run_directories(run):
        typer.echo(f"wrote {report_stage(run_dir)}")


@app.command("demo")
def demo_command(out: OutOption = None) -> None:
    """Generate a small SimZoo set, train experts, distil IPC 1 with STM, compare with random real images, write the HTML report (CPU, minutes)."""
    from galaxy_distill.demo import run_demo

    run_demo(out)


def _is_compile_failure(exc: BaseException) -> bool:
    """Whether torch.compile (--compile) failed to build its kernels, e.g. for want of a C++ compiler."""
    dynamo = sys.modules.get("torch._dynamo.exc")
    return dynamo is not None and isinstance(exc, dynamo.TorchDynamoException)


def main() -> None:
    # What lowers peak memory, per command, for the one-line out-of-memory message.
    memory_knobs = {
        "data": "--per-class or --size",
        "experts": "--parallel (experts trained at once) or --batch-size",
        "distill": "--batch-syn, --batch-chunk (images per chunk of an inner step: same gradients, less memory) or --syn-steps",
        "evaluate": "--batch-size (the networks are trained one at a time, so --networks changes only the time)",
    }
    try:
        app()
    except GalaxyDistillError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except (RuntimeError, MemoryError) as exc:
        # torch.cuda.OutOfMemoryError is a RuntimeError; the CPU allocator raises a plain RuntimeError.
        text = " ".join(str(exc).split())
        out_of_memory = (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
                         or "out of memory" in text.lower() or "can't allocate memory" in text)
        if not out_of_memory:
            if _is_compile_failure(exc):
                first_line = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                typer.echo(f"error: torch.compile could not build the kernels ({first_line[:200]}); run without --compile, "
                           "or give it what it needs (on a CPU a C++ compiler and Python's headers, on a GPU Triton)", err=True)
                sys.exit(2)
            raise
        command = next((argument for argument in sys.argv[1:] if argument in memory_knobs), None)
        knobs = memory_knobs[command] if command else "; ".join(f"{name}: {knob}" for name, knob in memory_knobs.items())
        typer.echo(f"error: out of memory ({text[:160] or type(exc).__name__}); to need less, lower {knobs}", err=True)
        sys.exit(3)
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
