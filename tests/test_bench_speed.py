"""bench/distill_speed.py and distill_flops.py on the CPU: a tiny config's timings, loss and kernel list, the record
written, and the FLOP counts."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from distill_flops import counted_flops, flops_per_iteration  # noqa: E402
from distill_speed import chunk_for, measure, write_record  # noqa: E402

from galaxy_distill.atomic_io import read_json  # noqa: E402


def test_measure_times_outer_iterations_and_lists_the_largest_operators() -> None:
    config = {"channels": 3, "resolution": 16, "classes": 2, "ipc": 2, "syn_steps": 2, "batch_syn": 4}
    measured = measure(config, timed=2, device=torch.device("cpu"), chunk=None, cuda_graphs=False,
                       network={"depth": 2, "width": 8, "norm": "instancenorm"}, kernels=3)
    assert len(measured["times"]) == 2 and measured["s_per_iter"] > 0
    assert measured["loss_last"] > 0 and not measured["cuda_graphs"] and measured["peak_mem_gib"] is None
    assert len(measured["top_kernels"]) == 3
    assert all(kernel["ms_per_step"] >= 0 and kernel["calls_per_step"] > 0 for kernel in measured["top_kernels"])
    assert measured["device_ms_per_step"] >= sum(kernel["ms_per_step"] for kernel in measured["top_kernels"])


def test_measure_lists_the_convolutions_by_operand_shapes() -> None:
    config = {"channels": 3, "resolution": 16, "classes": 2, "ipc": 2, "syn_steps": 2, "batch_syn": 4}
    measured = measure(config, timed=1, device=torch.device("cpu"), chunk=None, cuda_graphs=False,
                       network={"depth": 2, "width": 8, "norm": "instancenorm"}, convolution_shapes=20)
    convolutions = measured["convolution_shapes"]
    assert {convolution["op"] for convolution in convolutions} == {"aten::convolution", "aten::convolution_backward"}
    assert all(convolution["ms_per_step"] >= 0 and convolution["calls_per_step"] > 0 for convolution in convolutions)
    times = [convolution["ms_per_step"] for convolution in convolutions]
    assert times == sorted(times, reverse=True)
    # The image-facing convolution of a batch of 4 (3 channels in, 8 out), and the second one (8 in and out).
    forward_shapes = [convolution["shapes"][:2] for convolution in convolutions if convolution["op"] == "aten::convolution"]
    assert [[4, 3, 16, 16], [8, 3, 3, 3]] in forward_shapes and [[4, 8, 8, 8], [8, 8, 3, 3]] in forward_shapes


def test_the_record_keeps_the_reference_order_whatever_order_configs_were_measured_in(tmp_path: Path) -> None:
    out = tmp_path / "distill_speed.json"
    write_record(out, {"gpu": "G"}, [{"name": "b"}, {"name": "a"}], order=["a", "b", "c"], cuda_graphs=True)
    record = read_json(out)
    assert [row["name"] for row in record["configs"]] == ["a", "b"] and record["gpu"] == "G" and record["cuda_graphs"]


def test_flops_extended_from_one_and_two_steps_equal_a_direct_count() -> None:
    """MTT's unrolled first step is cheaper than the later ones, ours are all alike; both are linear in the batch."""
    network = {"depth": 2, "width": 8, "norm": "instancenorm"}
    direct = counted_flops(3, 16, 3, steps=4, batch=3, network=network)
    extended = flops_per_iteration(3, 16, 3, steps=4, batch=3, network=network)
    assert extended == direct
    assert direct["ours"] > direct["unrolled"] > 0


def test_inner_batches_are_chunked_above_the_pixel_budget_only() -> None:
    galaxies = {"batch_syn": 90, "resolution": 128}
    assert chunk_for(galaxies) is None and chunk_for({"batch_syn": 450, "resolution": 128}) == 128
    assert chunk_for(galaxies, budget=1000 * 32 * 32) == 62 and chunk_for(galaxies, budget=0) is None
    assert chunk_for({"batch_syn": 100, "resolution": 32}) is None
