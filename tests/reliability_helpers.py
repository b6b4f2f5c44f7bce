"""Shared by the reliability tests: a tiny real workspace, ways to run the CLI, and a record of what was tried.

When GALAXY_DISTILL_RELIABILITY_LOG names a file, every case appends one JSON line to it;
bench/reliability_table.py runs the tests that way and turns the lines into the tables behind docs/guide.md's "When something goes wrong".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from shared_paths import GZ1_ROOT

from galaxy_distill import cli
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.registry import prepare
from galaxy_distill.experts import ExpertSettings, train_experts

LOG_ENV = "GALAXY_DISTILL_RELIABILITY_LOG"
COMMAND = Path(sys.executable).with_name("galaxy-distill")
DATASET = "gz1-sdss"
PREPARE_ARGS = ["--root", str(GZ1_ROOT), "--size", "16", "--per-class", "12"]
EXPERT_ARGS = ["--width", "8", "--depth", "2", "--epochs", "3", "--batch-size", "16", "--device", "cpu"]


def record(section: str, case: str, outcome: str, **details: Any) -> None:
    """Append what one reliability case did to the log, if one is being kept."""
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"section": section, "case": case, "outcome": outcome, **details}) + "\n")


@dataclass
class TinyWorkspace:
    """A prepared tiny gz1-sdss (16 px, 12 per class) and a 2-expert store, built once and copied per test."""

    home: Path
    experts: Path


def build_tiny_workspace(root: Path) -> TinyWorkspace:
    home = root / "home"
    settings = PrepareSettings(dataset=DATASET, root=GZ1_ROOT, size=16, per_class=12)
    dataset = prepare(settings, out_dir=home / "datasets" / DATASET)
    experts = home / "experts" / DATASET
    train_experts(ExpertSettings(dataset=DATASET, width=8, depth=2, epochs=3, batch_size=16, num_experts=2, parallel=2,
                                 device="cpu"), dataset, experts)
    return TinyWorkspace(home, experts)


def copy_workspace(source: TinyWorkspace, target: Path, monkeypatch: pytest.MonkeyPatch) -> TinyWorkspace:
    """A private copy of the tiny workspace at `target`, made the current GALAXY_DISTILL_HOME."""
    shutil.copytree(source.home, target)
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(target))
    monkeypatch.delenv("GALAXY_DISTILL_DATA", raising=False)
    return TinyWorkspace(target, target / source.experts.relative_to(source.home))


def cli_environment(home: Path) -> dict[str, str]:
    """The command's environment: this workspace, no data override, and one thread, since tiny convolutions
    gain nothing from a second one and lose a lot on a busy machine (every run of a comparison uses the same)."""
    environment = {key: value for key, value in os.environ.items() if key != "GALAXY_DISTILL_DATA"}
    return {**environment, "GALAXY_DISTILL_HOME": str(home), "OMP_NUM_THREADS": "1"}


def run_installed(args: list[str], home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The installed `galaxy-distill` command, to completion."""
    return subprocess.run([str(COMMAND), *args], capture_output=True, text=True, env=cli_environment(home),
                          timeout=timeout, check=False)


@dataclass
class MainResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> MainResult:
    """`galaxy-distill ARGS` in this process, through cli.main() and its error handling.

    Python warnings count as stderr lines, as the command would print them (pytest would hide them):
    all but deprecations, and Pillow's decompression-bomb warning, which data/images.py silences
    because its own lower limit raises an error first.
    """
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["galaxy-distill", *args])
    exit_code = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cli.main()
        except SystemExit as stop:
            exit_code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    quiet = (DeprecationWarning, PendingDeprecationWarning, Image.DecompressionBombWarning)
    shown = "".join(f"{warning.category.__name__}: {warning.message}\n" for warning in caught
                    if not issubclass(warning.category, quiet))
    return MainResult(exit_code, captured.out, shown + captured.err)
