"""The `galaxy-distill` command line: it only parses flags and wires the packages together."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from galaxy_distill.errors import GalaxyDistillError

app = typer.Typer(
    help="Distil labelled galaxy images into a few synthetic prototypes per class, to see what a network sees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of settings; flags override it.")]


@data_app.command("list")
def data_list() -> None:
    """List the datasets galaxy-distill knows and the ones prepared in the workspace."""
    from galaxy_distill.config import workspace_dir
    from galaxy_distill.data import DATASETS

    for spec in DATASETS.values():
        typer.echo(f"{spec.name:10s} {spec.description}")
    prepared = workspace_dir() / "datasets"
    names = sorted(p.name for p in prepared.iterdir() if (p / "meta.json").is_file()) if prepared.is_dir() else []
    typer.echo(f"\nprepared in {prepared}: {', '.join(names) if names else 'none'}")


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[str, typer.Argument(help="gz1-sdss, gz2, simzoo, cifar10, cifar100 or folder")],
    root: Annotated[Optional[Path], typer.Option(help="Source directory (default: ../shared/data/... when present).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Name to store it under (default: the dataset's name).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Output side in pixels.")] = None,
    crop_fraction: Annotated[Optional[float], typer.Option(help="Central fraction of each image kept before resizing.")] = None,
    per_class: Annotated[Optional[int], typer.Option(help="Images per class (default: the dataset's own).")] = None,
    test_fraction: Annotated[Optional[float], typer.Option(help="Fraction of each class held out for testing.")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Fraction of the rest held out for validation.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of every random choice.")] = None,
    rotations: Annotated[Optional[int], typer.Option(help="k: add k-1 copies of the training split rotated by 360/k degrees.")] = None,
    zca: Annotated[Optional[bool], typer.Option("--zca/--no-zca", help="ZCA-whiten (fitted on train, invertible for display).")] = None,
    skip_bad_images: Annotated[Optional[bool], typer.Option("--skip-bad-images/--fail-on-bad-images", help="Skip unreadable images (counted) instead of stopping.")] = None,
    include_merger: Annotated[Optional[bool], typer.Option("--include-merger/--no-merger", help="gz1-sdss: keep the merger class.")] = None,
    gz2_source: Annotated[Optional[str], typer.Option(help="gz2: hart16, kaggle or auto.")] = None,
    min_votes: Annotated[Optional[int], typer.Option(help="gz2: minimum votes per question on the path.")] = None,
    test_root: Annotated[Optional[Path], typer.Option(help="folder: a second class-folder tree used as the test split.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel workers (default: CPU cores, at most 8).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if prepared with the same settings.")] = False,
    config: ConfigOption = None,
) -> None:
    """Build a dataset into the workspace (idempotent: same settings reuse the stored copy)."""
    flags = {key: value for key, value in locals().items() if key not in ("force", "config")}
    from galaxy_distill.config import resolve_settings
    from galaxy_distill.data import PrepareSettings, prepare

    settings = resolve_settings(PrepareSettings, config, flags)
    prepared = prepare(settings, force=force)
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
    per_class: Annotated[int, typer.Option(help="Examples per class in the grid.")] = 8,
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


def main() -> None:
    try:
        app()
    except GalaxyDistillError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
