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
    stage = {"iterations": 300, "best_on_test": best_on_test, "settings": {"eval_networks": 2}}
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
    (run / "metrics.csv").write_text("iteration,loss,start_epoch,val_accuracy,test_accuracy\n"
                                     "100,0.9,0,0.5,0.45\n150,0.7,1,,\n200,0.6,0,0.6,0.52\n250,0.5,2,,\n")
    row = next(line for line in tables("inrun", str(run)).splitlines() if line.startswith("| toy"))
    # Fewer rows than the 50-iteration loss window: both means cover all four iterations.
    assert row == "| toy-stm-ipc1 | 250 / 300 | 100, 200 | 60.0 (it. 200) | 52.0 | 52.0 | 2 x 300 | 0.675 / 0.675 | 0-2 |"


def test_runs_gives_each_convnet_result_its_wall_times_and_hardware(tmp_path: Path) -> None:
    results = [{**entry("stm", 1, "convnet", 0.5, 0.01), "distill_wall_s": 120.4, "device": "cpu"},
               {**entry("random", 1, "convnet", 0.2, 0.02), "device": "cpu"}, {**entry("stm", 1, "vgg11", 0.9, 0.0)}]
    record = tmp_path / "stm.json"
    record.write_text(json.dumps({"results": results, "gpu": None, "git_revision": "0123456789",
                                  "distilled_with": {"gpu": "NVIDIA H200"}}))
    rows = [line for line in tables("runs", str(record)).splitlines() if "| toy |" in line]
    assert rows == [f"| {tmp_path.name}/stm.json | toy | 1 | stm | 120 | 1 (5) | CPU | NVIDIA H200 | 0123456 |",
                    f"| {tmp_path.name}/stm.json | toy | 1 | random | — | 1 (5) | CPU | — | 0123456 |"]


