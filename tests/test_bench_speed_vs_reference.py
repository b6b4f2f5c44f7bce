"""bench/speed_vs_reference.py on the CPU: the issue's schema, the clear failure without the reference's code, the
whole call with a stand-in for the reference's modules (the wiring: the peer harness run as a child, its rows merged
with ours), and with the reference's own modules where they have been copied in (skipped otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from speed_vs_reference import find_peer, markdown_table, missing_reference, row_for  # noqa: E402

SCRIPT = BENCH / "speed_vs_reference.py"
PEER = find_peer(None)
REFERENCE_DIR = Path(os.environ.get("MTT_REFERENCE_DIR", BENCH.parent / ".peer" / "mtt"))
SCHEMA = {"name", "s_per_iter", "peak_mem_gib", "ref_s_per_iter", "ref_peak_mem_gib", "gpu"}

STAND_IN = {
    "networks.py": "",
    "reparam_module.py": textwrap.dedent('''
        import torch


        class ReparamModule(torch.nn.Module):
            """Stand-in: the module's parameters as one flat vector, as the reference's forward(x, flat_param=...)."""

            def __init__(self, module):
                super().__init__()
                self.module = module
                self.names = [name for name, _ in module.named_parameters()]
                self.shapes = [p.shape for p in module.parameters()]
                self.flat_param = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in module.parameters()]))

            def forward(self, x, flat_param=None):
                flat = self.flat_param if flat_param is None else flat_param
                pieces = flat.split([s.numel() for s in self.shapes])
                params = {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes)}
                return torch.func.functional_call(self.module, params, (x,))
        '''),
    "utils.py": textwrap.dedent('''
        import torch


        class ParamDiffAug:
            pass


        def DiffAugment(x, strategy="", seed=-1, param=None):
            return x


        def get_network(model, channel, num_classes, im_size=(32, 32), dist=True):
            side = im_size[0] // 2
            return torch.nn.Sequential(torch.nn.Conv2d(channel, 8, 3, padding=1), torch.nn.GroupNorm(8, 8),
                                       torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                       torch.nn.Linear(8 * side * side, num_classes))
        '''),
}
"""Not the reference's code: the three names peer_speed.py takes from its modules, small, to test the wiring."""


def test_a_row_has_the_issue_schema_and_the_ratios() -> None:
    ours = {"s_per_iter": 0.1, "peak_mem_gib": 1.0, "times": [0.1], "compiled": True}
    reference = {"config": "c", "s_per_iter_median": 0.6, "peak_mem_gib": 8.0, "gpu": "NVIDIA H200", "times": [0.6]}
    row = row_for("c", ours, reference, "NVIDIA H200")
    assert SCHEMA <= set(row) and (row["s_per_iter"], row["ref_s_per_iter"], row["ref_peak_mem_gib"]) == (0.1, 0.6, 8.0)
    assert row["speedup"] == pytest.approx(6.0) and row["memory_ratio"] == pytest.approx(0.125) and "note" not in row
    assert row["ours"]["times"] == [0.1] and row["reference"]["times"] == [0.6]
    failed = row_for("d", {"s_per_iter": None, "peak_mem_gib": None}, {"s_per_iter_median": None, "peak_mem_gib": None,
                                                                       "error": "OutOfMemoryError"}, "NVIDIA H200")
    assert "speedup" not in failed and failed["reference"]["error"] == "OutOfMemoryError"
    table = markdown_table({"gpu": "NVIDIA H200", "torch": "2", "revision": "abc", "settings": {"way": "bf16, compiled"},
                            "configs": [row, failed]})
    assert "| c | 0.100 | 0.600 | 6.00x | 1.00 | 8.00 | 0.125 |" in table
    assert "| d | — | out of memory | — | — | — | — |" in table


def test_without_the_reference_code_it_stops_and_says_what_to_copy(tmp_path: Path) -> None:
    if PEER is None:
        pytest.skip("no peer harness (../shared/peer/peer_speed.py) beside this checkout")
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--configs", "cifar10_ipc1",
                           "--reference-dir", str(tmp_path), "--out", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "networks.py, reparam_module.py, utils.py" in done.stderr
    assert not (tmp_path / "s.json").exists()


def _run_tiny(reference_dir: Path, out: Path, *more: str) -> dict:
    subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--timed", "1", "--configs", "cifar10_ipc1",
                    "--reference-dir", str(reference_dir), "--out", str(out), *more], check=True, timeout=600,
                   env={**os.environ, "MTT_REFERENCE_DIR": str(reference_dir)})
    return json.loads(out.read_text())


def _stand_in(tmp_path: Path) -> Path:
    stand_in = tmp_path / "stand_in"
    stand_in.mkdir()
    for name, text in STAND_IN.items():
        (stand_in / name).write_text(text)
    return stand_in


