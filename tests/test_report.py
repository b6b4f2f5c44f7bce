"""`galaxy-distill report`: a self-contained HTML page built from a real (tiny) distillation run."""

from __future__ import annotations

import base64
import io
import os
import shutil
import stat
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shared_paths import GZ1_ROOT
from torch import nn
from typer.testing import CliRunner

from galaxy_distill import cli
from galaxy_distill.data import PrepareSettings, prepare
from galaxy_distill.distill.run import distill
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.evaluate.selection import validation_evaluator
from galaxy_distill.evaluate.run import evaluate
from galaxy_distill.evaluate.settings import EvaluateSettings
from galaxy_distill.experts import ExpertSettings, ExpertStore, train_experts
from galaxy_distill.report import write_report
from galaxy_distill.report.explain import grad_cam, nearest, smooth_grad
from galaxy_distill.runtime import seeded_generator
from galaxy_distill.atomic_io import read_json, write_json

SECTIONS = {"run", "prototypes", "evolution", "schedule", "curves", "evaluation", "neighbours", "saliency", "morphology"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class ParsedReport(HTMLParser):
    """Section ids, embedded image sources, table cell texts and links of a report page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.sections.append(values["id"] or "")
        elif tag == "img":
            self.images.append(values["src"] or "")
        elif tag in ("a", "link"):
            self.links.append(values.get("href") or "")
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An evaluated STM run (with growth events) and an unevaluated MTT run, on 16 px SDSS galaxies."""
    root = tmp_path_factory.mktemp("report")
    dataset = prepare(PrepareSettings(dataset="gz1-sdss", root=GZ1_ROOT, size=16, per_class=12, name="tiny"),
                      out_dir=root / "tiny")
    expert_settings = ExpertSettings(dataset=str(dataset.directory), width=8, num_experts=2, epochs=3, batch_size=16,
                                     device="cpu")
    train_experts(expert_settings, dataset, root / "experts")
    store = ExpertStore(root / "experts")
    common = {"dataset": str(dataset.directory), "experts": root / "experts", "ipc": 2, "syn_steps": 3, "max_start_epoch": 2,
              "lr_img": 100.0, "snapshot_every": 2, "checkpoint_every": 3, "device": "cpu"}
    stm = DistillSettings(**common, method="stm", iterations=6, eval_every=3, eval_networks=1, eval_epochs=5, stm_check_every=3,
                          stm_lambda_decrease=0.01, stm_lambda_increase=0.01, stm_patience=4)
    distill(stm, dataset, store, root / "stm", evaluator=validation_evaluator(store.model_spec, dataset, stm))
    results = evaluate(EvaluateSettings(run=root / "stm", baselines=["random", "class_average"], networks=1, epochs=5,
                                        device="cpu"), dataset, store.model_spec.model_dump())
    write_json(root / "stm" / "evaluation.json", {"settings": {}, "results": results})
    distill(DistillSettings(**common, method="mtt", iterations=3), dataset, store, root / "mtt")
    return {"stm": root / "stm", "mtt": root / "mtt", "dataset": dataset.directory}


@pytest.fixture(scope="module")
def stm_report(tiny_runs: dict[str, Path]) -> Path:
    return write_report(tiny_runs["stm"])


def decoded(source: str) -> Image.Image:
    header, payload = source.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/gif;base64")
    image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
    image.load()
    return image


def test_report_has_every_section_with_embedded_figures(tiny_runs: dict[str, Path], stm_report: Path) -> None:
    path = stm_report
    assert path == tiny_runs["stm"] / "report" / "index.html"
    page = ParsedReport(path.read_text())
    assert SECTIONS <= set(page.sections)
    images = [decoded(source) for source in page.images]
    assert all(image.width > 50 and image.height > 50 for image in images)
    assert any(image.format == "GIF" and image.n_frames > 1 for image in images)
    written = sorted(p.name for p in path.parent.iterdir() if p.suffix in (".png", ".gif"))
    assert len(written) == len(images)
    assert {"prototypes.png", "prototypes_clipped.png", "evolution.gif", "schedule.png", "curves.png", "confusion.png",
            "per_class_accuracy.png", "radial_profiles.png", "galaxy_measures.png"} <= set(written)
    class_names = read_json(tiny_runs["dataset"] / "meta.json")["class_names"]
    assert {f"neighbours_{name}.png" for name in class_names} <= set(written)
    assert {f"saliency_{name}.png" for name in class_names} <= set(written)
    cells = set(page.cells)
    assert set(class_names) <= cells
    assert {"distilled (STM)", "random real", "class average", "grow"} <= cells
    assert all(link.startswith(("#", "data:")) for link in page.links), "the page must not reach outside itself"
    assert "http://" not in path.read_text() and "https://" not in path.read_text()


def test_report_degrades_without_evaluation_stages_snapshots_or_experts(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "mtt"
    shutil.copytree(tiny_runs["mtt"], run)
    shutil.rmtree(run / "snapshots")
    (run / "stages.json").unlink()
    settings = read_json(run / "settings.json")
    write_json(run / "settings.json", {**settings, "experts": str(tmp_path / "moved-away")})
    path = write_report(run)
    text = path.read_text()
    page = ParsedReport(text)
    assert SECTIONS <= set(page.sections)
    for expected in ("No evaluation.json", "MTT uses a fixed schedule", "no snapshots/ directory", "Expert store unavailable",
                     "pixel space only", "no saliency maps"):
        assert expected in text
    for source in page.images:
        decoded(source)


def test_cli_report_replaces_the_report_and_names_a_bad_directory(stm_report: Path, tmp_path: Path) -> None:
    run = stm_report.parent.parent
    stale = stm_report.parent / "left_from_before.png"
    stale.write_bytes(b"")
    result = CliRunner().invoke(cli.app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert f"wrote {stm_report}" in result.output
    assert stm_report.is_file() and not stale.exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".report")] == [], "staging directories are removed"
    result = CliRunner().invoke(cli.app, ["report", str(tmp_path)])
    assert isinstance(result.exception, GalaxyDistillError)
    assert str(tmp_path) in str(result.exception) and "settings.json" in str(result.exception)


def test_nearest_merges_chunks_like_one_search() -> None:
    generator = torch.Generator().manual_seed(0)
    queries, pool = torch.randn(4, 3, 5, 5, generator=generator), torch.randn(50, 3, 5, 5, generator=generator)
    indices, distances = nearest(queries, pool.split(7), k=6)
    expected = torch.cdist(queries.flatten(1).double(), pool.flatten(1).double())
    np.testing.assert_array_equal(indices, expected.argsort(dim=1)[:, :6].numpy())
    np.testing.assert_allclose(distances, expected.sort(dim=1).values[:, :6].numpy(), rtol=1e-12)


class BrightnessDetector(nn.Module):
    """Class 0's logit is the mean of a ReLU map equal to the image: its evidence is where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, kernel_size=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(1, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0)
            self.classifier.weight.copy_(torch.tensor([[1.0], [-1.0]]))
            self.classifier.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def test_grad_cam_lights_up_the_evidence_and_smooth_grad_follows_the_weights() -> None:
    images = torch.zeros(1, 1, 8, 8)
    images[0, 0, 1:3, 5:7] = 1.0
    model = BrightnessDetector()
    probability, cam = grad_cam(model, images, torch.tensor([0]))
    assert probability[0] > 0.5
    assert cam[0, 1:3, 5:7].min() == pytest.approx(1.0) and cam[0, 5:, :3].max() == pytest.approx(0.0)

    linear = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 1, bias=False))
    with torch.no_grad():
        linear[1].weight.zero_()
        linear[1].weight.view(2, 4, 4)[1, 2:, 3] = -3.0
        linear[1].weight.view(2, 4, 4)[0, 0, 0] = 1.5
    saliency = smooth_grad(linear, torch.randn(2, 2, 4, 4), torch.tensor([0, 0]), lambda x: x, seeded_generator(0))
    assert saliency.shape == (2, 4, 4)
    np.testing.assert_allclose(saliency[:, 2:, 3], 1.0, rtol=1e-6)
    np.testing.assert_allclose(saliency[:, 0, 0], 0.5, rtol=1e-6)
    np.testing.assert_allclose(saliency.sum(axis=(1, 2)), 2.5, rtol=1e-6)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium_without_console_errors(stm_report: Path, tmp_path: Path) -> None:
    screenshot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        finished = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}", "--window-size=1400,3000",
             stm_report.as_uri()], check=False, capture_output=True, text=True, timeout=120)
    log = finished.stdout + finished.stderr
    assert finished.returncode == 0 and screenshot.is_file(), log
    assert "Uncaught" not in log and "ERROR:CONSOLE" not in log
    with Image.open(screenshot) as shot:
        assert shot.size == (1400, 3000)
        pixels = np.asarray(shot.convert("L"))
    assert pixels.std() > 20, "the screenshot shows a rendered page, not a blank one"


def test_cli_report_on_a_directory_of_runs_reports_each_with_the_users_permissions(tiny_runs: dict[str, Path]) -> None:
    parent = tiny_runs["stm"].parent
    result = CliRunner().invoke(cli.app, ["report", str(parent)])
    assert result.exit_code == 0, result.output
    for name in ("stm", "mtt"):
        report = parent / name / "report"
        assert f"wrote {report / 'index.html'}" in result.output
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(report.stat().st_mode) == 0o777 & ~umask, "the report directory follows the umask, not 0700"
