"""`galaxy-distill report RUN_DIR`: one offline HTML page (and its figures as files) showing what the network sees.

The report is built in a hidden staging directory inside the run and then swapped in for
RUN_DIR/report, so a reader never finds a half-written report.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from galaxy_distill import __version__
from galaxy_distill.data.morphology import measure, radial_profile
from galaxy_distill.evaluate.ground_truth import ground_truth_check
from galaxy_distill.report import figures
from galaxy_distill.report.explain import (
    SMOOTHGRAD_NOISE,
    final_expert,
    nearest,
    saliency,
)
from galaxy_distill.report.page import (
    Cell,
    ReportFiles,
    Section,
    escape,
    file_stem,
    note,
    paragraph,
    render_page,
    side_by_side,
    table,
)
from galaxy_distill.report.pixels import (
    CONTRAST_SIGMAS,
    contrast_clipped,
)
from galaxy_distill.report.run_contents import RunContents, load_run
from galaxy_distill.rundir import RunDir
from galaxy_distill.runtime import seeded_generator
from galaxy_distill.atomic_io import atomic_write_bytes, follow_umask

GRID_PER_CLASS = 10
"""Prototypes per class in the grids (as in the run's own prototypes.png)."""
EXPLAINED_PER_CLASS = 3
"""Prototypes per class given nearest neighbours and saliency maps."""
EXPLAINED_CLASSES = 20
"""Classes given per-prototype figures: beyond this (CIFAR-100) the page would be unreadably long."""
NEIGHBOURS = 5
NEIGHBOUR_POOL = 5000
"""Training images searched for neighbours (a seeded random subset of larger sets)."""
REAL_SALIENCY_IMAGES = 3
MEASURED_PER_CLASS = 300
"""Real images per class measured for the galaxy measurements."""
PROFILE_BINS = 16
CHUNK = 256
NON_GALAXY_DATASETS = ("cifar10", "cifar100")
METHOD_LABELS = {"stm": "distilled (STM)", "mtt": "distilled (MTT)", "random": "random real", "class_average": "class average",
                 "full": "full data"}
METHOD_ORDER = ("stm", "mtt", "random", "class_average", "full")
SHOWN_MEASURES = {
    "ellipticity": "ellipticity 1 − b/a",
    "colour_centre": "centre colour (< 0.5 R50)",
    "colour_outskirts": "outskirts colour (1–2 R50)",
    "colour_gradient": "colour gradient (centre − outskirts)",
    "concentration": "concentration R90/R50",
    "r50": "half-light radius R50 (pixels)",
}


@dataclass
class _Report:
    """What the sections share: the run, the files being written, and values computed once."""

    run: RunContents
    files: ReportFiles
    shown: np.ndarray
    """The prototypes as people see them: uint8 NHWC, un-whitened."""
    labels: np.ndarray
    expert: nn.Module | None
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return self.run.dataset.class_names

    def explained(self) -> list[tuple[int, str, np.ndarray]]:
        """(class index, name, prototype indices) of the prototypes given per-prototype figures."""
        return [(k, name, np.flatnonzero(self.labels == k)[:EXPLAINED_PER_CLASS])
                for k, name in enumerate(self.class_names[:EXPLAINED_CLASSES])]

    def explained_note(self) -> str:
        ipc = int(np.bincount(self.labels).max()) if len(self.labels) else 0
        parts = []
        if ipc > EXPLAINED_PER_CLASS:
            parts.append(f"the first {EXPLAINED_PER_CLASS} of {ipc} prototypes per class")
        if len(self.class_names) > EXPLAINED_CLASSES:
            parts.append(f"the first {EXPLAINED_CLASSES} of {len(self.class_names)} classes")
        return note(f"Shown for {' and '.join(parts)}.") if parts else ""


def git_revision() -> str:
    """The commit of the galaxy_distill checkout writing the report, or "unknown" when not run from one.

    The package must sit at src/galaxy_distill of the repository: an installed copy inside some
    other repository (a virtual environment in a project folder) must not report that one's commit.
    """
    package = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package, capture_output=True, text=True,
                                timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = result.stdout.split()
    if len(lines) != 2 or Path(lines[0]).resolve() / "src" / "galaxy_distill" != package:
        return "unknown"
    return lines[1]


def _percent(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _best_validation(run: RunContents) -> tuple[float, int] | None:
    evaluated = [(row["val_accuracy"], int(row["iteration"])) for row in run.metrics
                 if row["val_accuracy"] is not None and row["iteration"] is not None]
    return max(evaluated, key=lambda pair: pair[0]) if evaluated else None


def _result_label(result: dict[str, Any], several_architectures: bool) -> str:
    label = METHOD_LABELS.get(result["method"], str(result["method"]))
    return f"{label} · {result.get('architecture', '?')}" if several_architectures else label


def _sorted_results(run: RunContents) -> list[dict[str, Any]]:
    results = run.evaluation["results"] if run.evaluation is not None else []

    def key(result: dict[str, Any]) -> tuple[str, int]:
        method = result["method"]
        return str(result.get("architecture", "")), METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)

    return sorted(results, key=key)


# --- sections -------------------------------------------------------------------------------------------------


def prototypes_section(report: _Report) -> Section:
    run, dataset = report.run, report.run.dataset
    ipc = int(np.bincount(report.labels).max())
    per_class = min(ipc, GRID_PER_CLASS)
    whitening = " The dataset is ZCA-whitened; the images are shown un-whitened." if dataset.uses_zca else ""
    body = [paragraph(f"{len(report.labels)} synthetic images, {ipc} per class, learned inner step size {run.step_size:.4g}. "
                      f"Pixels are upsampled by a whole factor without interpolation.{whitening}")]
    if ipc > per_class:
        body.append(note(f"The grids show the first {per_class} of {ipc} prototypes per class."))
    grids = []
    for name, pictures, title, caption in (
        ("prototypes.png", report.shown, "prototypes", ("Prototypes as the network's input would look as an image "
         "(standardisation undone, values outside the displayable range clamped).")),
        ("prototypes_clipped.png", contrast_clipped(dataset, run.images), f"prototypes, clipped at ±{CONTRAST_SIGMAS}σ",
         (f"The same prototypes with one contrast stretch for the whole set: values clipped at mean ± {CONTRAST_SIGMAS} "
          "standard deviations, then scaled to the full range, which shows faint structure the plain view clamps away.")),
    ):
        figure = figures.prototype_grid(pictures, report.labels, report.class_names, per_class, title)
        grids.append(report.files.image(name, figures.png_bytes(figure), caption, css_class="pixels"))
    body.append(side_by_side(*grids))
    return Section("prototypes", "Prototypes", "".join(body))


def evolution_section(report: _Report) -> Section:
    snapshots = report.run.snapshots
    if not snapshots:
        report.notes.append("no snapshots/ in the run: the evolution of the prototypes is not shown")
        return Section("evolution", "Evolution during distillation", note(
            "This run has no snapshots/ directory, so the evolution of the prototypes cannot be shown."))
    paths = [path for _, path in snapshots]
    iterations = ", ".join(str(i) for i, _ in snapshots[:12]) + (" …" if len(snapshots) > 12 else "")
    body = [paragraph(f"{len(snapshots)} snapshots of the prototype grid saved during distillation (iterations {iterations})."),
            report.files.image("evolution.gif", figures.evolution_gif(paths),
                               f"Animation of the snapshots (at most {figures.MAX_GIF_FRAMES} frames, first to last).",
                               css_class="animation pixels"),
            report.files.image("evolution_strip.png", figures.frame_strip(paths),
                               f"Up to {figures.STRIP_FRAMES} snapshots side by side, first to last.")]
    return Section("evolution", "Evolution during distillation", "".join(body))


def schedule_section(report: _Report) -> Section:
    run = report.run
    events = run.events or []
    body = []
    if run.method == "mtt":
        body.append(paragraph(f"MTT uses a fixed schedule: every iteration starts from an expert epoch drawn uniformly below "
                              f"max_start_epoch = {run.settings.get('max_start_epoch')}; there are no stages."))
    elif run.events is None:
        body.append(note("stages.json is missing: the STM growth and fine-tuning events cannot be marked."))
        report.notes.append("no stages.json: STM stage events not shown")
    elif not events:
        body.append(note("The STM schedule never grew the start-epoch pool nor began fine-tuning in this run."))
    else:
        body.append(paragraph(
            "STM starts matching from epoch 0 only and grows the pool of start epochs (the cap) when the probe loss "
            "(matching epoch cap → cap + M, measured without updating) shows a significant trend; after a patience of "
            "iterations without growth it fine-tunes with a decaying pixel learning rate."))
    if run.metrics:
        caption = ("Start epoch of each iteration (grey) and the largest allowed (blue)." if run.method == "mtt" else
                   "Start epoch of each iteration (grey), the cap on start epochs (blue), the probe loss (orange), growth "
                   "events (green dashed) and the fine-tuning phase (shaded).")
        body.append(report.files.image("schedule.png", figures.png_bytes(figures.schedule_figure(run.metrics, events, run.method)),
                                       caption))
    else:
        body.append(note("metrics.csv is missing: no schedule timeline."))
    if events:
        rows = [[Cell(str(e["iteration"]), True), e["kind"],
                 ", ".join(f"{k}={_number(v) if isinstance(v, float) else v}" for k, v in e.get("detail", {}).items())]
                for e in events]
        body.append(table(["iteration", "event", "detail"], rows))
    return Section("schedule", "Start-epoch schedule and STM stages", "".join(body))


def curves_section(report: _Report) -> Section:
    run = report.run
    if not run.metrics:
        report.notes.append("no metrics.csv: training curves not shown")
        return Section("curves", "Training curves", note("metrics.csv is missing: no training curves."))
    return Section("curves", "Training curves", report.files.image(
        "curves.png", figures.png_bytes(figures.curves_figure(run.metrics)),
        "Left: normalised trajectory-matching loss. Middle: the learned step size of the student's inner SGD "
        "(solid) and the pixel learning rate (dashed). Right: accuracy of networks trained on the prototypes at "
        "evaluation iterations (validation selects the saved prototypes; test is only logged)."))


def evaluation_section(report: _Report) -> Section:
    run = report.run
    results = _sorted_results(run)
    if not results:
        report.notes.append("no evaluation.json: accuracy table, per-class accuracy and confusion matrices not shown")
        return Section("evaluation", "Evaluation", note(
            "No evaluation.json in this run. Add one with: galaxy-distill evaluate --run "
            f"{run.directory} --baselines random --baselines class_average --baselines full"))
    several = len({r.get("architecture") for r in results}) > 1
    labels = [_result_label(r, several) for r in results]
    rows = [[label, str(r.get("architecture", "?")), Cell("all" if r.get("ipc") is None else str(r["ipc"]), True),
             Cell(_percent(r["acc_mean"], r["acc_std"]), True), Cell(str(r.get("n_eval", "?")), True),
             str(r.get("selection", "")), Cell(str(r.get("epochs", "")), True),
             Cell(_number(r.get("wall_s"), 0), True)] for label, r in zip(labels, results)]
    body = [paragraph("Fresh networks trained from scratch on each image set, tested on the "
                      f"{results[0].get('split', 'test')} split (mean ± std over networks)."),
            table(["image set", "architecture", "images per class", "accuracy (%)", "networks", "selection",
                   "epochs", "wall (s)"], rows)]
    with_classes = [(label, r) for label, r in zip(labels, results) if r.get("per_class_accuracy")]
    if with_classes:
        body.append("<h3>Per-class accuracy</h3>")
        body.append(report.files.image("per_class_accuracy.png", figures.png_bytes(figures.per_class_figure(
            [label for label, _ in with_classes], [r["per_class_accuracy"] for _, r in with_classes], report.class_names)),
            "Test accuracy per class for each image set; dotted: chance."))
        body.append(table(["class", *(label for label, _ in with_classes)], [
            [name, *(Cell(_number(100 * r["per_class_accuracy"][name], 1) if name in r["per_class_accuracy"] else "n/a", True)
                     for _, r in with_classes)] for name in report.class_names], caption="per-class accuracy (%)"))
    with_confusion = [(label, np.asarray(r["confusion"], dtype=float)) for label, r in zip(labels, results) if r.get("confusion")]
    if with_confusion:
        body.append("<h3>Confusion matrices</h3>")
        body.append(report.files.image("confusion.png", figures.png_bytes(figures.confusion_figure(
            [label for label, _ in with_confusion], [matrix for _, matrix in with_confusion], report.class_names)),
            "Counts summed over the evaluated networks; colour: fraction of the true class (row)."))
    if not with_classes or not with_confusion:
        body.append(note("evaluation.json lacks per-class accuracy or confusion matrices for some image sets."))
    return Section("evaluation", "Evaluation", "".join(body))


def _neighbour_pool(report: _Report) -> np.ndarray:
    count = len(report.run.dataset.labels("train"))
    if count <= NEIGHBOUR_POOL:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, NEIGHBOUR_POOL, replace=False))


