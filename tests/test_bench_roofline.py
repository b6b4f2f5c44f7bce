"""bench/roofline.py on the CPU: the byte counter on operators of known size, the peak table, the rates and fractions
of a row, and the script end to end on the smallest reference config at test size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from roofline import ByteCounter, markdown_table, measured_ceilings, merged, peak_for, roofline_row  # noqa: E402


def test_a_matmul_moves_its_operands_and_result_and_does_2mnk_flops() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 16)
    with FlopCounterMode(display=False) as flops, ByteCounter() as moved:
        torch.mm(a, b)
    assert flops.get_total_flops() == 2 * 4 * 8 * 16
    assert moved.bytes == {"matmul_conv": 4 * (4 * 8 + 8 * 16 + 4 * 16), "other": 0}
    assert moved.ops == {"matmul_conv": 1, "other": 0} and moved.total == 896


def test_views_move_nothing_and_elementwise_ops_count_as_the_rest() -> None:
    x = torch.randn(6, 10, dtype=torch.bfloat16)
    with ByteCounter() as moved:
        y = x.t().reshape(60)  # t(): a view; reshaping the transposed tensor copies it (clone), then re-labels it
        z = x + 1.0
        x.mul_(2.0)
    assert y.numel() == 60 and z.dtype == torch.bfloat16
    copy, add, in_place = 2 * 60 * 2, 2 * 60 * 2, 2 * 60 * 2  # bf16: 2 bytes; each reads 60 and writes 60 elements
    assert moved.bytes == {"matmul_conv": 0, "other": copy + add + in_place}
    assert moved.ops["matmul_conv"] == 0


def test_a_convolution_counts_input_weight_bias_and_output() -> None:
    x, weight, bias = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3), torch.randn(5)
    with FlopCounterMode(display=False) as flops, ByteCounter() as moved:
        out = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    assert out.shape == (2, 5, 8, 8)
    assert moved.bytes["matmul_conv"] == 4 * (x.numel() + weight.numel() + bias.numel() + out.numel())
    assert flops.get_total_flops() == 2 * 2 * 5 * 8 * 8 * 3 * 3 * 3


def test_peaks_by_device_name() -> None:
    h100 = peak_for("NVIDIA H100 80GB HBM3")
    assert (h100["bf16_tflops"], h100["bandwidth_tb_s"]) == (989.4, 3.35)
    h200 = peak_for("NVIDIA H200")
    assert (h200["bf16_tflops"], h200["bandwidth_tb_s"]) == (989.4, 4.8)
    assert peak_for("NVIDIA H100 PCIe")["bandwidth_tb_s"] == 2.0
    assert peak_for(None) is None and peak_for("NVIDIA A100-SXM4-80GB") is None


def test_a_row_turns_counts_and_seconds_into_rates_and_fractions_of_the_peak() -> None:
    config = {"name": "c", "channels": 3, "resolution": 32, "classes": 10, "ipc": 10, "syn_steps": 30, "batch_syn": 100}
    measured = {"s_per_iter": 0.5, "device_ms_per_step": 400.0, "precision": "bf16", "compiled": True,
                "top_kernels": [{"name": "gemm", "ms_per_step": 100.0, "calls_per_step": 60.0}]}
    counted = {"flops": 100e12, "bytes": {"matmul_conv": 0.5e12, "other": 1.5e12, "total": 2e12}}
    row = roofline_row(config, measured, counted, 100e12, peak_for("NVIDIA H200"))
    assert row["batch"] == 100 and row["tflops_per_s"] == pytest.approx(200.0)
    assert row["fraction_of_peak_flops"] == pytest.approx(200.0 / 989.4)
    assert row["intensity_flop_per_byte"] == pytest.approx(50.0)
    assert row["intensity_matmul_conv_flop_per_byte"] == pytest.approx(200.0)
    assert row["fraction_of_peak_bandwidth_unfused"] == pytest.approx(4.0 / 4.8)
    assert row["attainable_tflops_unfused"] == pytest.approx(50.0 * 4.8)
    assert row["top_kernels"] == [{"name": "gemm", "percent": 25.0, "ms_per_iter": 100.0, "calls_per_iter": 60.0}]
    assert row["device_busy_fraction"] == pytest.approx(0.8)
    assert roofline_row(config, measured, counted, None, None)["fraction_of_peak_flops"] is None
    table = markdown_table({"gpu": "NVIDIA H200", "peak": peak_for("NVIDIA H200"), "configs": [row]})
    assert "| c | 0.500 | 100000 | 200.0 | 20.2% |" in table and "| 83% | 80% | `gemm` 25%, 60 |" in table
    ceilings = {"bf16_matmul_tflops": 800.0, "copy_tb_s": 4.0}
    measured_row = roofline_row(config, measured, counted, None, peak_for("NVIDIA H200"), ceilings)
    assert measured_row["fraction_of_measured_matmul"] == pytest.approx(0.25)
    assert measured_row["fraction_of_measured_copy_unfused"] == pytest.approx(1.0)
    table = markdown_table({"gpu": "NVIDIA H200", "peak": peak_for("NVIDIA H200"), "measured_ceilings": ceilings,
                            "configs": [measured_row]})
    assert "20.2% (25.0% of measured)" in table and "measured here: 800 TFLOP/s" in table


def test_files_of_two_device_calls_merge_in_the_reference_order(tmp_path: Path) -> None:
    first = {"command": "one", "revision": "r", "gpu": "NVIDIA H200", "torch": "2", "configs": [{"name": "gzoo2_128_ipc1"}]}
    second = {**first, "command": "two", "configs": [{"name": "cifar10_ipc1"}, {"name": "gzoo2_128_ipc1", "late": 1}]}
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(second))
    record = merged([tmp_path / "a.json", tmp_path / "b.json"])
    assert [row["name"] for row in record["configs"]] == ["cifar10_ipc1", "gzoo2_128_ipc1"]
    assert record["configs"][1]["late"] == 1 and record["configs"][1]["run"]["command"] == "two"
    assert [entry["command"] for entry in record["merged_from"]] == ["one", "two"] and record["gpu"] == "NVIDIA H200"
    (tmp_path / "c.json").write_text(json.dumps({**first, "gpu": "NVIDIA H100 80GB HBM3"}))
    with pytest.raises(SystemExit):
        merged([tmp_path / "a.json", tmp_path / "c.json"])


@pytest.mark.slow
def test_roofline_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "roofline.json"
    command = [sys.executable, str(BENCH / "roofline.py"), "--device", "cpu", "--configs", "cifar10_ipc1",
               "--iterations", "1", "--tiny", "--width", "16", "--out", str(out)]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout
    record = json.loads(out.read_text())
    assert {"command", "revision", "gpu", "torch", "configs"} <= set(record) and record["gpu"] is None
    assert record["settings"] == {"precision": "fp32", "compiled": False, "cuda_graphs": False, "timed_iterations": 1,
                                  "warmup": 2}
    (row,) = record["configs"]
    assert row["name"] == "cifar10_ipc1" and row["syn_steps"] == 2 and row["batch"] == 10 and row["s_per_iter"] > 0
    # The direct count over one iteration equals distill_flops.py's, extended from one image.
    assert row["flops"] == row["flops_extrapolated"] > 0
    moved = row["bytes"]
    assert moved["total"] == moved["matmul_conv"] + moved["other"] and moved["matmul_conv"] > 0 and moved["other"] > 0
    assert row["intensity_flop_per_byte"] == pytest.approx(row["flops"] / moved["total"])
    assert row["fraction_of_peak_flops"] is None and row["fraction_of_peak_bandwidth_unfused"] is None
    assert row["gpu"] is None and row["wall_s"] > 0
    assert len(row["top_kernels"]) == 3 and all(kernel["calls_per_iter"] > 0 for kernel in row["top_kernels"])
    assert 0 < sum(kernel["percent"] for kernel in row["top_kernels"]) <= 100
    assert "| cifar10_ipc1 |" in printed
    table = subprocess.run([sys.executable, str(BENCH / "roofline.py"), "--table", str(out)], capture_output=True,
                           text=True, check=True, timeout=60).stdout
    assert table.splitlines()[2].startswith("| config | s/it | GFLOP/it |") and "| cifar10_ipc1 |" in table


def test_failed_configs_keep_their_row_and_a_timing_without_counts_is_kept() -> None:
    table = markdown_table({"gpu": "NVIDIA H200", "peak": peak_for("NVIDIA H200"), "configs": [
        {"name": "x", "s_per_iter": None, "note": "failed: CUDA out of memory"},
        {"name": "y", "s_per_iter": 0.5, "note": "counting failed: CUDA out of memory"}]})
    assert "| x | — | failed: CUDA out of memory |" in table and "| y | 0.500 | counting failed: CUDA" in table
    assert all(line.count("|") == 11 for line in table.splitlines() if line.startswith("| x") or line.startswith("| y"))


def test_the_ceilings_are_a_matrix_products_rate_and_a_copys_bytes_read_and_written(monkeypatch) -> None:
    """CUDA events stood in for by the wall clock, so that the arithmetic runs on the CPU."""
    import time

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            self.at = 0.0

        def record(self) -> None:
            self.at = time.perf_counter()

        def elapsed_time(self, end: "Event") -> float:
            return (end.at - self.at) * 1000

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    ceilings = measured_ceilings(torch.device("cpu"), size=64, copy_gib=1 / 1024, repeats=2)
    assert ceilings["bf16_matmul_tflops"] > 0 and ceilings["copy_tb_s"] > 0
    assert (ceilings["matmul_size"], ceilings["copy_gib"]) == (64, 1 / 1024)
