"""Several processes through torch.distributed (gloo on CPU) give the results of one process.

Tiny real data: gz1-sdss at 16 px, 12 images per class. Two-process runs go through the CLI's
--nproc (torchrun); the one-process runs they are compared with run in this process. Every
process computes with one thread, so both do the same floating-point operations per row.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed
import torch.multiprocessing
from safetensors.torch import load_file
from shared_paths import GZ1_ROOT
from test_matching import tiny_problem
from typer.testing import CliRunner

from galaxy_distill import cli
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.data.registry import prepare
from galaxy_distill.distributed import Shard
from galaxy_distill.experts import ExpertSettings, ExpertStore, train_experts
from galaxy_distill.experts.store import MANIFEST_FILE
from galaxy_distill.runtime import seeded_generator

EXPERTS = {"dataset": "gz1-sdss", "width": 8, "depth": 2, "epochs": 3, "batch_size": 16, "num_experts": 5, "parallel": 2,
           "device": "cpu"}
EXPERT_ARGS = [text for key, value in EXPERTS.items() for text in (f"--{key.replace('_', '-')}", str(value))]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def in_two_processes(args: list[str], home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`galaxy-distill ARGS --nproc 2` in a fresh process, in workspace `home`, one thread per process."""
    environment = {key: value for key, value in os.environ.items() if key != "GALAXY_DISTILL_DATA"}
    environment.update(GALAXY_DISTILL_HOME=str(home), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "galaxy_distill.cli", *args, "--nproc", "2"], env=environment,
                            capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def in_one_process(args: list[str], home: Path) -> str:
    """`galaxy-distill ARGS` in this process (one thread); its standard output."""
    with one_thread():
        result = CliRunner().invoke(cli.app, args, env={"GALAXY_DISTILL_HOME": str(home), "GALAXY_DISTILL_DATA": None})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared tiny gz1-sdss and a 5-expert store (ids 0-4 in 3 groups) trained by one process."""
    home = tmp_path_factory.mktemp("distributed")
    dataset = prepare(PrepareSettings(dataset="gz1-sdss", root=GZ1_ROOT, size=16, per_class=12),
                      out_dir=home / "datasets" / "gz1-sdss")
    with one_thread():
        train_experts(ExpertSettings(**EXPERTS), dataset, home / "experts-1")
    return home


def _sharded_worker(rank: int, size: int, store: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        # A batch that splits evenly, and an uneven one cut further into chunks.
        for batch, chunk in ((6, None), (5, 2)):
            inner, images, labels, start, target = tiny_problem(batch=batch, chunk_size=chunk)
            alpha = torch.tensor(0.05, dtype=torch.float64)
            alone = inner.loss_and_gradients(images, labels, alpha, start, target, seeded_generator(7))
            sharded_inner = dataclasses.replace(inner, shard=Shard(rank, size))
            shared = sharded_inner.loss_and_gradients(images, labels, alpha, start, target, seeded_generator(7))
            torch.testing.assert_close(shared.loss, alone.loss, rtol=1e-12, atol=0)
            torch.testing.assert_close(shared.images, alone.images, rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(shared.step_size, alone.step_size, rtol=1e-10, atol=1e-14)
            probe = sharded_inner.probe_loss(images, labels, alpha, start, target, seeded_generator(8))
            torch.testing.assert_close(probe, inner.probe_loss(images, labels, alpha, start, target, seeded_generator(8)),
                                       rtol=1e-12, atol=0)
    finally:
        torch.distributed.destroy_process_group()


def test_sharded_inner_loop_equals_one_process(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_sharded_worker, args=(2, str(tmp_path / "rendezvous")), nprocs=2)


def test_experts_in_two_processes_make_the_same_store_and_resume(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "experts-2"
    in_two_processes(["experts", *EXPERT_ARGS, "--out", str(out)], workspace)
    alone = ExpertStore(workspace / "experts-1")
    shared = ExpertStore(out)
    assert [entry["id"] for entry in shared.experts] == [0, 1, 2, 3, 4]
    assert [entry["sha256"] for entry in shared.experts] == [entry["sha256"] for entry in alone.experts]
    assert sorted(path.name for path in out.iterdir()) == sorted([MANIFEST_FILE, *(entry["file"] for entry in alone.experts)])

    (out / "expert_0003.safetensors").unlink()
    resumed = in_two_processes(["experts", *EXPERT_ARGS, "--out", str(out)], workspace)
    assert resumed.stderr.count("training expert 3 again") == 1  # rank 0 alone warns
    assert [entry["sha256"] for entry in ExpertStore(out).experts] == [entry["sha256"] for entry in alone.experts]


def test_distill_in_two_processes_gives_the_same_images(workspace: Path, tmp_path: Path) -> None:
    settings = ["distill", "--dataset", "gz1-sdss", "--experts", str(workspace / "experts-1"), "--method", "mtt",
                "--ipc", "2", "--syn-steps", "3", "--max-start-epoch", "2", "--iterations", "3", "--batch-syn", "5",
                "--eval-every", "2", "--eval-networks", "3", "--eval-epochs", "2", "--checkpoint-every", "2", "--device", "cpu"]
    runs = {nproc: tmp_path / f"run-{nproc}" for nproc in (1, 2)}
    in_one_process([*settings, "--out", str(runs[1])], workspace)
    assert in_two_processes([*settings, "--out", str(runs[2])], workspace).stdout.count("distilled 3 iterations") == 1
    alone, shared = (load_file(run / "synthetic.safetensors") for run in runs.values())
    torch.testing.assert_close(shared["images"], alone["images"], rtol=1e-4, atol=1e-4)
    assert torch.equal(shared["labels"], alone["labels"])
    torch.testing.assert_close(shared["step_size"], alone["step_size"], rtol=1e-5, atol=0)
    assert sorted(path.name for path in runs[2].rglob("*")) == sorted(path.name for path in runs[1].rglob("*"))
    rows = {nproc: list(csv.DictReader((run / "metrics.csv").open())) for nproc, run in runs.items()}
    for row_alone, row_shared in zip(rows[1], rows[2], strict=True):
        assert float(row_shared["loss"]) == pytest.approx(float(row_alone["loss"]), rel=1e-5)
        for column in ("val_accuracy", "test_accuracy"):
            assert row_shared[column] == row_alone[column]


def test_evaluate_in_two_processes_gives_the_same_accuracies(workspace: Path, tmp_path: Path) -> None:
    settings = ["evaluate", "--dataset", "gz1-sdss", "--baselines", "random", "--baselines", "class_average", "--ipc", "2",
                "--networks", "3", "--epochs", "4", "--split", "val", "--device", "cpu"]
    outputs = {nproc: tmp_path / f"evaluation-{nproc}.json" for nproc in (1, 2)}
    in_one_process([*settings, "--out", str(outputs[1])], workspace)
    in_two_processes([*settings, "--out", str(outputs[2])], workspace)
    results = {nproc: json.loads(out.read_text())["results"] for nproc, out in outputs.items()}
    for alone, shared in zip(results[1], results[2], strict=True):
        assert shared["method"] == alone["method"]
        assert shared["accuracies"] == alone["accuracies"]
        assert shared["confusion"] == alone["confusion"]


def test_a_bad_setting_in_two_processes_is_a_one_line_error(workspace: Path) -> None:
    result = in_two_processes(["evaluate", "--baselines", "random", "--ipc", "1", "--device", "cpu"], workspace, check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and set(lines) == {"error: evaluate needs --dataset (or a --run that names it)"}