def test_a_missing_file_or_kind_is_a_one_line_error(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, str(TABLES), "summary", str(tmp_path / "nope.json")], capture_output=True, text=True)
    assert missing.returncode != 0 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
    unknown = subprocess.run([sys.executable, str(TABLES), "bogus", "x"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "usage" in unknown.stderr and "Traceback" not in unknown.stderr


def test_experts_projects_an_unfinished_speed_record_from_the_experts_done_and_the_group_times(tmp_path: Path) -> None:
    settings = {"num_experts": 100, "epochs": 50, "batch_size": 256, "parallel": 10, "precision": "fp32", "compile": True}
    speed = tmp_path / "experts_speed.json"
    speed.write_text(json.dumps({"dataset": "toy", "gpu": "G", "settings": settings, "finished": False, "experts_done": 10,
                                 "wall_s": 300.0, "group_seconds": {"0": 300.0},
                                 "final_test_acc_mean": 0.8, "final_test_acc_std": 0.01}))
    row = [line for line in tables("experts", str(speed)).splitlines() if line.startswith("| toy")]
    # 300 s for 10 experts x 50 epochs: 0.6 s an expert-epoch, 50 min for 100 x 50; one group: no group projection.
    assert row == ["| toy | 10 (of 100: unfinished) x 50 | 256 | 10 | fp32, compiled | 300.0 | 0.600 | 50.0 | — | 80.0 ± 1.0 | 1 | G |"]
    speed.write_text(json.dumps({"dataset": "toy", "gpu": "G", "settings": {**settings, "test_every": 10}, "finished": False,
                                 "experts_done": 30,
                                 "wall_s": 360.0, "group_seconds": {"0": 150.0, "2": 110.0, "1": 100.0},
                                 "final_test_acc_mean": 0.8, "final_test_acc_std": 0.01}))
    row = [line for line in tables("experts", str(speed)).splitlines() if line.startswith("| toy")]
    # 360 s / 1500 expert-epochs: 20.0 min; the first group once, then 9 x the later groups' 105 s: 18.25 min.
    assert row == ["| toy | 30 (of 100: unfinished) x 50 | 256 | 10 | fp32, compiled | 360.0 | 0.240 | 20.0 | 18.2 | 80.0 ± 1.0 | 10 | G |"]


def test_profile_lists_the_ways_fastest_first(tmp_path: Path) -> None:
    def row(precision: str, step_ms: float) -> dict:
        return {"experts": 10, "precision": precision, "compile": False, "step_ms": step_ms, "augment_ms": 0.5,
                "draw_ms_per_step": 0.5, "ms_per_expert_step": (step_ms + 1) / 10, "projected_min_100x50": 1.0,
                "peak_mem_gib": 2.0}
    profile = tmp_path / "experts_profile.json"
    graphed = [{**row("bf16-full", step_ms), "compile": True, "whole_step_graph": True, "network_streams": streams}
               for step_ms, streams in ((8.0, True), (9.0, False))]
    profile.write_text(json.dumps({"gpu": "G", "torch": "t", "git_revision": "abcdef123",
                                   "rows": [row("fp32", 39.0), row("bf16-full", 29.0), *graphed]}))
    rows = [line for line in tables("profile", str(profile)).splitlines() if line.startswith("| 10")]
    assert rows == ["| 10 | bf16-full | yes + step graph, streams | 8.0 | 1.00 | 0.900 | 1.0 | 2.00 |",
                    "| 10 | bf16-full | yes + step graph | 9.0 | 1.00 | 1.000 | 1.0 | 2.00 |",
                    "| 10 | bf16-full | no | 29.0 | 1.00 | 3.000 | 1.0 | 2.00 |",
                    "| 10 | fp32 | no | 39.0 | 1.00 | 4.000 | 1.0 | 2.00 |"]


def test_kernels_compares_the_largest_kernels_with_the_step(tmp_path: Path) -> None:
    kernels = [{"name": "conv|wgrad", "ms_per_step": 3.0, "calls_per_step": 10}, {"name": "norm", "ms_per_step": 1.0, "calls_per_step": 10}]
    rows = [{"experts": 10, "precision": "fp32", "compile": True, "step_ms": 8.0, "top_kernels": kernels},
            {"experts": 10, "precision": "fp32", "compile": False, "step_ms": 9.0}]
    record = tmp_path / "profile.json"
    record.write_text(json.dumps({"gpu": "GPU", "torch": "2", "git_revision": "abcdef0123", "rows": rows}))
    lines = [line for line in tables("kernels", str(record)).splitlines() if line.startswith("| 10")]
    assert lines == ["| 10 | fp32 | yes | 8.0 | — | — | 2 | 4.0 | 0.50 | conv/wgrad (3.00); norm (1.00) |"]


def test_kernels_reads_a_distill_speed_record_too(tmp_path: Path) -> None:
    configs = [{"name": "cifar10_ipc1", "s_per_iter": 0.1, "precision": "fp32", "compiled": True, "cuda_graphs": True,
                "top_kernels": [{"name": "grid_sample", "ms_per_step": 20.0, "calls_per_step": 30}], "device_ms_per_step": 60.0},
               {"name": "cifar10_ipc10", "s_per_iter": None, "note": "out of memory"}]
    record = tmp_path / "distill_speed.json"
    record.write_text(json.dumps({"gpu": "GPU", "torch": "2", "git_revision": "abcdef0123", "configs": configs}))
    lines = [line for line in tables("kernels", str(record)).splitlines() if line.startswith("| cifar")]
    assert lines == ["| cifar10_ipc1 | fp32, compiled | yes | 100.0 | 60.0 | 0.60 | 1 | 20.0 | 0.20 | grid_sample (20.00) |"]


def test_speed_puts_each_configs_rows_from_several_runs_together(tmp_path: Path) -> None:
    def record(path: Path, revision: str, compiled: bool, names: list[str]) -> Path:
        configs = [{"name": name, "s_per_iter": 0.5 if compiled else 1.0, "reference_s_per_iter": 1.0, "speedup": 2.0 if compiled else 1.0,
                    "peak_mem_gib": 1.0, "reference_peak_mem_gib": 4.0, "memory_ratio": 0.25, "compiled": compiled} for name in names]
        path.write_text(json.dumps({"gpu": "GPU", "torch": "2", "git_revision": revision, "configs": configs}))
        return path

    plain = record(tmp_path / "plain.json", "aaaaaaa1", False, ["c1", "c2"])
    compiled = record(tmp_path / "compiled.json", "bbbbbbb2", True, ["c2"])
    lines = [line for line in tables("speed", str(plain), str(compiled)).splitlines() if line.startswith(("| c1", "| c2"))]
    assert lines == ["| c1 | 1.000 | 1.000 | 1.00x | 1.00 | 4.0 | 0.250 | — | fp32 | aaaaaaa |",
                     "| c2 | 1.000 | 1.000 | 1.00x | 1.00 | 4.0 | 0.250 | — | fp32 | aaaaaaa |",
                     "| c2 | 0.500 | 1.000 | 2.00x | 1.00 | 4.0 | 0.250 | — | fp32, compiled | bbbbbbb |"]


def test_best_picks_each_configs_fastest_row_and_checks_the_targets(tmp_path: Path) -> None:
    def row(name: str, ipc: int, seconds: float | None, memory: float, precision: str) -> dict:
        return {"name": name, "ipc": ipc, "s_per_iter": seconds, "reference_s_per_iter": 1.0, "memory_ratio": memory,
                "speedup": None if seconds is None else 1.0 / seconds, "precision": precision, "compiled": True}

    first = tmp_path / "first.json"
    first.write_text(json.dumps({"git_revision": "aaaaaaa1", "configs": [
        row("c1", 1, 0.1, 0.5, "fp32"), row("c10", 10, 0.25, 0.2, "fp32"),
        {**row("c50", 50, None, 0.1, "fp32"), "note": "out of memory"}]}))
    second = tmp_path / "second.json"
    second.write_text(json.dumps({"git_revision": "bbbbbbb2", "configs": [
        row("c1", 1, 0.3, 0.5, "bf16"), row("c10", 10, 0.125, 0.3, "bf16")]}))
    lines = [line for line in tables("best", str(first), str(second)).splitlines() if line.startswith(("| c1 ", "| c10 ", "| c50 "))]
    assert lines == ["| c1 | fp32, compiled | — | 0.100 | 1.000 | 10.00x | met | 0.500 | — | `first.json` | aaaaaaa |",
                     "| c10 | bf16, compiled | — | 0.125 | 1.000 | 8.00x | met | 0.300 | missed | "
                     "`second.json` | bbbbbbb |",
                     "| c50 | not timed (out of memory) | — | — | 1.000 | — | — | — | — | — | — |"]


def test_flops_gives_the_achieved_and_the_needed_arithmetic_rate(tmp_path: Path) -> None:
    counts = tmp_path / "distill_flops.json"
    counts.write_text(json.dumps({"kind": "distill_flops", "configs": [
        {"name": "c1", "ours_gflop_per_iteration": 2000.0, "unrolled_gflop_per_iteration": 1500.0}]}))
    speed = tmp_path / "distill_speed.json"
    speed.write_text(json.dumps({"git_revision": "abcdef0123", "configs": [
        {"name": "c1", "s_per_iter": 0.2, "reference_s_per_iter": 0.5, "compiled": True},
        {"name": "c2", "s_per_iter": 0.1, "reference_s_per_iter": 0.5}]}))
    lines = [line for line in tables("flops", str(counts), str(speed)).splitlines() if line.startswith(("| c1", "| c2"))]
    # 2000 GFLOP in 0.2 s; 5x the reference's 0.5 s needs 2000 GFLOP in 0.1 s; MTT's 1500 GFLOP in 0.5 s.
    assert lines == ["| c1 | fp32, compiled | — | 2000 | 0.200 | 10.0 | 20.0 | 2.00x | 1500 | 0.500 | 3.0 | abcdef0 |"]
    missing = subprocess.run([sys.executable, str(TABLES), "flops", str(speed)], capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and "distill_flops" in missing.stderr and "Traceback" not in missing.stderr


def test_best_figure_draws_each_configs_fastest_row(tmp_path: Path) -> None:
    plots = TABLES.with_name("plots.py")
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"git_revision": "abcdef0123", "configs": [
        {"name": "c10", "ipc": 10, "s_per_iter": 0.2, "reference_s_per_iter": 1.0, "speedup": 5.0, "memory_ratio": 0.1,
         "precision": "bf16", "compiled": True, "run": {"gpu": "NVIDIA H200"}},
        {"name": "big", "ipc": 50, "s_per_iter": 2.0, "reference_s_per_iter": None, "precision": "bf16"},
        {"name": "oom", "ipc": 50, "s_per_iter": None, "note": "out of memory"}]}))
    out = tmp_path / "best.png"
    done = subprocess.run([sys.executable, str(plots), "best", str(out), str(speed)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.png", "speed.json"]
    missing = subprocess.run([sys.executable, str(plots), "best", str(out), str(tmp_path / "absent.json")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "no such file" in missing.stderr and "absent.json" in missing.stderr


def test_convolutions_lists_each_configs_convolutions_by_shape(tmp_path: Path) -> None:
    record = tmp_path / "distill_convolutions.json"
    record.write_text(json.dumps({"git_revision": "abcdef0123", "gpu": "G", "torch": "T", "configs": [
        {"name": "c10", "s_per_iter": 0.1, "precision": "bf16", "compiled": True, "cuda_graphs": False,
         "convolution_shapes": [
             {"op": "aten::convolution", "shapes": [[100, 8, 32, 32], [128, 8, 3, 3], [128], []], "ms_per_step": 5.0,
              "calls_per_step": 60.0},
             {"op": "aten::convolution_backward", "shapes": [[100, 128, 32, 32], [100, 8, 32, 32], [128, 8, 3, 3]],
              "ms_per_step": 2.5, "calls_per_step": 30.0}]}]}))
    rows = [line for line in tables("convolutions", str(record)).splitlines() if line.startswith("| c10")]
    assert rows == ["| c10 | bf16, compiled | no | 100.0 | convolution | 100x8x32x32, 128x8x3x3 | 60 | 5.00 | 0.05 |",
                    "| c10 | bf16, compiled | no | 100.0 | convolution_backward | 100x128x32x32, 100x8x32x32, 128x8x3x3 | "
                    "30 | 2.50 | 0.03 |"]


def test_faithful_puts_the_reference_loop_beside_ours_per_ipc(tmp_path: Path) -> None:
    def result(method: str, mean: float, lr: float | None) -> dict:
        return {"dataset": "toy", "ipc": 1, "method": method, "acc_mean": mean, "acc_std": 0.5, "learned_lr": lr}

    record = tmp_path / "faithful.json"
    record.write_text(json.dumps({"gpu": "G", "torch": "t", "revision": "0123456789abcdef", "results": [
        result("mtt-reference", 44.34, 0.01046), result("mtt", 44.2, 0.0105), result("stm", 42.7, 0.00944),
        result("random", 16.3, None)]}))
    lines = [line for line in tables("faithful", str(record)).splitlines() if line.startswith("| 1 ")]
    assert lines == ["| 1 | 44.3 ± 0.5 | 44.2 ± 0.5 | 42.7 ± 0.5 | 16.3 ± 0.5 | 0.0105 / 0.0105 / 0.0094 |"]


def test_docs_leaves_out_the_file_and_revision_columns_and_the_captions_revision(tmp_path: Path) -> None:
    configs = [{"name": "c1", "ipc": 1, "s_per_iter": 0.5, "reference_s_per_iter": 1.0, "speedup": 2.0, "memory_ratio": 0.3}]
    record = tmp_path / "speed.json"
    record.write_text(json.dumps({"gpu": "G", "torch": "t", "git_revision": "abcdef0123456", "configs": configs}))
    full = tables("best", str(record))
    assert "abcdef0" in full and "| file | revision |" in full
    docs = tables("--docs", "best", str(record))
    assert "abcdef0" not in docs and "revision" not in docs and "speed.json`" in docs
    assert "| c1 | fp32 | — | 0.500 | 1.000 | 2.00x | missed | 0.300 | — |" in docs.splitlines()
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"gpu": "G", "torch": "t", "git_revision": "abcdef0123456", "rows": []}))
    assert tables("--docs", "profile", str(profile)).splitlines()[0] == "`profile.json` — G, torch t"


def test_the_tables_the_documents_quote_are_printed_from_the_committed_files() -> None:
    """Every `python bench/tables.py ...` command quoted in README.md and docs/*.md runs, and the table under it in the
    document is the one it prints."""
    import glob
    import re
    import shlex

    root = TABLES.parents[1]
    quoted = 0
    for document in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = document.read_text()
        for match in re.finditer(r"`python bench/tables\.py ([^`]+)`\n\n((?:\|.*\n)+)", text):
            arguments = [path for argument in shlex.split(match.group(1))
                         for path in (sorted(glob.glob(str(root / argument))) or [argument])]
            printed = subprocess.run([sys.executable, str(TABLES), *arguments], capture_output=True, text=True, check=True,
                                     cwd=root).stdout
            table = [line for line in printed.splitlines() if line.startswith("|")]
            quoted_rows = match.group(2).rstrip("\n").splitlines()
            assert quoted_rows == table or set(quoted_rows[2:]) <= set(table[2:]), (document.name, match.group(1))
            quoted += 1
    assert quoted >= 3
