"""bench/paper.py end to end on CPU, on a tiny real gz1-sdss set (16 px, 12 galaxies a class): every record lands in the
results file with the issue-26 schema, a rerun redoes nothing, a dropped record alone is redone, and a deadline stops
the distillations at their share with the iterations and curves recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from shared_paths import GZ1_ROOT

from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.registry import prepare

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "paper.py"
TINY = ["--dataset", "gz1-sdss", "--ipc", "1", "--experts", "2", "--width", "8", "--depth", "2", "--expert-batch", "8",
        "--syn-steps", "3", "--max-start-epoch", "2", "--val-nets", "1", "--val-epochs", "1", "--checkpoint-every", "2",
        "--networks", "2", "--epochs", "2", "--device", "cpu"]
SCHEMA = {"dataset", "ipc", "method", "selection", "acc_mean", "acc_std", "iterations", "experts", "expert_epochs", "seconds"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("paper") / "home"
    prepare(PrepareSettings(dataset="gz1-sdss", root=GZ1_ROOT, size=16, per_class=12), out_dir=home / "datasets" / "gz1-sdss")
    return home


def run_paper(home: Path, args: list[str]) -> str:
    # One thread each: on a small shared CPU, torch's thread pools spinning against each other cost several times more.
    env = {**os.environ, "GALAXY_DISTILL_HOME": str(home), "GALAXY_DISTILL_REVISION": "test-revision", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    finished = subprocess.run([sys.executable, str(SCRIPT), *TINY, *args], env=env, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-4000:]
    return finished.stderr


def keyed(results: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(entry["method"], entry["selection"], entry["architecture"]): entry for entry in results}


def test_a_block_records_every_row_and_a_rerun_redoes_only_what_is_missing(home: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "block.json", tmp_path / "work"
    args = ["--iterations", "6", "--eval-every", "3", "--full-epochs", "1", "--full-nets", "1", "--cross-arch",
            "--work", str(work), "--out", str(out)]
    run_paper(home, args)
    record = json.loads(out.read_text())
    assert {"command", "revision", "gpu", "torch", "results"} <= set(record)
    assert record["revision"] == "test-revision" and record["gpu"] is None and "bench/paper.py" in record["command"]
    rows = keyed(record["results"])
    expected = {(name, "final", "convnet") for name in ("random", "class-average", "full")}
    expected |= {(method, selection, "convnet") for method in ("stm", "mtt") for selection in ("validation", "final")}
    expected |= {(method, "validation", arch) for method in ("stm", "mtt") for arch in ("resnet18", "vgg11")}
    assert set(rows) == expected and len(record["results"]) == len(expected)
    for entry in record["results"]:
        assert SCHEMA <= set(entry), entry
        assert entry["dataset"] == "gz1-sdss" and entry["ipc"] == (None if entry["method"] == "full" else 1)
        assert 0 <= entry["acc_mean"] <= 100 and entry["acc_std"] >= 0 and entry["seconds"] >= 0
        assert all(0 <= value <= 100 for value in entry["accuracies"]) and len(entry["accuracies"]) == entry["n_eval"]
    for method in ("stm", "mtt"):
        entry = rows[(method, "validation", "convnet")]
        assert entry["iterations"] == 6 and entry["experts"] == 2 and entry["stopped"] == "iterations"
        # max start epoch 2 + M 1 + 1 (the galaxy preset's M is 1 for both methods)
        assert entry["expert_epochs"] == 4 and entry["match_epochs"] == 1
        assert [point["iteration"] for point in entry["curve"]] == [3, 6] and entry["loss_curve"]
        assert entry["learned_lr"] > 0 and entry["eval_lr"] == entry["learned_lr"]
    assert rows[("random", "final", "convnet")]["iterations"] is None

    # The same command again, after dropping one record (say, the process died before writing it): only that
    # record is made again, from the kept set; nothing is distilled again and every other row stays as it was.
    checkpoints = {path: path.stat().st_mtime_ns for path in (work / "runs").rglob("checkpoint*")}
    record["results"] = [entry for entry in record["results"] if (entry["method"], entry["selection"]) != ("mtt", "final")]
    out.write_text(json.dumps(record))
    log = run_paper(home, args)
    assert log.count("evaluating") == 1 and "evaluating mtt (final) on convnet" in log, log
    assert "distilling" not in log and log.count("distillation already recorded") == 2, log
    assert log.count("already recorded") == 2 + len(expected) - 1
    again = keyed(json.loads(out.read_text())["results"])
    assert set(again) == expected
    for key, entry in rows.items():  # the redone record from the same networks (the evaluation resumed them)
        assert {**again[key], "eval_seconds": None} == {**entry, "eval_seconds": None}, key
    assert {path: path.stat().st_mtime_ns for path in (work / "runs").rglob("checkpoint*")} == checkpoints


def test_a_deadline_stops_the_distillations_at_their_share_and_keeps_their_curves(home: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "deadline.json", tmp_path / "work"
    log = run_paper(home, ["--iterations", "100000", "--eval-every", "1", "--baselines", "--parallel",
                           "--deadline-minutes", "0.1", "--margin-s", "0", "--eval-estimate-s", "0.5",
                           "--work", str(work), "--out", str(out)])
    assert "at once" in log
    record = json.loads(out.read_text())
    for method in ("stm", "mtt"):
        status = record["distillations"][method]
        assert status["stopped"] == "deadline" and 0 < status["iterations"] < 100000, status
        # Given its share as --time-limit, the run stopped itself there and wrote both sets.
        assert "stopped at the time limit" in (work / "runs" / f"{method}.log").read_text()
        assert (work / "runs" / method / "final.safetensors").is_file()
        for selection in ("validation", "final"):
            entry = keyed(record["results"])[(method, selection, "convnet")]
            assert entry["iterations"] == status["iterations"] and entry["target_iterations"] == 100000
            assert entry["stopped"] == "deadline"
            assert entry["curve"] and all(point["iteration"] <= status["iterations"] for point in entry["curve"])
