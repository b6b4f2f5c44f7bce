"""kill -9 at random moments during `experts`, `distill` and `evaluate`, then resume: the result is bit-identical
to an uninterrupted run, and no output file is ever half-written.

Each command runs as the installed `galaxy-distill` in a subprocess. Every attempt waits until the
command has saved a random number (1 or 2) of further units of work (experts, checkpoints,
evaluated networks), sleeps a random moment shorter than a unit and sends SIGKILL, so kills land
anywhere in the work, writes included; after each kill every visible output must parse completely
and the command's resume state must load. A final run finishes the job and is compared with a
reference run that was never interrupted. Kill points come from a seeded generator.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image
from reliability_helpers import COMMAND, DATASET, cli_environment, record, run_installed
from safetensors.torch import load_file
from shared_paths import GZ1_ROOT

from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.registry import prepare
from galaxy_distill.distill.checkpoint import load_checkpoint
from galaxy_distill.errors import GalaxyDistillError
from galaxy_distill.experts import ExpertStore
from galaxy_distill.rundir import RunDir
from galaxy_distill.atomic_io import read_json

KILLS_PER_COMMAND = 3
KILL_DELAYS = random.Random(20261128)
EXPERTS = ["experts", "--dataset", DATASET, "--width", "8", "--depth", "2", "--epochs", "3", "--batch-size", "8",
           "--num-experts", "10", "--parallel", "1", "--device", "cpu"]
UNITS = {"experts": 10, "distill": 10, "evaluate": 10}
DISTILL = ["distill", "--dataset", DATASET, "--method", "mtt", "--iterations", "20", "--syn-steps", "3", "--max-start-epoch", "2",
           "--lr-img", "100", "--eval-every", "10", "--eval-networks", "1", "--eval-epochs", "4", "--checkpoint-every", "2",
           "--device", "cpu"]
EVALUATE = ["evaluate", "--baselines", "random", "--networks", "5", "--epochs", "6", "--device", "cpu"]


@dataclass
class Pipeline:
    """Reference (never interrupted) outputs of the three commands in one workspace."""

    home: Path
    experts: Path
    run: Path
    evaluation: Path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    home = tmp_path_factory.mktemp("reference") / "home"
    prepare(PrepareSettings(dataset=DATASET, root=GZ1_ROOT, size=16, per_class=12), out_dir=home / "datasets" / DATASET)
    pipeline = Pipeline(home, home / "experts", home / "run", home / "run" / "evaluation.json")
    for args in (EXPERTS + ["--out", str(pipeline.experts)], DISTILL + ["--experts", str(pipeline.experts), "--out", str(pipeline.run)],
                 EVALUATE + ["--run", str(pipeline.run)]):
        finished = run_installed(args, home)
        assert finished.returncode == 0, finished.stderr
    return pipeline


def assert_every_output_whole(directory: Path) -> int:
    """Every visible file under `directory` parses completely; returns how many hidden temporaries a kill left."""
    leftovers = 0
    for path in sorted(directory.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(directory).parts)
        if hidden:
            leftovers += path.is_file()
            continue
        if path.is_dir():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".csv":
            text = path.read_text()
            rows = list(csv.reader(text.splitlines()))
            assert text.endswith("\n") and all(len(row) == len(rows[0]) for row in rows), path
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
    return leftovers


def kill_repeatedly(command: str, args: list[str], home: Path, progress: Callable[[], int], check: Callable[[], None],
                    out: Path) -> list[dict]:
    """KILLS_PER_COMMAND times: start, wait for 1-2 more saved units of work, sleep a random fraction of a unit,
    SIGKILL, check the outputs; then finish the job."""
    kills = []
    for attempt in range(1, KILLS_PER_COMMAND + 1):
        wanted = progress() + KILL_DELAYS.randint(1, 2)
        delay = KILL_DELAYS.uniform(0.0, 0.15)
        process = subprocess.Popen([str(COMMAND), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env=cli_environment(home))
        deadline = time.monotonic() + 180
        while progress() < wanted and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        running = process.poll() is None
        if running:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.stderr is not None
        stderr = process.stderr.read().decode()
        process.stderr.close()
        assert "Traceback" not in stderr, stderr
        leftovers = assert_every_output_whole(out)
        check()
        kills.append({"attempt": attempt, "killed_while_running": running, "progress_after": progress()})
        record("crash safety", f"{command}: kill -9 #{attempt}", "outputs whole, resume state loads",
               units_done=f"{progress()}/{UNITS[command]}", delay_after_unit_s=round(delay, 3), killed=running,
               temporaries_left=leftovers)
    assert sum(kill["killed_while_running"] for kill in kills) >= 2, kills
    finished = run_installed(args, home)
    assert finished.returncode == 0, finished.stderr
    assert assert_every_output_whole(out) == 0, "a resumed run leaves no temporaries behind"
    return kills


def private_home(reference: Pipeline, target: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace of its own holding the prepared dataset."""
    shutil.copytree(reference.home / "datasets", target / "datasets")
    monkeypatch.setenv("GALAXY_DISTILL_HOME", str(target))
    return target