@torch.no_grad()
def _embedded(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(model.embed(images), dim=1)


def neighbours_section(report: _Report) -> Section:
    run, dataset = report.run, report.run.dataset
    pool = _neighbour_pool(report)
    train_images, train_labels = dataset.images("train"), dataset.labels("train")
    chosen = [(k, name, indices) for k, name, indices in report.explained() if len(indices)]
    queries = np.concatenate([indices for _, _, indices in chosen])
    chunks = [pool[start : start + CHUNK] for start in range(0, len(pool), CHUNK)]
    pixel_size = float(np.prod(report.shown.shape[1:]))
    pixel_index, pixel_distance = nearest(torch.from_numpy(report.shown[queries]).float() / 255,
                                          (torch.from_numpy(train_images[c]).float() / 255 for c in chunks), NEIGHBOURS)
    pixel_distance = pixel_distance / np.sqrt(pixel_size)
    feature_index = feature_distance = None
    body = [paragraph(
        f"For each prototype, the {NEIGHBOURS} nearest training images (searched among {len(pool)} of {len(train_labels)}). "
        "Feature space: the penultimate features (embed) of expert 0 after its last epoch, compared by cosine; the "
        "distance shown is 1 − cosine similarity. Pixel space: root-mean-square difference of the displayed pixels "
        "(0–1). Green titles: same class as the prototype; red: another class."), report.explained_note()]
    if report.expert is not None:
        model = report.expert
        feature_index, feature_distance = nearest(_embedded(model, run.images[queries]),
                                                  (_embedded(model, dataset.normalize(train_images[c])) for c in chunks), NEIGHBOURS)
        feature_distance = feature_distance**2 / 2
    else:
        body.append(note(f"Expert store unavailable ({run.store_problem}): nearest neighbours in pixel space only."))

    def neighbours(indices: np.ndarray, distances: np.ndarray, own: int) -> list[figures.Neighbour]:
        return [figures.Neighbour(train_images[pool[i]], report.class_names[train_labels[pool[i]]], float(d),
                                  bool(train_labels[pool[i]] == own)) for i, d in zip(indices, distances)]

    row = 0
    for k, name, indices in chosen:
        rows = range(row, row + len(indices))
        row += len(indices)
        by_features = ([neighbours(feature_index[r], feature_distance[r], k) for r in rows]
                       if feature_index is not None and feature_distance is not None else None)
        by_pixels = [neighbours(pixel_index[r], pixel_distance[r], k) for r in rows]
        figure = figures.neighbours_figure(name, [report.shown[i] for i in indices], by_features, by_pixels)
        body.append(f"<h3>{escape(name)}</h3>")
        body.append(report.files.image(f"neighbours_{file_stem(name)}.png", figures.png_bytes(figure),
                                       f"{name}: nearest real training images of each prototype."))
    return Section("neighbours", "Nearest real images", "".join(body))


def saliency_section(report: _Report) -> Section:
    run, dataset = report.run, report.run.dataset
    if report.expert is None:
        report.notes.append("expert store unavailable: saliency maps not shown")
        return Section("saliency", "Saliency maps", note(f"Expert store unavailable ({run.store_problem}): no saliency maps."))
    generator = seeded_generator(0)
    rng = np.random.default_rng(0)
    split = "test" if len(dataset.labels("test")) else "train"
    real_images, real_labels = dataset.images(split), dataset.labels(split)

    def to_network(pixels: torch.Tensor) -> torch.Tensor:
        return dataset.whiten(pixels)

    body = [paragraph(
        "What expert 0 (after its last epoch) attends to when it scores each image's own class. Grad-CAM: the last "
        "feature map's channels weighted by their mean gradient (positive part, over the image). SmoothGrad: magnitude of "
        f"the input gradient averaged over noisy copies (noise {100 * SMOOTHGRAD_NOISE:.0f}% of the image's range), max over colour "
        f"channels. Real images: {REAL_SALIENCY_IMAGES} random {split} images of the class."), report.explained_note()]
    for k, name, indices in report.explained():
        members = np.flatnonzero(real_labels == k)
        picked = np.sort(rng.choice(members, min(REAL_SALIENCY_IMAGES, len(members)), replace=False)) if len(members) else members
        if not len(indices) and not len(picked):
            continue
        groups = []
        for pixels, pictures, captions in (
            (dataset.unwhiten(run.images[indices]), report.shown[indices], [f"prototype {i + 1}" for i in range(len(indices))]),
            (dataset.unwhiten(dataset.normalize(real_images[picked])), real_images[picked], [f"{split} #{i}" for i in picked]),
        ):
            if not len(pictures):
                groups.append([])
                continue
            maps = saliency(report.expert, pixels, torch.full((len(pictures),), k, dtype=torch.long), to_network, generator)
            groups.append([figures.Explained(pictures[j], maps.grad_cam[j], maps.smooth_grad[j], float(maps.probability[j]),
                                             captions[j]) for j in range(len(pictures))])
        body.append(f"<h3>{escape(name)}</h3>")
        body.append(report.files.image(f"saliency_{file_stem(name)}.png",
                                       figures.png_bytes(figures.saliency_figure(name, groups[0], groups[1])),
                                       f"{name}: Grad-CAM and SmoothGrad of expert 0 for the prototypes and real images."))
    return Section("saliency", "Saliency maps", "".join(body))


def _real_sample(report: _Report, k: int, rng: np.random.Generator) -> np.ndarray:
    members = np.flatnonzero(report.run.dataset.labels("train") == k)
    return np.sort(rng.choice(members, MEASURED_PER_CLASS, replace=False)) if len(members) > MEASURED_PER_CLASS else members


def morphology_section(report: _Report) -> Section:
    dataset = report.run.dataset
    if dataset.meta.get("dataset") in NON_GALAXY_DATASETS:
        return Section("morphology", "Galaxy measurements", note(
            f"{dataset.meta['dataset']} holds no galaxies: the galaxy measurements are left out."))
    rng = np.random.default_rng(0)
    train_images = dataset.images("train")
    real_measures: dict[str, dict[str, np.ndarray]] = {}
    proto_measures: dict[str, dict[str, np.ndarray]] = {}
    real_profiles: dict[str, np.ndarray] = {}
    proto_profiles: dict[str, np.ndarray] = {}
    radii = np.empty(0)
    for k, name in enumerate(report.class_names):
        real = train_images[_real_sample(report, k, rng)]
        prototypes = report.shown[report.labels == k]
        real_measures[name], proto_measures[name] = measure(real), measure(prototypes)
        radii, real_profiles[name] = radial_profile(real, PROFILE_BINS)
        _, proto_profiles[name] = radial_profile(prototypes, PROFILE_BINS)
    has_colour = report.shown.shape[-1] == 3
    body = [paragraph(
        "Measurements of galaxy structure (galaxy_distill.data.morphology) on the prototypes (as displayed) and on up to "
        f"{MEASURED_PER_CLASS} real training images per class. They are taken on image pixels (for SDSS colour images an "
        "asinh-stretched i, r, g composite), so they rank galaxies correctly but are not calibrated photometry; the colour "
        "is −2.5 log10(blue/green), a g−r proxy."),
        report.files.image("radial_profiles.png", figures.png_bytes(
            figures.radial_profiles_figure(report.class_names, radii, real_profiles, proto_profiles)),
            "Radial light profile: mean background-subtracted luminance in circular rings around the light centre."),
        report.files.image("galaxy_measures.png", figures.png_bytes(
            figures.measures_figure(report.class_names, real_measures, proto_measures, has_colour)),
            "Colour of the centre against the outskirts, and ellipticity, of prototypes and real galaxies per class."),
    ]
    rows = []
    for name in report.class_names:
        cells: list[Cell | str] = [name]
        for key in SHOWN_MEASURES:
            real, prototype = real_measures[name][key], proto_measures[name][key]
            finite = real[np.isfinite(real)]
            mean = float(finite.mean()) if len(finite) else float("nan")
            spread = float(finite.std()) if len(finite) > 1 else float("nan")
            value = float(np.nanmean(prototype)) if np.isfinite(prototype).any() else float("nan")
            z = (value - mean) / spread if np.isfinite(spread) and spread > 0 else float("nan")
            cells.append(Cell(f"{', '.join(_number(v) for v in prototype)} (z {_number(z, 1)})\n"
                              f"real {_number(mean)} ± {_number(spread)}", True))
        rows.append(cells)
    body.append(table(["class", *SHOWN_MEASURES.values()], rows, caption=(
        "Per class: the prototypes' values (z: their mean's distance from the real mean in real standard deviations), "
        "then the real images' mean ± std. A positive colour gradient is a redder centre.")))
    return Section("morphology", "Galaxy measurements", "".join(body))


def ground_truth_section(report: _Report) -> Section:
    dataset = report.run.dataset
    check = ground_truth_check(report.shown, report.labels, dataset.images("train"), dataset.labels("train"), report.class_names)
    rows = [[name, feature["feature"], feature["description"], Cell(_number(feature["prototype_value"]), True),
             Cell(_number(feature["own_class_mean"]), True),
             ", ".join(f"{c}: {_number(v)}" for c, v in feature["contrast_class_means"].items()),
             "yes" if feature["carried"] else "no", Cell(f"{100 * feature['carried_fraction']:.0f}%", True)]
            for name, entry in check["classes"].items() for feature in entry["features"]]
    body = [paragraph(f"SimZoo classes differ from their Galaxy Zoo 2 siblings by measurable features. Rule: {check['rule']}. "
                      f"Every feature is carried by {check['carried_count']} of {check['checked_count']} checked classes."),
            table(["class", "feature", "defining property", "prototype mean", "own class (real)", "contrast classes (real)",
                   "carried", "prototypes carrying"], rows)]
    if check["skipped"]:
        body.append(table(["skipped class", "reason"], [[name, reason] for name, reason in check["skipped"].items()]))
    return Section("ground-truth", "Ground truth (SimZoo)", "".join(body))


def run_section(report: _Report, build_seconds: float) -> Section:
    run, dataset = report.run, report.run.dataset
    channels, height, width = dataset.image_shape
    last = run.metrics[-1] if run.metrics else None
    best = _best_validation(run)
    facts = [
        ("run directory", str(run.directory)),
        ("dataset", (f"{dataset.name} ({dataset.meta.get('dataset', '?')}), {len(report.class_names)} classes: "
                     f"{', '.join(report.class_names)}")),
        ("images", f"{height}×{width} px, {channels} channel(s), ZCA {'on' if dataset.uses_zca else 'off'}"),
        ("method", f"{run.method.upper()}, {run.settings.get('ipc', '?')} image(s) per class"),
        ("iterations", f"{int(last['iteration'])} done of at most {run.settings.get('iterations', '?')}"
                       if last and last["iteration"] is not None else "unknown (no metrics.csv)"),
        ("distillation wall time", _seconds(last["seconds"]) if last and last["seconds"] is not None else "unknown"),
        ("best validation accuracy", f"{100 * best[0]:.1f}% at iteration {best[1]} (the saved prototypes)" if best
         else "no checkpoint evaluations (the saved prototypes are the last iteration's)"),
        ("learned step size", f"{run.step_size:.4g}"),
    ]
    if run.store is not None:
        spec = run.store.model_spec
        final = [accuracies[-1] for accuracies in run.store.test_accuracy() if accuracies]
        facts += [("experts", (f"{len(run.store)} × {spec.name} (width {spec.width}, depth {spec.depth or 'auto'}, "
                               f"norm {spec.norm or 'default'}), {run.store.epochs} epochs, in {run.store.directory}")),
                  ("expert test accuracy", _percent(float(np.mean(final)), float(np.std(final))) + "%" if final else "unknown")]
    else:
        facts.append(("experts", f"unavailable: {run.store_problem}"))
    if run.evaluation is not None:
        facts.append(("evaluation wall time", _seconds(sum(float(r.get("wall_s") or 0) for r in run.evaluation["results"]))))
    facts += [("report", f"built in {_seconds(build_seconds)} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"),
              ("galaxy_distill", f"version {__version__}, git revision {git_revision()}")]
    body = [table(None, [[key, value] for key, value in facts])]
    if report.notes:
        body.append(note("Missing pieces: " + "; ".join(report.notes) + "."))
    counts = dataset.meta.get("counts", {})
    if counts:
        splits = [s for s in ("train", "val", "test") if s in counts]
        body.append(table(["class", *splits], [[name, *(Cell(str(counts[s][k]), True) for s in splits)]
                                               for k, name in enumerate(report.class_names)], caption="images per class"))
    for title, values in (("Distillation settings", run.settings), ("Dataset preparation settings", dataset.meta.get("settings", {}))):
        body.append(f"<details><summary>{escape(title)}</summary>"
                    f"{table(['setting', 'value'], [[str(k), str(v)] for k, v in values.items()])}</details>")
    return Section("run", "Run", "".join(body))


def _summary(report: _Report) -> str:
    run, dataset = report.run, report.run.dataset
    _, height, width = dataset.image_shape
    last = run.metrics[-1] if run.metrics else None
    text = (f"{run.method.upper()} distilled {dataset.name} ({len(report.class_names)} classes, {height}×{width} px) into "
            f"{run.settings.get('ipc', '?')} image(s) per class"
            + (f" in {int(last['iteration'])} iterations" if last and last["iteration"] is not None else "") + ".")
    results = _sorted_results(run)
    if results:
        text += " Test accuracy of networks trained on each set: " + "; ".join(
            f"{_result_label(r, len({x.get('architecture') for x in results}) > 1)} {_percent(r['acc_mean'], r['acc_std'])}%"
            for r in results) + "."
    return escape(text)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace target by staging; the old report is moved aside first and deleted last."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=".report-old-"))
        target.rename(old / "report")
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report/index.html (self-contained) and its figures as PNG/GIF files; returns the HTML path."""
    started = time.perf_counter()
    run = load_run(Path(run_dir))
    staging = Path(tempfile.mkdtemp(dir=run.directory, prefix=".report-new-"))
    try:
        report = _Report(run=run, files=ReportFiles(staging), shown=run.dataset.to_display(run.images),
                         labels=run.labels.numpy(), expert=final_expert(run.store) if run.store is not None else None)
        if run.store is None:
            report.notes.append(f"expert store unavailable ({run.store_problem})")
        builders: list[Callable[[_Report], Section]] = [
            prototypes_section, evolution_section, schedule_section, curves_section, evaluation_section,
            neighbours_section, saliency_section, morphology_section]
        if run.dataset.meta.get("dataset") == "simzoo":
            builders.append(ground_truth_section)
        sections = [build(report) for build in builders]
        sections.insert(0, run_section(report, time.perf_counter() - started))
        page = render_page(f"galaxy_distill report: {run.directory.name}", f"What the network sees in {run.dataset.name}.",
                           _summary(report), sections)
        atomic_write_bytes(staging / "index.html", page.encode("utf-8"))
        follow_umask(staging)
        _swap_in(staging, RunDir(run.directory).report)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RunDir(run.directory).report / "index.html"

