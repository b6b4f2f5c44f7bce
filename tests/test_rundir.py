"""The run directory's file names live in rundir.py alone, and RunDir reads back what a run wrote."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from galaxy_distill.settings import Settings
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.rundir import RunDir, load_synthetic, run_directories

SOURCE = Path(__file__).resolve().parents[1] / "src" / "galaxy_distill"
RUN_FILE_NAMES = {"settings.json", "settings.yaml", "checkpoint.json", "checkpoint.prev.json", "metrics.csv",
                  "stages.json", "snapshots", "tensorboard", "synthetic.safetensors", "prototypes.png",
                  "evaluation.json"}


class _Settings(Settings):
    dataset: str


def test_no_module_but_rundir_joins_a_run_file_name() -> None:
    joins = []
    for path in SOURCE.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in RUN_FILE_NAMES):
                joins.append(f"{path.relative_to(SOURCE)}:{node.lineno} / {node.right.value!r}")
    assert not joins, "run-directory paths built outside rundir.py: " + ", ".join(joins)


def test_synthetic_set_round_trip_and_run_discovery(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "stm")
    run.start(_Settings, {"dataset": "toy"}, write=True)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 0, 1, 1])
    run.save_synthetic(images, labels, 0.02, ["a", "b"], "toy")
    loaded_images, loaded_labels, step_size, class_names = load_synthetic(run.path)
    assert torch.equal(loaded_images, images) and torch.equal(loaded_labels, labels)
    assert step_size == pytest.approx(0.02) and class_names == ["a", "b"]
    assert run_directories(tmp_path / "runs") == [run.path]
    assert run_directories(run.path) == [run.path]
    with pytest.raises(GalaxyDistillError, match="other settings"):
        run.start(_Settings, {"dataset": "other"}, write=False)