def test_experts_killed_and_resumed_equal_an_uninterrupted_store(reference: Pipeline, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    home = private_home(reference, tmp_path / "home", monkeypatch)
    out = tmp_path / "experts"
    manifest = out / "experts.json"

    def finished_experts() -> int:
        return len(read_json(manifest)["experts"]) if manifest.is_file() else 0

    def store_opens() -> None:
        if manifest.is_file():
            ExpertStore(out)

    kills = kill_repeatedly("experts", EXPERTS + ["--out", str(out)], home, finished_experts, store_opens, out)
    expected = read_json(reference.experts / "experts.json")
    resumed = read_json(manifest)
    for mine, theirs in zip(resumed["experts"], expected["experts"], strict=True):
        assert (out / mine["file"]).read_bytes() == (reference.experts / theirs["file"]).read_bytes()
        assert {k: v for k, v in mine.items() if k != "group_seconds"} == {k: v for k, v in theirs.items() if k != "group_seconds"}
    record("crash safety", "experts: resumed after kills", "10 expert files bit-identical to the uninterrupted run",
           kills=len(kills), killed_while_running=sum(k["killed_while_running"] for k in kills))


def checkpoint_iteration(run: Path) -> int:
    """The newest checkpointed iteration, read while the run may be rotating checkpoint.json into checkpoint.prev.json."""
    found = []
    for name in ("checkpoint.json", "checkpoint.prev.json"):
        try:
            found.append(read_json(run / name)["iteration"])
        except GalaxyDistillError:  # not written yet, or renamed away between two looks
            continue
    return max(found, default=0)


def assert_same_distillation(run: Path, expected: Path) -> None:
    assert (run / "synthetic.safetensors").read_bytes() == (expected / "synthetic.safetensors").read_bytes()
    assert read_json(run / "stages.json") == read_json(expected / "stages.json")

    def rows(directory: Path) -> list[dict[str, str]]:
        with open(directory / "metrics.csv", newline="") as handle:
            return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(handle)]

    assert rows(run) == rows(expected)
    mine, theirs = load_checkpoint(RunDir(run)), load_checkpoint(RunDir(expected))
    assert mine is not None and theirs is not None and mine[0].keys() == theirs[0].keys()
    assert all(mine[0][key].equal(theirs[0][key]) for key in theirs[0])


def test_distill_killed_and_resumed_equals_an_uninterrupted_run(reference: Pipeline, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = private_home(reference, tmp_path / "home", monkeypatch)
    run = tmp_path / "run"

    def resume_state_loads() -> None:
        load_checkpoint(RunDir(run))

    args = DISTILL + ["--experts", str(reference.experts), "--out", str(run), "--resume"]
    kills = kill_repeatedly("distill", args, home, lambda: checkpoint_iteration(run) // 2, resume_state_loads, run)
    assert_same_distillation(run, reference.run)
    record("crash safety", "distill: resumed after kills", "synthetic set, metrics, stages and checkpoint bit-identical",
           kills=len(kills), killed_while_running=sum(k["killed_while_running"] for k in kills))


def test_distill_falls_back_to_the_previous_checkpoint_when_the_last_is_corrupt(reference: Pipeline, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    home = private_home(reference, tmp_path / "home", monkeypatch)
    run = tmp_path / "run"
    shutil.copytree(reference.run, run)
    newest = run / read_json(run / "checkpoint.json")["tensors_file"]
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = run_installed(DISTILL + ["--experts", str(reference.experts), "--out", str(run), "--resume"], home)
    assert resumed.returncode == 0, resumed.stderr
    # Off a terminal a run longer than a few seconds also logs progress lines ("distill (mtt):  95%|...").
    warnings = [line for line in resumed.stderr.splitlines() if line.strip() and not re.search(r": +\d+%\|", line)]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipping damaged checkpoint: ")
    assert "checksum mismatch" in warnings[0]
    assert_same_distillation(run, reference.run)
    record("crash safety", "distill: newest checkpoint truncated", "detected by checksum, resumed from checkpoint.prev; "
           "result bit-identical", warning=warnings[0].split(": ", 1)[1][:60])


def test_evaluate_killed_and_resumed_equals_an_uninterrupted_evaluation(reference: Pipeline, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    home = private_home(reference, tmp_path / "home", monkeypatch)
    run = tmp_path / "run"
    shutil.copytree(reference.run, run, ignore=shutil.ignore_patterns("evaluation*"))
    partial = run / "evaluation.partial.json"

    def finished_networks() -> int:
        return len(read_json(partial)["networks"]) if partial.is_file() else 0

    kills = kill_repeatedly("evaluate", EVALUATE + ["--run", str(run), "--resume"], home, finished_networks, finished_networks, run)

    def results(path: Path) -> list[dict]:
        return [{key: value for key, value in entry.items() if key != "wall_s"} for entry in read_json(path)["results"]]

    assert results(run / "evaluation.json") == results(reference.evaluation)
    record("crash safety", "evaluate: resumed after kills", "10 network accuracies and confusion matrices identical",
           kills=len(kills), killed_while_running=sum(k["killed_while_running"] for k in kills))
