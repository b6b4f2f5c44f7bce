"""bench/tables.py turns results files into the tables of docs/results.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TABLES = Path(__file__).resolve().parents[1] / "bench" / "tables.py"


def entry(method: str, ipc: int | None, architecture: str, mean: float, std: float) -> dict:
    return {"dataset": "toy", "resolution": 32, "ipc": ipc, "method": method, "architecture": architecture,
            "acc_mean": mean, "acc_std": std, "n_eval": 5, "selection": "validation", "wall_s": 1.0}


def write_record(path: Path, method: str, results: list[dict], best_on_test: float) -> Path:
    stage = {"iterations": 300, "best_on_test": best_on_test, "settings": {"eval_nets": 2}}
    path.write_text(json.dumps({"results": results, "stages": {f"distill-{method}-ipc1": stage}}))
    return path


def tables(*args: str) -> str:
    return subprocess.run([sys.executable, str(TABLES), *args], capture_output=True, text=True, check=True).stdout


def test_summary_puts_both_methods_baselines_and_full_data_in_one_row(tmp_path: Path) -> None:
    stm = write_record(tmp_path / "stm.json", "stm", [entry("stm", 1, "convnet", 0.5, 0.01), entry("random", 1, "convnet", 0.2, 0.02),
                                                      entry("stm", 1, "vgg11", 0.9, 0.0)], 0.55)
    mtt = write_record(tmp_path / "mtt.json", "mtt", [entry("mtt", 1, "convnet", 0.4, 0.03), entry("full", None, "convnet", 0.8, 0.01)], 0.45)
    rows = [line for line in tables("summary", str(stm), str(mtt)).splitlines() if line.startswith("| toy")]
    assert rows == ["| toy | 1 | 50.0 ± 1.0 | 40.0 ± 3.0 | 20.0 ± 2.0 | — | 80.0 ± 1.0 | 55.0 | 45.0 | 300 / 300 |"]
    cross = tables("crossarch", str(stm), str(mtt))
    assert "| toy | 1 | stm | 50.0 ± 1.0 | 90.0 ± 0.0 |" in cross
    assert "| toy | all | full | 80.0 ± 1.0 | — |" in cross


def test_inrun_reads_checkpoint_evaluations_and_reports_unfinished_runs(tmp_path: Path) -> None:
    run = tmp_path / "toy-stm-ipc1"
    run.mkdir()
    (run / "settings.json").write_text(json.dumps({"iterations": 300, "eval_nets": 2, "eval_epochs": 300}))
    (run / "metrics.csv").write_text("iteration,val_accuracy,test_accuracy\n100,0.5,0.45\n150,,\n200,0.6,0.52\n250,,\n")
    row = next(line for line in tables("inrun", str(run)).splitlines() if line.startswith("| toy"))
    assert row == "| toy-stm-ipc1 | 250 / 300 | 100, 200 | 60.0 (it. 200) | 52.0 | 52.0 | 2 x 300 |"