@pytest.mark.slow
def test_both_loops_in_one_call_with_a_stand_in_reference(tmp_path: Path) -> None:
    if PEER is None:
        pytest.skip("no peer harness (../shared/peer/peer_speed.py) beside this checkout")
    record = _run_tiny(_stand_in(tmp_path), tmp_path / "speed.json")
    (row,) = record["configs"]
    assert SCHEMA <= set(row) and row["name"] == "cifar10_ipc1" and row["gpu"] is None and record["tiny"]
    assert row["s_per_iter"] > 0 and row["ref_s_per_iter"] > 0 and row["speedup"] > 0
    assert row["reference"]["syn_steps"] == 2 and row["reference"]["ipc"] == 1 and row["reference"]["device"] == "cpu"
    assert {"command", "revision", "gpu", "torch", "configs"} <= set(record)


def test_ours_can_come_from_an_earlier_file_of_the_same_gpu(tmp_path: Path) -> None:
    if PEER is None:
        pytest.skip("no peer harness (../shared/peer/peer_speed.py) beside this checkout")
    earlier = {"command": "python bench/roofline.py", "revision": "abc", "gpu": None, "torch": "2",
               "configs": [{"name": "cifar10_ipc1", "s_per_iter": 0.25, "peak_mem_gib": None, "precision": "bf16",
                            "compiled": True, "top_kernels": [{"name": "k"}]}]}
    (tmp_path / "roofline.json").write_text(json.dumps(earlier))
    record = _run_tiny(_stand_in(tmp_path), tmp_path / "speed.json", "--ours", str(tmp_path / "roofline.json"))
    (row,) = record["configs"]
    assert row["s_per_iter"] == 0.25 and row["ref_s_per_iter"] > 0 and "top_kernels" not in row["ours"]
    assert record["ours_from"][0]["revision"] == "abc" and record["settings"]["way"] == "bf16, compiled"
    (tmp_path / "h200.json").write_text(json.dumps({**earlier, "gpu": "NVIDIA H200"}))
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--configs", "cifar10_ipc1",
                           "--reference-dir", str(tmp_path / "stand_in"), "--ours", str(tmp_path / "h200.json"),
                           "--out", str(tmp_path / "other.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "time ours again" in done.stderr and not (tmp_path / "other.json").exists()


def test_files_of_one_device_call_merge_without_a_gpu(tmp_path: Path) -> None:
    """The device call ran peer_speed.py and roofline.py; the issue's file is made from their outputs here."""
    ours = {"command": "python3 bench/roofline.py", "revision": "abc", "gpu": "NVIDIA H200", "torch": "2.11",
            "configs": [{"name": "cifar10_ipc1", "s_per_iter": 0.05, "peak_mem_gib": 0.5, "precision": "bf16",
                         "compiled": True}]}
    more = {**ours, "configs": [{"name": "gzoo2_128_ipc50", "s_per_iter": 2.5, "peak_mem_gib": 5.0, "precision": "bf16",
                                 "compiled": True}]}
    (tmp_path / "a.json").write_text(json.dumps(ours))
    (tmp_path / "b.json").write_text(json.dumps(more))
    lines = [{"config": "cifar10_ipc1", "s_per_iter_median": 0.6, "peak_mem_gib": 1.6, "gpu": "NVIDIA H200",
              "reference_revision": "50dccea"},
             {"config": "gzoo2_128_ipc50", "s_per_iter_median": None, "peak_mem_gib": None, "gpu": "NVIDIA H200",
              "error": "OutOfMemoryError('CUDA out of memory')"}]
    (tmp_path / "peer.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, str(SCRIPT), "--configs", "cifar10_ipc1", "gzoo2_128_ipc50", "--ours",
                    str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--reference-rows", str(tmp_path / "peer.jsonl"),
                    "--out", str(out)], check=True, timeout=120, capture_output=True)
    record = json.loads(out.read_text())
    first, last = record["configs"]
    assert record["gpu"] == "NVIDIA H200" and record["reference_revision"] == "50dccea" and len(record["ours_from"]) == 2
    assert (first["name"], first["gpu"], first["speedup"]) == ("cifar10_ipc1", "NVIDIA H200", pytest.approx(12.0))
    assert last["s_per_iter"] == 2.5 and last["ref_s_per_iter"] is None and "speedup" not in last
    assert record["settings"]["way"] == "bf16, compiled"
    table = subprocess.run([sys.executable, str(SCRIPT), "--table", str(out)], check=True, capture_output=True,
                           text=True, timeout=60).stdout
    assert "| gzoo2_128_ipc50 | 2.500 | out of memory |" in table


@pytest.mark.skipif(PEER is None or bool(missing_reference(REFERENCE_DIR)),
                    reason=f"the reference MTT code (networks.py, reparam_module.py, utils.py of "
                           f"GeorgeCazenavette/mtt-distillation) is not in {REFERENCE_DIR} (or $MTT_REFERENCE_DIR), or "
                           f"../shared/peer is absent: copy them in as ../shared/peer/README.md says to run this")
def test_both_loops_in_one_call_with_the_reference_code(tmp_path: Path) -> None:
    record = _run_tiny(REFERENCE_DIR, tmp_path / "speed.json")
    (row,) = record["configs"]
    assert SCHEMA <= set(row) and row["s_per_iter"] > 0 and row["ref_s_per_iter"] > 0
    assert row["reference"]["num_params"] > 0 and row["reference"]["depth"] == 3
